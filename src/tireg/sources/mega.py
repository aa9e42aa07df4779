"""MEGA public links: parse every link form, speak MEGA's JSON API, decrypt and verify files.

MEGA stores files encrypted; the key travels in the link's ``#fragment`` and never reaches the
server. A file link's key is 8 big-endian 32-bit words ``K``: the AES-128 key is
``K[0:4] xor K[4:8]``, the CTR nonce is ``K[4:6]``, and ``K[6:8]`` is the *meta-MAC*, a condensed
CBC-MAC of the plaintext. Checking that MAC is the only integrity check MEGA offers, so every
byte we keep has passed it. Folder links carry a 128-bit folder key that decrypts each node's key
(AES-ECB); node names live in encrypted attributes (AES-CBC, zero IV, ``MEGA{json}``).

Everything the server sends is attacker-controlled. Handles must have MEGA's form (8 base64url
characters for a node, 11 for a user) before any use, and are never part of a path; names from
attributes are reduced to safe file names (:func:`tireg.paths.safe_part`) and every path, in the
cache and in the destination, is proven to stay inside its folder (:func:`tireg.paths.join_under`)
before anything is created there. The API base URL comes from ``TIREG_MEGA_API`` so tests can
serve a stand-in on 127.0.0.1. Decrypted files are kept in ``cache_dir()/mega`` so a re-sync
(and offline mode, ``TIREG_OFFLINE=1``) needs no second download from a quota-metered host.

All crypto is from ``cryptography``; the unmaintained ``mega.py`` package is not used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tireg import config
from tireg.files import MAX_FILE_BYTES, atomic_write_bytes, atomic_writer, sha256_file
from tireg.paths import UnsafePathError, join_under, safe_part
from tireg.progress import DownloadProgress
from tireg.sources import Fetched, SourceError
from tireg.sources.http import (
    RETRY_STATUSES,
    HttpStatusError,
    RetryPolicy,
    download,
    http_session,
)

DEFAULT_API = "https://g.api.mega.co.nz"
API_ENV = "TIREG_MEGA_API"
#: files a folder link contributes (single-file links are fetched whatever their name)
FOLDER_SUFFIXES = (".pt", ".bin", ".safetensors", ".png", ".webp")
API_TIMEOUT_S = 30.0

#: names for nodes whose attributes give none that is usable (never the handle: see above)
UNNAMED_FILE, UNNAMED_FOLDER = "download", "unnamed"

MEGA_HOSTS = ("mega.nz", "mega.co.nz", "www.mega.nz", "www.mega.co.nz", "mega.io")


# ---------------------------------------------------------------------------------------------
# errors: MEGA's codes in plain words


class MegaError(SourceError):
    """MEGA refused or failed; ``code`` is MEGA's negative error number (or the HTTP status)."""

    code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.code = code


class MegaLinkError(MegaError):
    """The link is malformed, or its key does not open what it points to."""


class MegaGoneError(MegaError):
    """The file or folder no longer exists (-9 ENOENT; -21 EREAD): the link is dead for good."""


class MegaTakenDownError(MegaError):
    """MEGA blocked the link (-16 EBLOCKED), usually after a takedown notice."""


class MegaRetryLaterError(MegaError):
    """A temporary condition (-3 EAGAIN, -18 ETEMPUNAVAIL, rate limits) outlived our retries."""


class MegaQuotaError(MegaError):
    """The transfer quota is used up (HTTP 509, -17, -24); it refills over hours. Not a bad link."""


class MegaIntegrityError(MegaError):
    """The decrypted bytes do not match the link's MAC: corrupted or tampered in transit."""


_GONE = {-9: "ENOENT", -21: "EREAD"}
_RETRY = {
    -3: "EAGAIN",
    -4: "ERATELIMIT",
    -6: "ETOOMANY",
    -18: "ETEMPUNAVAIL",
    -19: "ETOOMANYCONNECTIONS",
    -13: "EINCOMPLETE",
    -1: "EINTERNAL",
}
_QUOTA = {-17: "EOVERQUOTA", -24: "EGOINGOVERQUOTA"}
_NAMES = {
    -2: "EARGS",
    -11: "EACCESS",
    -14: "EKEY",
    -15: "ESID",
    -16: "EBLOCKED",
    **_GONE,
    **_RETRY,
    **_QUOTA,
}

