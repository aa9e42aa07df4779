"""``tireg convert`` of many files and folders: names kept, good files converted, bad ones listed.

A1111 types an embedding by its file stem, so a converted file keeps its input's stem whatever else
is in the batch; one bad file no longer stops the batch (it is reported, as ``add`` does, and the
exit code is 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tireg.converters import Embedding, convert, read_file, write_file


def _file(path: Path, name: str, seed: int, fmt: str = "a1111-pt") -> Path:
    vectors = np.random.default_rng(seed).standard_normal((2, 768)).astype(np.float32)
    return write_file(Embedding(name=name, vectors={"clip_l": vectors}), path, fmt)[0]


def test_outputs_keep_the_input_stem_and_say_so(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = _file(tmp_path / "in" / "gasai yuno-8000.pt", "gasai yuno", 1)
    b = _file(tmp_path / "in" / "style.pt", "trained-as-something-else", 2)
    out = tmp_path / "out"
    result = tireg_cli("convert", a, b, "--to", "safetensors", "--out-dir", out)
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{a} -> {out / 'gasai yuno-8000.safetensors'}",
        f"{b} -> {out / 'style.safetensors'}",
    ]
    assert read_file(out / "style.safetensors").same_vectors(read_file(b))


def test_bad_files_are_listed_and_the_rest_converted(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = _file(tmp_path / "good.pt", "g", 1)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02 broken")
    taken = _file(tmp_path / "taken.pt", "t", 3)
    later = _file(tmp_path / "later.pt", "l", 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "taken.tireg.safetensors").write_bytes(b"the user's")
    result = tireg_cli("convert", good, bad, taken, later, "--to", "tireg", "--out-dir", out)
    assert result.code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2, result.stderr
    assert str(bad) in errors[0] and str(taken) in errors[1] and "already exists" in errors[1]
    assert sorted(p.name for p in out.iterdir()) == [
        "good.tireg.safetensors",
        "later.tireg.safetensors",
        "taken.tireg.safetensors",
    ]
    assert (out / "taken.tireg.safetensors").read_bytes() == b"the user's"
    assert read_file(out / "later.tireg.safetensors").same_vectors(read_file(later))


def test_folders_are_walked_with_the_add_filter(tmp_path: Path) -> None:
    root = tmp_path / "embeddings"
    deep = _file(root / "sub" / "deep.safetensors", "d", 1, "safetensors")
    top = _file(root / "top.pt", "t", 2)
    _file(root / ".cache" / "hidden.pt", "h", 3)
    (root / "notes.txt").write_text("not an embedding")
    out = tmp_path / "out"
    report = convert([root], "a1111-pt", out_dir=out)
    assert [source for source, _ in report.converted] == [top, deep]
    assert report.failed == [] and report.skipped == 1
    assert sorted(p.name for p in out.iterdir()) == ["deep.pt", "top.pt"]


def test_two_inputs_for_one_output_keep_the_first(tmp_path: Path) -> None:
    first = _file(tmp_path / "a" / "same.pt", "x", 1)
    second = _file(tmp_path / "b" / "same.pt", "y", 2)
    report = convert([first, second], "a1111-pt", out_dir=tmp_path / "out")
    assert [source for source, _ in report.converted] == [first]
    ((failed, error),) = report.failed
    assert failed == second and "another input" in str(error)
    assert read_file(tmp_path / "out" / "same.pt").same_vectors(read_file(first))
