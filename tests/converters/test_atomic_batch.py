"""``tireg.files.atomic_batch``: many atomic writes, each folder fsynced once; convert uses it.

The fsync of a folder is observed by wrapping the real ``fsync_dir`` (it still runs): the point of
the batch is how many times it runs, which the file system cannot show.
"""

from __future__ import annotations

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


def test_batch_syncs_each_folder_once_at_the_end(tmp_path: Path, dir_syncs: list[Path]) -> None:
    other = tmp_path / "sub"
    with atomic_batch() as batch:
        for i in range(5):
            batch.write_bytes(tmp_path / f"{i}.bin", bytes([i]) * 10)
        batch.write_bytes(other / "x.bin", b"x", overwrite=False)
        assert dir_syncs == []  # nothing yet: the folders wait for the batch to end
    assert sorted(dir_syncs) == [tmp_path, other]
    assert [(tmp_path / f"{i}.bin").read_bytes() for i in range(5)] == [
        bytes([i]) * 10 for i in range(5)
    ]
    assert (other / "x.bin").read_bytes() == b"x" and not _leftovers(tmp_path)


def test_batch_that_fails_still_syncs_what_it_wrote(tmp_path: Path, dir_syncs: list[Path]) -> None:
    (tmp_path / "taken.bin").write_bytes(b"keep me")
    with pytest.raises(FileExistsError), atomic_batch() as batch:
        batch.write_bytes(tmp_path / "new.bin", b"new", overwrite=False)
        batch.write_bytes(tmp_path / "taken.bin", b"lost", overwrite=False)
    assert dir_syncs == [tmp_path]
    assert (tmp_path / "new.bin").read_bytes() == b"new"
    assert (tmp_path / "taken.bin").read_bytes() == b"keep me" and not _leftovers(tmp_path)


def _embedding(i: int) -> Embedding:
    rng = np.random.default_rng(i)
    return Embedding(name=f"e{i}", vectors={"clip_l": rng.standard_normal((2, 768))})


def test_convert_of_many_files_syncs_the_output_folder_once(
    tmp_path: Path, dir_syncs: list[Path]
) -> None:
    inputs = [write_file(_embedding(i), tmp_path / f"in{i}.pt", "a1111-pt")[0] for i in range(4)]
    dir_syncs.clear()
    out = tmp_path / "out"
    written = convert(inputs, "tireg", out_dir=out)
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