OFFLINE_HINT = "unset TIREG_OFFLINE to download; only links fetched before work offline"
QUOTA_HINT = (
    "MEGA meters anonymous transfers per IP address and refills the quota over a few "
    "hours; retry later (the link itself is fine)"
)


def error_for(code: int, *, what: str) -> MegaError:
    """The exception for MEGA error ``code`` met while fetching ``what`` (a link or file)."""
    tag = f"MEGA {code} {_NAMES.get(code, 'error')}"
    if code in _GONE:
        return MegaGoneError(
            f"gone: MEGA says this file or folder no longer exists ({tag})",
            code=code,
            path=what,
            hint="the link was deleted or is mistyped",
        )
    if code == -16:
        return MegaTakenDownError(
            f"taken down: MEGA has blocked this link ({tag})",
            code=code,
            path=what,
            hint="usually a copyright or terms-of-service takedown",
        )
    if code in _QUOTA:
        return MegaQuotaError(
            f"transfer quota exhausted ({tag})", code=code, path=what, hint=QUOTA_HINT
        )
    if code in _RETRY:
        return MegaRetryLaterError(
            f"MEGA is temporarily unavailable ({tag})",
            code=code,
            path=what,
            hint="retry in a few minutes",
        )
    if code in (-2, -14):
        return MegaLinkError(
            f"MEGA rejected the link's handle or key ({tag})",
            code=code,
            path=what,
            hint="check that the whole link, including '#...', was copied",
        )
    return MegaError(f"MEGA refused the request ({tag})", code=code, path=what)


# ---------------------------------------------------------------------------------------------
# links


@dataclass(frozen=True)
class MegaLink:
    """A parsed MEGA link. ``key`` is the raw key (32 bytes for files, 16 for folders);
    ``inner_kind``/``inner_handle`` narrow a folder link to one subfolder or file."""

    kind: str  # "file" | "folder"
    handle: str
    key: bytes
    inner_kind: str | None = None  # "file" | "folder"
    inner_handle: str | None = None

    @property
    def url(self) -> str:
        """The canonical modern form of the link (``https://mega.nz/...``)."""
        text = f"https://mega.nz/{self.kind}/{self.handle}#{b64url_encode(self.key)}"
        if self.inner_kind:
            text += f"/{self.inner_kind}/{self.inner_handle}"
        return text


_HANDLE = r"[A-Za-z0-9_-]{8}"
#: MEGA's handles are base64url: 6 bytes for a node (8 characters), 8 for a user (11)
_NODE_HANDLE = re.compile(rf"^{_HANDLE}$")
_NODE_OR_USER_HANDLE = re.compile(r"^(?:[A-Za-z0-9_-]{8}|[A-Za-z0-9_-]{11})$")
_KEY = r"[A-Za-z0-9_,-]{16,64}"
_MODERN = re.compile(rf"^/(file|folder)/({_HANDLE})$")
_LEGACY = re.compile(rf"^(F?)!({_HANDLE})!({_KEY})$")
_FRAGMENT = re.compile(rf"^({_KEY})(?:/(file|folder)/({_HANDLE}))?$")


def is_mega_link(url: str) -> bool:
    """True for any ``mega.nz`` / ``mega.co.nz`` URL (well-formed or not)."""
    host = (urlsplit(url.strip()).hostname or "").lower()
    return host in MEGA_HOSTS


