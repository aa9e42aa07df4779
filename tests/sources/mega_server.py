"""A MEGA API stand-in on 127.0.0.1 for tests: ``POST /cs`` (``a:"g"``, ``a:"f"``) plus the
ciphertext download URLs, with Range support and injectable failures.

Fixtures are encrypted here with real AES, independently of :mod:`tireg.sources.mega` (this file
has its own CBC-MAC), so the client is checked against MEGA's scheme and not against itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _aes(key: bytes, mode: modes.Mode) -> Cipher:
    return Cipher(algorithms.AES(key), mode)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def chunk_bounds(size: int) -> list[tuple[int, int]]:
    """MEGA's MAC chunks, written out plainly: 128 KiB * 1..8, then 1 MiB."""
    out, start, n = [], 0, 1
    while start < size:
        length = min(size - start, 0x20000 * min(n, 8))
        out.append((start, start + length))
        start += length
        n += 1
    return out


def meta_mac(plain: bytes, key: bytes, nonce: bytes) -> bytes:
    """The condensed CBC-MAC MEGA stores in a file key (computed block by block, no streaming)."""
    ecb = _aes(key, modes.ECB()).encryptor()
    file_mac = bytes(16)
    for start, end in chunk_bounds(len(plain)):
        mac = nonce + nonce
        chunk = plain[start:end]
        chunk += bytes(-len(chunk) % 16)
        for i in range(0, len(chunk), 16):
            mac = ecb.update(_xor(mac, chunk[i : i + 16]))
        file_mac = ecb.update(_xor(file_mac, mac))
    m = struct.unpack(">4I", file_mac)
    return struct.pack(">2I", m[0] ^ m[1], m[2] ^ m[3])


def encrypt_file(plain: bytes) -> tuple[bytes, bytes]:
    """(32-byte file key as MEGA links carry it, AES-CTR ciphertext)."""
    key, nonce = os.urandom(16), os.urandom(8)
    enc = _aes(key, modes.CTR(nonce + bytes(8))).encryptor()
    cipher = enc.update(plain) + enc.finalize()
    mac = meta_mac(plain, key, nonce)
    return _xor(key, nonce + mac) + nonce + mac, cipher


def attr_key(node_key: bytes) -> bytes:
    return _xor(node_key[:16], node_key[16:]) if len(node_key) == 32 else node_key


def encrypt_attrs(attrs: dict, node_key: bytes) -> str:
    data = b"MEGA" + json.dumps(attrs).encode()
    data += bytes(-len(data) % 16)
    enc = _aes(attr_key(node_key), modes.CBC(bytes(16))).encryptor()
    return b64(enc.update(data) + enc.finalize())


def wrap_key(node_key: bytes, folder_key: bytes) -> str:
    enc = _aes(folder_key, modes.ECB()).encryptor()
    return b64(enc.update(node_key) + enc.finalize())


def handle() -> str:
    return b64(os.urandom(6))


def token(node: str) -> str:
    """The download URL's path part for a node: never the handle itself, which a hostile
    stand-in makes anything (``../../x``)."""
    return hashlib.sha256(node.encode()).hexdigest()[:16]


@dataclass
class StoredFile:
    key: bytes
    cipher: bytes
    attrs: str  # encrypted attributes


