"""The hash cache answers without reading an unchanged file and re-hashes a changed one."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tireg import config
from tireg.checkpoints import HashCache, file_hashes, hash_file
from tireg.checkpoints import hash_cache as hash_cache_module


class _ReadCounter:
    """Counts calls into the real hash_file (the cache must not call it for a hit)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path, **kwargs: object) -> object:
        self.calls += 1
        return hash_file(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> _ReadCounter:
    spy = _ReadCounter()
    monkeypatch.setattr(hash_cache_module, "hash_file", spy)
    return spy


def test_second_call_reads_nothing(tmp_path: Path, counter: _ReadCounter) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(os.urandom(2 << 20))
    read_bytes: list[int] = []
    first = next(file_hashes(path, progress=read_bytes.append))
    assert not first.cached and sum(read_bytes) == 2 << 20
    read_bytes.clear()
    second = next(file_hashes(path, progress=read_bytes.append))
    assert second.cached and second.hashes == first.hashes
    assert read_bytes == [] and counter.calls == 1
    assert (config.cache_dir() / "hashes.sqlite").is_file()


def test_changed_file_is_rehashed(tmp_path: Path, counter: _ReadCounter) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"a" * 5000)
    first = next(file_hashes(path))
    # same size, new content and a new mtime
    path.write_bytes(b"b" * 5000)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = next(file_hashes(path))
    assert not second.cached and second.hashes.sha256 != first.hashes.sha256
    assert counter.calls == 2


def test_replaced_file_with_same_mtime_is_rehashed(tmp_path: Path, counter: _ReadCounter) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"a" * 5000)
    first = next(file_hashes(path))
    stat = path.stat()
    other = tmp_path / "new"
    other.write_bytes(b"c" * 5000)
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other.replace(path)  # a new inode behind the same name, size and mtime
    second = next(file_hashes(path))
    assert not second.cached and second.hashes.sha256 != first.hashes.sha256


def test_refresh_ignores_the_cache(tmp_path: Path, counter: _ReadCounter) -> None:
    path = tmp_path / "m"
    path.write_bytes(b"z" * 10)
    next(file_hashes(path))
    again = next(file_hashes(path, refresh=True))
    assert not again.cached and counter.calls == 2


def test_damaged_cache_file_is_replaced(tmp_path: Path) -> None:
    location = config.cache_dir() / "hashes.sqlite"
    location.parent.mkdir(parents=True, exist_ok=True)
    location.write_bytes(b"this is not a database" * 100)
    path = tmp_path / "m"
    path.write_bytes(b"q" * 10)
    assert not next(file_hashes(path)).cached
    assert next(file_hashes(path)).cached
    with sqlite3.connect(location) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_two_caches_share_entries(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(b"q" * 10)
    with HashCache() as one, HashCache() as two:
        assert not one.hashes(path).cached
        assert two.hashes(path).cached
