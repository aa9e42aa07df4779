"""Crash-safe file writes, shared by every layer that puts bytes on disk.

A write goes to a process-unique temporary file in the target's directory, is fsynced, renamed over
the target, and the directory is fsynced. A reader therefore sees the old file or the new one,
never a partial one, even if the process is killed mid-write. This module imports nothing of ours.

Many files into one directory (``tireg convert *.pt``) go through :func:`atomic_batch`: each file
is still fsynced before its rename, but each directory is fsynced once, when the batch ends. A
crash mid-batch can lose some of the renames (never expose a partial file); once the batch has
returned, every file is as durable as a single :func:`atomic_write_bytes`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tireg-tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    target: str | os.PathLike[str], *, overwrite: bool = True, sync_dir: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary stream; on clean exit its bytes replace ``target`` atomically.

    With ``overwrite=False`` an existing target raises :class:`FileExistsError` (checked again at
    the moment of publishing, using a hard link, so two writers cannot both win).
    ``sync_dir=False`` leaves the directory's fsync to the caller (see :func:`atomic_batch`).
    """
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            tmp.replace(path)
        else:
            os.link(tmp, path)
            tmp.unlink()
        if sync_dir:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(
    target: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_writer(target, overwrite=overwrite) as stream:
        stream.write(data)
    return Path(target)


class AtomicBatch:
    """Atomic writes whose directories are fsynced once, when :func:`atomic_batch` ends."""

    def __init__(self) -> None:
        self.directories: set[Path] = set()

    def write_bytes(
        self, target: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
    ) -> Path:
        """:func:`atomic_write_bytes`, except that the directory's fsync waits for the batch end."""
        path = Path(target)
        self.directories.add(path.parent)
        with atomic_writer(path, overwrite=overwrite, sync_dir=False) as stream:
            stream.write(data)
        return path


@contextlib.contextmanager
def atomic_batch() -> Iterator[AtomicBatch]:
    """Write many files atomically, fsyncing each directory once at the end (also on error)."""
    batch = AtomicBatch()
    try:
        yield batch
    finally:
        for directory in sorted(batch.directories):
            fsync_dir(directory)


def sweep_temp_files(directory: Path) -> int:
    """Remove temporaries left by killed writers under ``directory``; return how many."""
    if not directory.is_dir():
        return 0
    count = 0
    for leftover in directory.rglob(f"*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        count += 1
    return count


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, streamed in 1 MiB blocks (files may be far larger than memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