@dataclass
class MegaStandIn:
    """State of the fake MEGA; tests add files/folders and queue failures."""

    files: dict[str, StoredFile] = field(default_factory=dict)  # public file handle ->
    folders: dict[str, tuple[bytes, list[dict]]] = field(
        default_factory=dict
    )  # handle -> key, nodes
    blobs: dict[str, bytes] = field(default_factory=dict)  # download token -> ciphertext
    api_failures: list[int] = field(default_factory=list)  # MEGA codes (or 509) for next /cs calls
    download_failures: list[int] = field(default_factory=list)  # HTTP statuses for next GETs
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    base: str = ""

    def add_file(self, name: str, plain: bytes) -> str:
        """Publish a file link; returns ``https://mega.nz/file/H#K``."""
        key, cipher = encrypt_file(plain)
        h = handle()
        self.files[h] = StoredFile(key, cipher, encrypt_attrs({"n": name}, key))
        return f"https://mega.nz/file/{h}#{b64(key)}"

    def add_folder(
        self, tree: dict, handles: dict[str, str] | None = None
    ) -> tuple[str, dict[str, str]]:
        """Publish a folder link for ``{"name": bytes | {subtree}}``; returns the link and a
        map from '/'-joined path to node handle. ``handles`` forces the handle of some paths
        (a hostile server sends whatever it likes)."""
        forced = handles or {}
        folder_key, root, public = os.urandom(16), handle(), handle()
        nodes = [
            {
                "h": root,
                "p": "owner123",
                "t": 1,
                "a": encrypt_attrs({"n": "share"}, folder_key),
                "k": f"{root}:{wrap_key(folder_key, folder_key)}",
                "ts": 1,
            }
        ]
        paths: dict[str, str] = {}

        def add(subtree: dict, parent: str, prefix: str) -> None:
            for name, value in subtree.items():
                h = forced.get(prefix + name) or handle()
                paths[prefix + name] = h
                if isinstance(value, dict):
                    key = os.urandom(16)
                    nodes.append(
                        {
                            "h": h,
                            "p": parent,
                            "t": 1,
                            "a": encrypt_attrs({"n": name}, key),
                            "k": f"{root}:{wrap_key(key, folder_key)}",
                            "ts": 1,
                        }
                    )
                    add(value, h, prefix + name + "/")
                else:
                    key, cipher = encrypt_file(value)
                    self.blobs[token(h)] = cipher
                    nodes.append(
                        {
                            "h": h,
                            "p": parent,
                            "t": 0,
                            "s": len(cipher),
                            "ts": 1,
                            "a": encrypt_attrs({"n": name}, key),
                            "k": f"xxxxxxxx:{b64(bytes(32))}/{root}:{wrap_key(key, folder_key)}",
                        }
                    )

        add(tree, root, "")
        self.folders[public] = (folder_key, nodes)
        return f"https://mega.nz/folder/{public}#{b64(folder_key)}", paths

    # --- the protocol ---

    def cs(self, query: dict, body: list) -> tuple[int, object]:
        if self.api_failures:
            code = self.api_failures.pop(0)
            return (509, "") if code == 509 else (200, [code])
        cmd = body[0]
        folder = query.get("n", [None])[0]
        if cmd.get("a") == "f":
            if folder not in self.folders:
                return 200, [-9]
            return 200, [{"f": self.folders[folder][1], "ok": []}]
        if cmd.get("a") == "g":
            if "p" in cmd:
                f = self.files.get(cmd["p"])
                if f is None:
                    return 200, [-9]
                self.blobs[token(cmd["p"])] = f.cipher
                url = f"{self.base}/dl/{token(cmd['p'])}"
                return 200, [{"s": len(f.cipher), "at": f.attrs, "g": url}]
            if folder in self.folders:
                node = next((n for n in self.folders[folder][1] if n["h"] == cmd.get("n")), None)
                if node is None or node["t"] != 0:
                    return 200, [-9]
                url = f"{self.base}/dl/{token(node['h'])}"
                return 200, [{"s": node["s"], "at": node["a"], "g": url}]
            return 200, [-9]
        return 200, [-2]


def serve(state: MegaStandIn) -> tuple[ThreadingHTTPServer, str]:
    """Start the stand-in on a free port; returns the server and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(("POST", self.path, dict(self.headers)))
            if parts.path != "/cs":
                return self._send(404, b"")
            status, reply = state.cs(parse_qs(parts.query), body)
            self._send(status, json.dumps(reply).encode(), {"Content-Type": "application/json"})

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, dict(self.headers)))
            match = re.fullmatch(r"/dl/([\w-]+)", urlsplit(self.path).path)
            if not match or match[1] not in state.blobs:
                return self._send(404, b"")
            if state.download_failures:
                return self._send(state.download_failures.pop(0), b"Bandwidth Limit Exceeded")
            data = state.blobs[match[1]]
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{match[1]}"',
                "Accept-Ranges": "bytes",
            }
            rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if rng and int(rng[1]) < len(data):
                start = int(rng[1])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, data[start:], headers)
            self._send(200, data, headers)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    state.base = base
    return server, base


@pytest.fixture
def fake_mega(monkeypatch: pytest.MonkeyPatch) -> Iterator[MegaStandIn]:
    """A running stand-in, with ``TIREG_MEGA_API`` pointing at it."""
    state = MegaStandIn()
    server, base = serve(state)
    monkeypatch.setenv("TIREG_MEGA_API", base)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