def parse_link(url: str) -> MegaLink:
    """Parse every MEGA link form: ``/file/H#K``, ``/#!H!K``, ``/folder/H#K``, ``/#F!H!K``,
    ``/folder/H#K/file/N``, ``/folder/H#K/folder/N``, on mega.nz or mega.co.nz."""
    text = url.strip()
    if not is_mega_link(text):
        raise MegaLinkError("not a MEGA link", path=url)
    parts = urlsplit(text)
    legacy = _LEGACY.match(parts.fragment)
    if legacy and parts.path in ("", "/"):
        kind, handle, key_text = ("folder" if legacy[1] else "file"), legacy[2], legacy[3]
        inner_kind = inner_handle = None
    else:
        modern, fragment = _MODERN.match(parts.path), _FRAGMENT.match(parts.fragment)
        if not modern or not fragment:
            raise MegaLinkError(
                "unrecognised MEGA link (expected mega.nz/file/H#KEY or mega.nz/folder/H#KEY)",
                path=url,
                hint="copy the whole link including the part after '#'",
            )
        kind, handle = modern[1], modern[2]
        key_text, inner_kind, inner_handle = fragment[1], fragment[2], fragment[3]
        if inner_kind and kind != "folder":
            raise MegaLinkError("only folder links can point inside themselves", path=url)
    key = b64url_decode(key_text.replace(",", ""))
    want = 32 if kind == "file" else 16
    if len(key) != want:
        raise MegaLinkError(
            f"the link's key is {len(key)} bytes, a {kind} key is {want}",
            path=url,
            hint="the link was probably cut short",
        )
    return MegaLink(kind, handle, key, inner_kind, inner_handle)


# ---------------------------------------------------------------------------------------------
# encodings and crypto primitives


