"""``tireg.files.atomic_batch``: many atomic writes, fsynced together, each folder once.

The fsync of a folder is observed by wrapping the real ``fsync_dir`` (it still runs): the point of
the batch is how many times it runs, which the file system cannot show.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tireg import files
from tireg.converters import Embedding, convert, read_file, write_file
from tireg.files import TMP_SUFFIX, atomic_batch, atomic_write_bytes


@pytest.fixture
def dir_syncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every folder fsynced through ``tireg.files.fsync_dir``, in order."""
    calls: list[Path] = []
    real = files.fsync_dir

    def spy(directory: Path) -> None:
        calls.append(Path(directory))
        real(directory)

    monkeypatch.setattr(files, "fsync_dir", spy)
    return calls


def _leftovers(folder: Path) -> list[Path]:
    return list(folder.rglob(f"*{TMP_SUFFIX}"))


def test_single_write_syncs_its_folder(tmp_path: Path, dir_syncs: list[Path]) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"a")
    assert dir_syncs == [tmp_path]


def test_batch_publishes_on_commit_and_syncs_each_folder_once(
    tmp_path: Path, dir_syncs: list[Path]
) -> None:
    other = tmp_path / "sub"
    with atomic_batch() as batch:
        for i in range(5):
            batch.add([(tmp_path / f"{i}.bin", bytes([i]) * 10)])
        batch.add([(other / "x.bin", b"x"), (other / "y.bin", b"y")], overwrite=False)
        assert not (tmp_path / "0.bin").exists() and dir_syncs == []  # staged, not published
        written = batch.commit()
    assert written == [tmp_path / f"{i}.bin" for i in range(5)] + [other / "x.bin", other / "y.bin"]
    assert sorted(dir_syncs) == [tmp_path, other]
    assert [p.read_bytes() for p in written] == [bytes([i]) * 10 for i in range(5)] + [b"x", b"y"]
    assert not _leftovers(tmp_path)


def test_batch_left_without_commit_publishes_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_batch() as batch:
        batch.add([(tmp_path / "a.bin", b"a")])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_batch_refuses_an_existing_target_before_publishing(tmp_path: Path) -> None:
    (tmp_path / "taken.bin").write_bytes(b"keep me")
    with pytest.raises(FileExistsError), atomic_batch() as batch:
        batch.add([(tmp_path / "new.bin", b"new")], overwrite=False)
        batch.add([(tmp_path / "taken.bin", b"lost")], overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.bin"]
    assert (tmp_path / "taken.bin").read_bytes() == b"keep me"


def test_target_taken_before_commit_rolls_back_its_group(tmp_path: Path) -> None:
    """Earlier groups stay published, the racing group loses its first file, later ones drop."""
    with pytest.raises(FileExistsError) as caught, atomic_batch() as batch:
        batch.add([(tmp_path / "first.bin", b"1")], overwrite=False)
        batch.add([(tmp_path / "p.bin", b"p"), (tmp_path / "p_2.bin", b"p2")], overwrite=False)
        batch.add([(tmp_path / "last.bin", b"3")], overwrite=False)
        (tmp_path / "p_2.bin").write_bytes(b"someone else")  # another writer wins the race
        batch.commit()
    assert caught.value.args[0] == tmp_path / "p_2.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.bin", "p_2.bin"]
    assert (tmp_path / "p_2.bin").read_bytes() == b"someone else"


def _embedding(i: int) -> Embedding:
    rng = np.random.default_rng(i)
    return Embedding(name=f"e{i}", vectors={"clip_l": rng.standard_normal((2, 768))})


def test_convert_of_many_files_syncs_the_output_folder_once(
    tmp_path: Path, dir_syncs: list[Path]
) -> None:
    inputs = [write_file(_embedding(i), tmp_path / f"in{i}.pt", "a1111-pt")[0] for i in range(4)]
    dir_syncs.clear()
    out = tmp_path / "out"
    written = convert(inputs, "tireg", out_dir=out).written
    assert dir_syncs == [out]
    assert [read_file(p).same_vectors(_embedding(i)) for i, p in enumerate(written)] == [True] * 4


