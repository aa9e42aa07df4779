"""File names and paths built from text tireg does not control, made safe by one rule.

Remote servers (MEGA attributes, Content-Disposition headers, Hub and git file lists, Civitai
file names) and embedding files themselves (their trigger names) choose names that end up on
disk. Any of them may be hostile: ``..``, absolute paths, backslashes, NUL, names longer than a
file system takes, Windows device names (``CON``, ``nul.txt``), or bidi controls that make
``evil\u202egnp.pt`` look like ``evilpt.png``. Every layer reduces such text with
:func:`safe_part` (one file or folder name) or :func:`safe_relative_path` (a relative path), and
builds the final path with :func:`join_under`, which proves the result stays inside its root
*before* anything is created or written there.

A leaf module: it imports only :mod:`tireg.errors`, so converters, sources and the registry can
all share the rule.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from pathlib import Path, PurePath, PurePosixPath

from tireg.errors import TiregError

#: a whole file name, in UTF-8 bytes: under the 255 of ext4, APFS and NTFS, with room for the
#: temporary name a write goes through (``.NAME.<12 hex>.tireg-tmp``, 24 bytes more)
MAX_NAME_BYTES = 200
#: a stem that gets a suffix later (``.tireg.safetensors``, ``_2`` for a pair's second file)
MAX_STEM_BYTES = MAX_NAME_BYTES - 40
#: characters of the hash that keeps two long names distinct once cut to the same prefix
_HASH_CHARS = 8
#: extensions longer than this are not extensions (``a.<300 chars>``): cut as part of the name
_MAX_SUFFIX_CHARS = 16

# Windows reserves these names with any extension (``nul.txt``) and trailing spaces; the
# superscript digits count too (learn.microsoft.com, "Naming Files, Paths, and Namespaces").
_WINDOWS_DEVICES = re.compile(
    r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)$", re.IGNORECASE
)
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*\\/]')
#: Unicode categories never kept in a name: controls (C0, DEL, C1), formatting characters
#: (bidi overrides and isolates, zero-width joiners), line/paragraph separators, surrogates
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: printable ASCII without what Windows forbids, not starting or ending with a dot or space:
#: a name that steps 1 to 5 of :func:`safe_part` leave as it is
_PLAIN_NAME = re.compile(r'(?![ .])[^\x00-\x1f\x7f-\U0010ffff<>:"|?*\\/]+(?<![ .])')


class UnsafePathError(TiregError):
    """A path built from remote or file-supplied text would leave the folder it belongs in."""


def _drop_invisible(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)


def _cap(name: str, max_bytes: int) -> str:
    """``name`` cut to ``max_bytes`` UTF-8 bytes, keeping a short extension and ending the stem
    with a hash of the whole name, so two long names sharing a prefix stay two names."""
    if len(name.encode()) <= max_bytes:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix) > _MAX_SUFFIX_CHARS:
        stem, suffix = name, ""
    tail = "-" + hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
    ending = tail + (f".{suffix}" if suffix else "")
    budget = max(0, max_bytes - len(ending.encode()))
    cut = stem.encode()[:budget].decode(errors="ignore").rstrip(" .")
    return cut + ending


def safe_part(name: str, *, fallback: str = "", max_bytes: int = MAX_NAME_BYTES) -> str:
    """One file or folder name that stays where it is put, on any operating system.

    Steps: 1. NFC, so one name has one spelling; 2. keep the last component of anything that
    looks like a path (``../../x.pt`` is ``x.pt``); 3. drop control, formatting (bidi) and
    separator characters; 4. characters Windows forbids become ``_``; 5. trim leading and
    trailing dots and spaces (``..`` and hidden names vanish, Windows drops trailing ones);
    6. prefix device names (``CON``, ``nul.txt``) with ``_``; 7. cap the UTF-8 length at
    ``max_bytes`` with a stable hash (:func:`_cap`). Returns ``fallback`` when nothing is left.
    """
    if _PLAIN_NAME.fullmatch(name):  # most names (a sync makes thousands): steps 1-5 keep it
        text = name
    else:
        text = _plain(name)
        if not text:
            return fallback
    if _WINDOWS_DEVICES.match(text.split(".", 1)[0].rstrip(" ")):
        text = f"_{text}"
    return _cap(text, max_bytes)


def _plain(name: str) -> str:
    """Steps 1 to 5 of :func:`safe_part`."""
    text = unicodedata.normalize("NFC", name)
    text = re.split(r"[/\\]", text)[-1]
    text = _drop_invisible(text)
    return _WINDOWS_FORBIDDEN.sub("_", text).strip(" .")


def safe_relative_path(path: str) -> PurePosixPath:
    """A remote *relative* path (a file in a repo or a folder share), each part made safe.

    Absolute paths, drive letters and ``..`` parts are refused outright: a source that sends
    them is broken or hostile, and guessing what it meant could write outside the target.
    """
    normalised = path.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised) or "\0" in path:
        raise UnsafePathError(f"refusing absolute or binary remote path {path!r}")
    parts = [p for p in normalised.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafePathError(
            f"refusing remote path {path!r}", hint="it would leave the target folder"
        )
    return PurePosixPath(*(safe_part(p, fallback="_") for p in parts))


def _check_part(part: str, whole: str) -> None:
    if (
        not part
        or part in (".", "..")
        or "\0" in part
        or "/" in part
        or "\\" in part
        or len(part.encode()) > 255
    ):
        raise UnsafePathError(
            f"refusing path {whole!r}: the part {part!r} is not a plain name",
            hint="a remote source sent a name that would leave its folder",
        )


def join_under(root: str | os.PathLike[str], *parts: str | PurePath) -> Path:
    """``root`` joined with ``parts``, proven to stay inside ``root``; raise otherwise.

    Checked before anything is created: each part must be relative and made of plain names
    (no ``..``, separators inside a name, NUL or over-long names), and the joined path, with
    any symbolic links already on disk resolved, must still lie under the resolved ``root``.
    """
    base = Path(root)
    names: list[str] = []
    for part in parts:
        text = os.fspath(part)
        pure = PurePosixPath(text)
        if pure.is_absolute() or re.match(r"^[A-Za-z]:", text):
            raise UnsafePathError(f"refusing absolute path {text!r} under {base}")
        for name in pure.parts:
            _check_part(name, text)
            names.append(name)
    if _has_link_below(base, names) and not Path(
        _resolve_below(real_root := os.path.realpath(base), names)
    ).is_relative_to(real_root):
        raise UnsafePathError(
            f"refusing {'/'.join(names)!r}: it resolves outside {base}",
            hint="a symbolic link inside the folder points elsewhere",
        )
    return base.joinpath(*names)


def _has_link_below(root: Path, names: list[str]) -> bool:
    """Whether any of ``names``, joined one by one under ``root``, is a symbolic link.

    Without one, the joined path resolves to ``root``'s real path plus the plain names, inside
    it by construction, so ``root`` itself need not be resolved: most calls end here, with one
    ``lstat`` per name. Once a name does not exist, nothing below it does either.
    """
    here = os.fspath(root)
    for name in names:
        here = os.path.join(here, name)  # noqa: PTH118 - strings: no Path per step
        try:
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return True
        except OSError:
            return False
    return False


def _resolve_below(real_root: str, names: list[str]) -> str:
    """What ``os.path.realpath`` gives for ``real_root`` (already resolved) joined with
    ``names``, asking the file system only about ``names``.

    ``realpath`` resolves a path one component at a time; ``real_root``'s own are settled, so
    only the plain names below it are looked at: one ``lstat`` each, and a symbolic link among
    them is resolved where it stands. Once a name does not exist nothing below it can, and the
    rest are appended as they are (as ``realpath`` does). A sync joins a path per file, and
    resolving the whole path and the root twice per file was a fifth of its CPU.
    """
    here = real_root
    for index, name in enumerate(names):
        here = os.path.join(here, name)  # noqa: PTH118 - strings: no Path per step
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            return os.path.join(here, *names[index + 1 :])  # noqa: PTH118
        if stat.S_ISLNK(mode):
            here = os.path.realpath(here)
    return here