def b64url_decode(text: str) -> bytes:
    """MEGA's base64: URL alphabet, no padding."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise MegaLinkError(f"bad base64 in MEGA data: {exc}") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def bytes_to_a32(data: bytes) -> tuple[int, ...]:
    """Big-endian 32-bit words, zero-padding to a multiple of 4 (MEGA's "a32" arrays)."""
    data += b"\0" * (-len(data) % 4)
    return struct.unpack(f">{len(data) // 4}I", data)


def a32_to_bytes(words: tuple[int, ...] | list[int]) -> bytes:
    return struct.pack(f">{len(words)}I", *words)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def aes_ecb_decrypt(data: bytes, key: bytes) -> bytes:
    """Decrypt a node key with the folder key (MEGA's ``decrypt_key``)."""
    if len(data) % 16:
        raise MegaLinkError("a MEGA node key is not a whole number of AES blocks")
    d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # noqa: S305 - MEGA's key wrapping
    return d.update(data) + d.finalize()


def split_file_key(file_key: bytes) -> tuple[bytes, bytes, bytes]:
    """(AES key, 8-byte CTR nonce, 8-byte expected meta-MAC) from a 32-byte file key."""
    if len(file_key) != 32:
        raise MegaLinkError(f"a MEGA file key has 32 bytes, not {len(file_key)}")
    return _xor(file_key[:16], file_key[16:]), file_key[16:24], file_key[24:32]


def decrypt_attributes(data: bytes, key: bytes) -> dict[str, Any]:
    """Decrypt ``at``/``a`` (AES-CBC, zero IV); a wrong key fails the ``MEGA{`` check."""
    if not data or len(data) % 16:
        raise MegaLinkError("MEGA attributes are not whole AES blocks", hint="wrong key?")
    d = Cipher(algorithms.AES(key), modes.CBC(b"\0" * 16)).decryptor()
    text = (d.update(data) + d.finalize()).rstrip(b"\0")
    if not text.startswith(b'MEGA{"'):
        raise MegaLinkError(
            "the link's key does not decrypt the file's attributes",
            hint="the key part after '#' is wrong or incomplete",
        )
    try:
        attrs = json.loads(text[4:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MegaLinkError("MEGA attributes are not valid JSON") from None
    if not isinstance(attrs, dict):
        raise MegaLinkError("MEGA attributes are not a JSON object")
    return attrs


def mac_chunks(size: int) -> Iterator[int]:
    """MEGA's CBC-MAC chunk sizes: 128 KiB, 256 KiB, ... up to 1 MiB, then 1 MiB each."""
    step, done = 0x20000, 0
    while done < size:
        length = min(step, size - done)
        yield length
        done += length
        step = min(step + 0x20000, 0x100000)


class Decryptor:
    """Streaming AES-CTR decryption plus MEGA's chunked CBC-MAC of the plaintext.

    Feed ciphertext in any pieces with :meth:`update` (plaintext comes back), then call
    :meth:`verify`. Memory stays constant: the per-chunk CBC encryptors buffer at most one block.
    """

    def __init__(self, file_key: bytes, size: int) -> None:
        self._key, nonce, self._expected = split_file_key(file_key)
        self._ctr = Cipher(algorithms.AES(self._key), modes.CTR(nonce + b"\0" * 8)).decryptor()
        self._mac_iv = nonce + nonce
        self._meta = Cipher(algorithms.AES(self._key), modes.CBC(b"\0" * 16)).encryptor()
        self._file_mac = b"\0" * 16
        self._sizes = mac_chunks(size)
        self._left = 0
        self._fed = 0  # bytes fed to the current chunk's MAC
        self._chunk: Any = None
        self._last = b""
        self._size, self._seen = size, 0

    def _start_chunk(self) -> None:
        self._left = next(self._sizes, 0)
        self._fed = 0
        self._chunk = Cipher(algorithms.AES(self._key), modes.CBC(self._mac_iv)).encryptor()

    def _end_chunk(self) -> None:
        pad = -self._fed % 16
        out = self._chunk.update(b"\0" * pad) if pad else b""
        chunk_mac = (out or self._last)[-16:]
        self._file_mac = self._meta.update(chunk_mac)
        self._chunk, self._last = None, b""

    def update(self, ciphertext: bytes) -> bytes:
        plain = self._ctr.update(ciphertext)
        self._seen += len(plain)
        if self._seen > self._size:
            raise MegaIntegrityError(f"MEGA served more than the announced {self._size} bytes")
        view = memoryview(plain)
        while view:
            if self._chunk is None:
                self._start_chunk()
            piece, view = view[: self._left], view[self._left :]
            out = self._chunk.update(piece)
            if out:
                self._last = out[-16:]
            self._fed += len(piece)
            self._left -= len(piece)
            if self._left == 0:
                self._end_chunk()
        return plain

    def verify(self, *, what: str) -> None:
        """Raise :class:`MegaIntegrityError` unless the whole file arrived and its MAC matches."""
        if self._seen != self._size:
            raise MegaIntegrityError(
                f"MEGA sent {self._seen} of {self._size} bytes",
                path=what,
                hint="retry the download",
            )
        mac = self._file_mac
        condensed = _xor(mac[0:4], mac[4:8]) + _xor(mac[8:12], mac[12:16])
        if not secrets.compare_digest(condensed, self._expected):
            raise MegaIntegrityError(
                "MAC mismatch: the decrypted file does not match the link's checksum",
                path=what,
                hint="the download was corrupted or tampered with; nothing was kept",
            )


# ---------------------------------------------------------------------------------------------
# the API


def api_url() -> str:
    return os.environ.get(API_ENV, DEFAULT_API).rstrip("/")


class MegaClient:
    """MEGA's JSON-RPC: ``POST {api}/cs?id=SEQ[&n=FOLDER]`` with a one-command array body.

    Temporary errors (EAGAIN, ETEMPUNAVAIL, HTTP 429/5xx, time-outs) are retried with the same
    bounded exponential backoff as every download (:class:`tireg.sources.http.RetryPolicy`);
    everything else becomes a :class:`MegaError` at once.
    """

    def __init__(self, base_url: str | None = None, *, retry: RetryPolicy | None = None) -> None:
        self.base_url = (base_url or api_url()).rstrip("/")
        self.retry = retry or RetryPolicy.from_env()
        self._seq = secrets.randbits(31)

    def call(self, command: dict[str, Any], *, folder: str | None = None, what: str) -> Any:
        """Send one command; return its result or raise the matching :class:`MegaError`."""
        if config.offline():
            raise SourceError("offline: not asking MEGA", path=what, hint=OFFLINE_HINT)
        last_code = -3
        for attempt in range(self.retry.attempts):
            if attempt:
                time.sleep(self.retry.delay(attempt - 1))
            self._seq += 1
            params = {"id": str(self._seq)}
            if folder:
                params["n"] = folder
            try:
                resp = http_session().post(
                    f"{self.base_url}/cs", params=params, json=[command], timeout=API_TIMEOUT_S
                )
            except (requests.ConnectionError, requests.Timeout):
                continue
            if resp.status_code == 509:
                raise error_for(-17, what=what)
            if resp.status_code in RETRY_STATUSES:
                continue
            if resp.status_code != 200:
                raise MegaError(f"MEGA API answered HTTP {resp.status_code}", path=what)
            try:
                reply = resp.json()
            except ValueError:
                raise MegaError("MEGA API answered something that is not JSON", path=what) from None
            result = reply[0] if isinstance(reply, list) and reply else reply
            code = _error_code(result)
            if code is None:
                return result
            if code not in _RETRY:
                raise error_for(code, what=what)
            last_code = code
        raise error_for(last_code, what=what)

    def file_info(self, handle: str, *, what: str) -> dict[str, Any]:
        """``a:"g"`` on a public file handle: size, encrypted attributes, download URL."""
        return _checked(self.call({"a": "g", "g": 1, "ssl": 1, "p": handle}, what=what), what)

    def node_info(self, folder: str, node: str, *, what: str) -> dict[str, Any]:
        """``a:"g"`` on a file node inside a folder link (the folder handle goes in ``n=``)."""
        command = {"a": "g", "g": 1, "ssl": 1, "n": node}
        return _checked(self.call(command, folder=folder, what=what), what)

    def folder_nodes(self, folder: str, *, what: str) -> list[dict[str, Any]]:
        """``a:"f"`` on a folder link: every node of the shared tree."""
        result = self.call({"a": "f", "c": 1, "ca": 1, "r": 1}, folder=folder, what=what)
        nodes = result.get("f") if isinstance(result, dict) else None
        if not isinstance(nodes, list):
            raise MegaError("MEGA's folder listing has no node list", path=what)
        return [n for n in nodes if isinstance(n, dict)]


def _error_code(result: Any) -> int | None:
    if isinstance(result, int) and not isinstance(result, bool) and result < 0:
        return result
    if isinstance(result, dict) and isinstance(result.get("e"), int) and result["e"] < 0:
        return int(result["e"])
    return None


def _checked(info: Any, what: str) -> dict[str, Any]:
    if not isinstance(info, dict) or not isinstance(info.get("s"), int) or info["s"] < 0:
        raise MegaError("MEGA's file information has no size", path=what)
    return info


# ---------------------------------------------------------------------------------------------
# listing and fetching


@dataclass(frozen=True)
class RemoteFile:
    """One file a link points to, decrypted metadata only (nothing downloaded yet)."""

    node: str  # node handle inside a folder; the public handle for a file link
    name: str  # the name from the encrypted attributes, as MEGA has it (untrusted)
    rel: PurePosixPath  # where it goes under the destination: every part made safe
    size: int
    file_key: bytes  # 32 bytes: AES key ^ nonce/MAC, nonce, meta-MAC

    @property
    def mac(self) -> str:
        """The link's meta-MAC for this file: its content identity as MEGA knows it."""
        return self.file_key[24:].hex()


def list_files(
    link: str | MegaLink,
    *,
    client: MegaClient | None = None,
    suffixes: tuple[str, ...] | None = FOLDER_SUFFIXES,
) -> list[RemoteFile]:
    """The files behind a link (a file link gives one; a folder link its whole tree, or the
    narrowed subfolder/file). Folder files whose names do not end in ``suffixes`` are left out."""
    parsed = parse_link(link) if isinstance(link, str) else link
    api = client or MegaClient()
    if parsed.kind == "file":
        info = api.file_info(parsed.handle, what=parsed.url)
        attrs = decrypt_attributes(
            b64url_decode(str(info.get("at", ""))), split_file_key(parsed.key)[0]
        )
        name = str(attrs.get("n") or "")
        rel = PurePosixPath(safe_part(name, fallback=UNNAMED_FILE))
        return [RemoteFile(parsed.handle, name, rel, info["s"], parsed.key)]
    return _walk_folder(parsed, api.folder_nodes(parsed.handle, what=parsed.url), suffixes)


def _node_key_and_attrs(node: dict[str, Any], folder_key: bytes) -> tuple[bytes, dict[str, Any]]:
    """Try each ``owner:key`` pair of a node until one decrypts its attributes."""
    is_file = node.get("t") == 0
    for pair in str(node.get("k", "")).split("/"):
        owner, sep, wrapped = pair.partition(":")
        if not sep or not _NODE_OR_USER_HANDLE.match(owner):
            continue
        try:
            key = aes_ecb_decrypt(b64url_decode(wrapped), folder_key)
            if len(key) != (32 if is_file else 16):
                continue
            attrs = decrypt_attributes(
                b64url_decode(str(node.get("a", ""))), split_file_key(key)[0] if is_file else key
            )
        except MegaLinkError:
            continue
        return key, attrs
    raise MegaLinkError(
        f"the folder key does not open node {node.get('h')!r}",
        hint="the key part after '#' is wrong or incomplete",
    )


def _walk_folder(
    link: MegaLink, nodes: list[dict[str, Any]], suffixes: tuple[str, ...] | None
) -> list[RemoteFile]:
    opened: dict[str, tuple[dict[str, Any], bytes, str]] = {}
    for node in nodes:
        if node.get("t") not in (0, 1):
            continue  # rubbish bins and special nodes never appear in shares; ignore oddities
        _check_handles(node, link)
        key, attrs = _node_key_and_attrs(node, link.key)
        opened[node["h"]] = (node, key, str(attrs.get("n") or ""))
    if link.inner_handle and link.inner_handle not in opened:
        raise error_for(-9, what=link.url)

    def chain(handle: str) -> list[str] | None:
        """Handles from just below the selected root down to ``handle`` (None if outside it)."""
        out: list[str] = []
        while handle in opened and handle not in out:
            if handle == link.inner_handle:
                return out[::-1]
            out.append(handle)
            handle = str(opened[handle][0].get("p", ""))
        if link.inner_handle:
            return None
        if opened[out[-1]][0].get("t") == 1:
            out.pop()  # the share root itself: its name is the destination folder
        return out[::-1]

    files = []
    for handle, (node, key, name) in opened.items():
        if node["t"] != 0:
            continue
        parts = [handle] if link.inner_kind == "file" else chain(handle)
        if parts is None or (link.inner_kind == "file" and handle != link.inner_handle):
            continue
        if link.inner_kind != "file" and suffixes and not name.lower().endswith(suffixes):
            continue
        names = [safe_part(opened[h][2], fallback=UNNAMED_FOLDER) for h in parts]
        size = node.get("s")
        if isinstance(size, int):
            files.append(RemoteFile(handle, name, PurePosixPath(*names), size, key))
    return _distinct(sorted(files, key=lambda f: (str(f.rel), f.node)))


def _check_handles(node: dict[str, Any], link: MegaLink) -> None:
    """Refuse a node whose handle or parent handle is not MEGA's: a server sending
    ``../../x`` as a handle is hostile, and nothing it says is used."""
    handle, parent = node.get("h"), node.get("p")
    if not isinstance(handle, str) or not _NODE_HANDLE.match(handle):
        raise MegaError(
            f"MEGA sent a malformed node handle {str(handle)[:40]!r}",
            path=link.url,
            hint="not a MEGA server, or a tampered answer; nothing was downloaded",
        )
    if parent is not None and (
        not isinstance(parent, str) or not _NODE_OR_USER_HANDLE.match(parent)
    ):
        raise MegaError(
            f"MEGA sent a malformed parent handle {str(parent)[:40]!r}",
            path=link.url,
            hint="not a MEGA server, or a tampered answer; nothing was downloaded",
        )


def _distinct(files: list[RemoteFile]) -> list[RemoteFile]:
    """Give files whose safe names coincide (``a.pt`` and ``a\0.pt``) distinct names: the
    second and later get a hash of their node handle, so none overwrites another."""
    seen: set[str] = set()
    out = []
    for remote in files:
        rel = remote.rel
        if str(rel) in seen:
            tag = hashlib.sha256(remote.node.encode()).hexdigest()[:8]
            rel = rel.with_name(safe_part(f"{rel.stem}-{tag}{rel.suffix}"))
            remote = replace(remote, rel=rel)
        seen.add(str(rel))
        out.append(remote)
    return out


def _cache_root(link: MegaLink) -> Path:
    digest = hashlib.sha256(link.url.encode()).hexdigest()[:24]
    return config.cache_dir() / "mega" / digest


def fetch(
    link: str,
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    progress: DownloadProgress | None = None,
    max_bytes: int = MAX_FILE_BYTES,  # a folder's checkpoints are skipped
    client: MegaClient | None = None,
    max_workers: int = 4,
) -> list[Fetched]:
    """Download, decrypt and MAC-check every file a MEGA link points to.

    The files returned are the cache's own (``cache_dir()/mega/KEY/files``): the one copy the
    catalogue reads. With ``dest_dir`` they are also copied there. Names come from the
    encrypted attributes and are made safe; a folder link keeps its
    subfolders. Files larger than ``max_bytes`` are skipped in folders and refused for file links.
    Decrypted files are cached, so fetching the same link again downloads only what changed, and
    offline (``TIREG_OFFLINE=1``) the cached files are returned with ``hints['offline']`` set.
    """
    parsed = parse_link(link)
    dest = Path(dest_dir) if dest_dir is not None else None
    cache = _cache_root(parsed)
    if config.offline():
        return _offline(parsed, cache, dest)
    api = client or MegaClient()
    files = list_files(parsed, client=api)
    if parsed.kind == "file" and files[0].size > max_bytes:
        raise SourceError(
            f"refusing a {files[0].size}-byte file (limit {max_bytes} bytes)",
            path=parsed.url,
            hint="embeddings are KB to a few MB",
        )
    files = [f for f in files if f.size <= max_bytes]
    if not files:
        raise SourceError("no embedding files under this MEGA folder", path=parsed.url)
    manifest = _read_manifest(cache)
    workers = max(1, min(max_workers, len(files)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            pool.map(lambda f: _fetch_one(api, parsed, f, cache, manifest, progress), files)
        )
    _write_manifest(cache, {r.hints["mega_node"]: _manifest_entry(r, cache) for r in results})
    return [_deliver(r, cache, dest) for r in results] if dest is not None else results


def _location(link: MegaLink, remote: RemoteFile) -> str:
    if link.kind == "file":
        return link.url
    return MegaLink("folder", link.handle, link.key, "file", remote.node).url


def _fetch_one(
    api: MegaClient,
    link: MegaLink,
    remote: RemoteFile,
    cache: Path,
    manifest: dict[str, dict[str, Any]],
    progress: DownloadProgress | None,
) -> Fetched:
    """One file into the cache (skipped when the cached copy has the same MAC and hash)."""
    target = join_under(cache / "files", remote.rel)
    known = manifest.get(remote.node)
    if (
        known
        and known.get("mac") == remote.mac
        and target.is_file()
        and sha256_file(target) == known.get("sha256")
    ):
        sha = str(known["sha256"])
    else:
        what = _location(link, remote)
        if link.kind == "file":
            info = api.file_info(link.handle, what=what)
        else:
            info = api.node_info(link.handle, remote.node, what=what)
        if not info.get("g"):
            raise MegaError(
                "MEGA gave no download URL for this file",
                path=what,
                hint="the file may be unavailable right now; retry later",
            )
        sha = _download_and_decrypt(
            str(info["g"]), remote, target, cache / "cipher", progress, what=what
        )
    return Fetched(
        path=target,
        kind="mega",
        locator=link.url,
        location=_location(link, remote),
        sha256=sha,
        revision=remote.mac,
        hints={
            "title": Path(remote.rel.name).stem,
            "mega_name": remote.name,
            "mega_node": remote.node,
            "mega_path": str(remote.rel),
        },
    )


def _download_and_decrypt(
    url: str,
    remote: RemoteFile,
    target: Path,
    scratch: Path,
    progress: DownloadProgress | None,
    *,
    what: str,
) -> str:
    """Ciphertext via the shared downloader (retries, resume), then decrypt + MAC into place."""
    try:
        got = download(
            url,
            scratch,
            filename=hashlib.sha256(remote.node.encode()).hexdigest()[:24] + ".enc",
            max_bytes=remote.size,
            expected_size=remote.size,
            progress=progress,
        )
    except HttpStatusError as exc:
        if exc.status == 509:
            raise MegaQuotaError(
                "transfer quota exhausted (HTTP 509 from MEGA's file server)",
                code=509,
                path=what,
                hint=QUOTA_HINT,
            ) from None
        raise MegaError(
            f"MEGA's file server answered HTTP {exc.status}",
            code=exc.status,
            path=what,
            hint="download URLs expire; retry",
        ) from None
    try:
        digest = hashlib.sha256()
        decryptor = Decryptor(remote.file_key, remote.size)
        with got.path.open("rb") as source, atomic_writer(target) as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                plain = decryptor.update(block)
                digest.update(plain)
                out.write(plain)
            decryptor.verify(what=what)
    finally:
        got.path.unlink(missing_ok=True)
    return digest.hexdigest()


def _deliver(fetched: Fetched, cache: Path, dest: Path) -> Fetched:
    """Copy a cached file to ``dest`` (atomically), checking it cannot land outside ``dest``."""
    target = join_under(dest, fetched.path.relative_to(cache / "files"))
    with fetched.path.open("rb") as source, atomic_writer(target) as out:
        shutil.copyfileobj(source, out)
    return replace(fetched, path=target)


def _manifest_entry(fetched: Fetched, cache: Path) -> dict[str, Any]:
    return {
        "mac": fetched.revision,
        "sha256": fetched.sha256,
        "locator": fetched.locator,
        "location": fetched.location,
        "hints": fetched.hints,
        "rel": str(fetched.path.relative_to(cache / "files")),
    }


def _read_manifest(cache: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((cache / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(cache: Path, entries: dict[str, dict[str, Any]]) -> None:
    atomic_write_bytes(cache / "manifest.json", json.dumps(entries, indent=1).encode())


def _offline(link: MegaLink, cache: Path, dest: Path | None) -> list[Fetched]:
    """Offline: the files cached by an earlier fetch of this link, or a clear refusal."""
    out: list[Fetched] = []
    for entry in _read_manifest(cache).values():
        try:
            path = join_under(cache / "files", str(entry.get("rel", "")))
        except UnsafePathError:
            continue  # not a manifest this module wrote
        if not path.is_file() or sha256_file(path) != entry.get("sha256"):
            continue
        hints = {**entry.get("hints", {}), "offline": "cached copy used (TIREG_OFFLINE)"}
        cached = Fetched(
            path=path,
            kind="mega",
            locator=str(entry["locator"]),
            location=str(entry["location"]),
            sha256=str(entry["sha256"]),
            revision=entry.get("mac"),
            hints=hints,
        )
        out.append(_deliver(cached, cache, dest) if dest is not None else cached)
    if not out:
        raise SourceError(
            "offline, and this MEGA link has not been downloaded before",
            path=link.url,
            hint=OFFLINE_HINT,
        )
    return out