def test_sdxl_pair_write_syncs_its_folder_once(tmp_path: Path, dir_syncs: list[Path]) -> None:
    rng = np.random.default_rng(0)
    pair = Embedding(
        name="xl",
        vectors={"clip_l": rng.standard_normal((1, 768)), "clip_g": rng.standard_normal((1, 1280))},
    )
    written = write_file(pair, tmp_path / "xl.safetensors", "diffusers-safetensors")
    assert [p.name for p in written] == ["xl.safetensors", "xl_2.safetensors"]
    assert dir_syncs == [tmp_path]


def test_every_staged_file_is_fsynced_before_it_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are synced on several threads; each one exactly once, all before the first
    is published."""
    synced: list[str] = []
    real = files._fsync_file

    def spy(path: str, fd: int | None = None) -> None:
        assert not list(tmp_path.glob("*.bin"))  # nothing published yet
        real(path, fd)
        synced.append(path)

    monkeypatch.setattr(files, "_fsync_file", spy)
    with atomic_batch() as batch:
        for i in range(40):
            batch.add([(tmp_path / f"{i}.bin", bytes([i]) * 100)], overwrite=False)
        written = batch.commit()
    assert len(written) == 40 and len(synced) == 40
    assert len(set(synced)) == 40 and all(p.endswith(TMP_SUFFIX) for p in synced)


def test_a_failed_fsync_publishes_nothing_and_raises_the_first_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever thread meets it, the failure of the earliest file is the one raised, once the
    other files were synced; nothing is published and no temporary is left."""
    real = files._fsync_file

    def failing(path: str, fd: int | None = None) -> None:
        real(path, fd)
        name = Path(path).name
        if name.startswith((".7.bin", ".31.bin")):
            raise OSError(5, "I/O error", name.split(".tireg", 1)[0])

    monkeypatch.setattr(files, "_fsync_file", failing)
    with pytest.raises(OSError) as caught, atomic_batch() as batch:
        for i in range(40):
            batch.add([(tmp_path / f"{i}.bin", bytes([i]))], overwrite=False)
        batch.commit()
    assert caught.value.filename.startswith(".7.bin.")
    assert list(tmp_path.iterdir()) == []


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_staged_files_are_synced_through_kept_descriptors_and_none_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first :data:`files.KEEP_OPEN` staged files are fsynced through the descriptor they
    were written through, later ones opened again by name; each is synced once, and no
    descriptor outlives the batch, committed, refused or abandoned."""
    monkeypatch.setattr(files, "KEEP_OPEN", 5)
    through: list[bool] = []
    real = files._fsync_file

    def spy(path: str, fd: int | None = None) -> None:
        through.append(fd is not None)
        real(path, fd)

    monkeypatch.setattr(files, "_fsync_file", spy)
    before = _open_descriptors()
    with atomic_batch() as batch:
        for i in range(12):
            batch.add([(tmp_path / f"{i}.bin", bytes([i]) * 10)], overwrite=False)
        assert _open_descriptors() == before + 5
        written = batch.commit()
    assert sorted(through) == [False] * 7 + [True] * 5
    assert [p.read_bytes() for p in written] == [bytes([i]) * 10 for i in range(12)]
    assert _open_descriptors() == before
    # a group refused while staging, and a batch left without its commit
    (tmp_path / "taken.bin").write_bytes(b"keep me")
    with pytest.raises(RuntimeError), atomic_batch() as batch:
        batch.add([(tmp_path / "a.bin", b"a")])
        with pytest.raises(FileExistsError):
            batch.add([(tmp_path / "b.bin", b"b"), (tmp_path / "taken.bin", b"x")], overwrite=False)
        raise RuntimeError("interrupted")
    assert _open_descriptors() == before
    assert not _leftovers(tmp_path) and not (tmp_path / "a.bin").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_a_thread_that_cannot_start_leaves_no_descriptor_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no sync thread can be started (the process is out of threads), the committing
    thread syncs and closes every staged file itself before the failure is raised."""
    import threading

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    before = _open_descriptors()
    with pytest.raises(RuntimeError), atomic_batch() as batch:
        for i in range(6):
            batch.add([(tmp_path / f"{i}.bin", bytes([i]))], overwrite=False)
        monkeypatch.setattr(threading.Thread, "start", refuse)
        batch.commit()
    monkeypatch.undo()
    assert _open_descriptors() == before
    assert list(tmp_path.iterdir()) == []
