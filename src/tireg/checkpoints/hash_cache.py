"""A persistent cache of file hashes, so an unchanged multi-GB checkpoint is hashed once.

Entries are keyed by the resolved path and trusted only while the file's size, ``mtime_ns`` and
inode are unchanged (A1111 keys on mtime alone; the inode also catches a file replaced by a
rename, and the size catches most in-place rewrites within one mtime tick). The cache is a plain
SQLite file under :func:`tireg.config.cache_dir`, in WAL mode so that concurrent ``tireg``
processes can read while one writes. It is deliberately not the catalogue: hashing must work
without a catalogue, and a cache may be deleted at any time. A damaged cache file is replaced.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tireg import config
from tireg.checkpoints.errors import CheckpointError
from tireg.checkpoints.hashing import FileHashes, hash_file
from tireg.progress import Advance

CACHE_FILE = "hashes.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    old_hash TEXT NOT NULL,
    crc32 TEXT NOT NULL,
    blake3 TEXT NOT NULL,
    addnet TEXT,
    hashed_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class HashResult:
    """The hashes of one file and whether they came from the cache (no byte of it was read)."""

    path: Path
    hashes: FileHashes
    cached: bool

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), **self.hashes.to_dict(), "cached": self.cached}


class HashCache:
    """The cache file, opened once per command (use as a context manager)."""

    def __init__(self, location: Path | None = None) -> None:
        self.location = location or config.cache_dir() / CACHE_FILE
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        """The cache file; a damaged one is replaced, and where none can be written (a home on
        a read-only mount, or one that cannot be created) hashes are still computed, in memory.
        A cache is regenerable: it is never a reason for a command to fail."""
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            try:
                return self._open(str(self.location))
            except sqlite3.OperationalError:
                raise  # cannot open or write it: no file cache at all
            except sqlite3.DatabaseError:
                self.location.unlink(missing_ok=True)  # damaged: set aside
                return self._open(str(self.location))
        except (OSError, sqlite3.OperationalError):
            return self._open(":memory:")

    @staticmethod
    def _open(where: str) -> sqlite3.Connection:
        db = sqlite3.connect(where, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: Path, stat: os.stat_result) -> FileHashes | None:
        """The stored hashes of ``path`` if the file is unchanged since they were computed."""
        row = self._db.execute(
            "SELECT size, mtime_ns, inode, sha256, old_hash, crc32, blake3, addnet "
            "FROM file_hashes WHERE path = ?",
            (str(path),),
        ).fetchone()
        if row is None or tuple(row[:3]) != (stat.st_size, stat.st_mtime_ns, stat.st_ino):
            return None
        return FileHashes(
            size=row[0], sha256=row[3], old_hash=row[4], crc32=row[5], blake3=row[6], addnet=row[7]
        )

    def put(self, path: Path, stat: os.stat_result, hashes: FileHashes) -> None:
        """Remember ``hashes`` for the file state described by ``stat`` (where the cache can
        be written: a read-only one just does not remember)."""
        with contextlib.suppress(sqlite3.OperationalError):
            self._put(path, stat, hashes)

    def _put(self, path: Path, stat: os.stat_result, hashes: FileHashes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(path),
                stat.st_size,
                stat.st_mtime_ns,
                stat.st_ino,
                hashes.sha256,
                hashes.old_hash,
                hashes.crc32,
                hashes.blake3,
                hashes.addnet,
                time.time(),
            ),
        )

    def hashes(
        self,
        path: str | os.PathLike[str],
        *,
        refresh: bool = False,
        progress: Advance | None = None,
    ) -> HashResult:
        """Hashes of ``path``: from the cache when the file is unchanged, else computed and stored.

        ``refresh`` ignores (and replaces) a cached entry. A file that changes while it is being
        hashed is reported by :func:`hash_file` or, if only its mtime moved, not cached."""
        file = Path(path).resolve()
        try:
            before = file.stat()
        except OSError as exc:
            raise CheckpointError(f"cannot read ({exc.strerror or exc})", path=path) from exc
        if not refresh and (hit := self.get(file, before)) is not None:
            return HashResult(file, hit, cached=True)
        computed = hash_file(file, progress=progress)
        with contextlib.suppress(OSError):
            after = file.stat()
            if (after.st_size, after.st_mtime_ns, after.st_ino) == (
                before.st_size,
                before.st_mtime_ns,
                before.st_ino,
            ):
                self.put(file, before, computed)
        return HashResult(file, computed, cached=False)


def file_hashes(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    refresh: bool = False,
    progress: Advance | None = None,
) -> Iterator[HashResult]:
    """Hash each path (one read per file, cache first), yielding results in order.

    Example: ``next(file_hashes("sd-v1-4.ckpt")).hashes.old_hash == "7460a6fa"``."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    with HashCache() as cache:
        for item in items:
            yield cache.hashes(item, refresh=refresh, progress=progress)
