"""``tireg inspect`` and ``tireg convert`` through the real CLI entry point."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from tireg.converters import Embedding, read_file, read_sdxl_pair, write_file


def _a1111_file(path: Path, *, name: str = "my emb", n: int = 2) -> Path:
    buf = io.BytesIO()
    vec = torch.arange(n * 768, dtype=torch.float32).reshape(n, 768) / 1000
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vec},
            "name": name,
            "step": 42,
            "sd_checkpoint": "a9263745",
            "sd_checkpoint_name": "v1-5",
        },
        buf,
    )
    path.write_bytes(buf.getvalue())
    return path


def _evil_pickle(path: Path) -> Path:
    """A pickle whose first global is os.system (never executed: we only read its opcodes)."""
    path.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    return path


def test_inspect_json_shape(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = _a1111_file(tmp_path / "good.pt")
    result = tireg_cli("inspect", "--json", good)
    assert result.code == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["path"] == str(good)
    assert (
        record["format"] == "a1111-pt" and record["name"] == "my emb" and record["family"] == "sd1"
    )
    assert record["encoders"] == {"clip_l": [2, 768]} and record["dtypes"] == {"clip_l": "float32"}
    assert record["step"] == 42
    assert record["trained_on"] == {
        "hash": "a9263745",
        "name": "v1-5",
        "known": [{"name": "Stable Diffusion 1.5 (EMA + non-EMA)", "certain": False}],
    }
    assert record["sha256"] == record["a1111_short_hash"] + record["sha256"][12:]
    assert len(record["a1111_short_hash"]) == 12
    assert record["safety"] == "pickle: allow-listed globals only"


def test_inspect_reports_failures_and_exits_1(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = _a1111_file(tmp_path / "good.pt")
    evil = _evil_pickle(tmp_path / "evil.pt")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    result = tireg_cli("inspect", "--json", good, evil, empty)
    assert result.code == 1
    records = json.loads(result.stdout)
    assert [("error" in r) for r in records] == [False, True, True]
    assert records[1]["path"] == str(evil) and "os.system" in records[1]["safety"]
    assert records[1]["safety"].startswith("REFUSED")
    assert "empty" in records[2]["error"]


def test_inspect_table(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = _a1111_file(tmp_path / "good.pt", name="[bold]not markup[/bold]")
    evil = _evil_pickle(tmp_path / "evil.pt")
    result = tireg_cli("inspect", good, evil)
    assert result.code == 1
    out = " ".join(result.stdout.split())
    for expected in (
        "a1111-pt",
        "[bold]not markup[/bold]",
        "sd1",
        "2 x 768",
        "float32",
        "a9263745 v1-5",
        "allow-listed globals only",
        "REFUSED: asks for os.system",
    ):
        assert expected in out, expected


def test_inspect_shows_nan_warning(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vec = torch.ones(2, 768)
    vec[0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    path.write_bytes(st_save({"emb_params": vec}))
    result = tireg_cli("inspect", "--json", path)
    assert result.code == 0
    (record,) = json.loads(result.stdout)
    assert any("NaN or Inf" in w for w in record["warnings"])
    table = tireg_cli("inspect", path)
    assert "NaN or Inf" in " ".join(table.stdout.split())


def test_inspect_corpus(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    files = (
        sorted(corpus.glob("*.pt")) + sorted(corpus.glob("*.bin")) + sorted(corpus.glob("*.png"))
    )
    result = tireg_cli("inspect", "--json", *files)
    records = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert result.code == 1  # the plain preview picture is no embedding
    assert "not an embedding" in records["a1111-gasai-yuno-16600.png"]["error"]
    assert records["a1111-gasai-yuno-16600.pt"]["trained_on"] == {
        "hash": "e6e8e1fc",
        "name": "model",
        "known": [{"name": "NovelAI anime, full, latest", "certain": False}],
    }
    assert records["a1111-gasai-yuno-16600.pt"]["norms"] == {"clip_l": 37.6245}
    assert records["sd-concepts-birb-style.bin"]["name"] == "<birb-style>"
    assert records["a1111-gasai-yuno-10000.png"]["format"] == "a1111-png"


@pytest.mark.parametrize(
    "fmt, ext",
    [
        ("tireg", ".tireg.safetensors"),
        ("a1111-pt", ".pt"),
        ("diffusers-bin", ".bin"),
        ("diffusers-safetensors", ".safetensors"),
        ("safetensors", ".safetensors"),
        ("png", ".png"),
    ],
)
def test_convert_each_format(tireg_cli, tmp_path: Path, fmt: str, ext: str) -> None:  # type: ignore[no-untyped-def]
    src = _a1111_file(tmp_path / "src.pt")
    out = tmp_path / "out"
    result = tireg_cli("convert", src, "--to", fmt, "--out-dir", out)
    assert result.code == 0, result.stderr
    target = out / f"src{ext}"  # the input's stem: A1111's prompt word, not the name inside
    assert result.stdout.strip() == f"{src} -> {target}"
    assert read_file(target).same_vectors(read_file(src))


def test_convert_refuses_to_overwrite(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _a1111_file(tmp_path / "src.pt")
    target = tmp_path / "x.safetensors"
    target.write_bytes(b"keep me")
    result = tireg_cli("convert", src, "--to", "safetensors", "-o", target)
    assert result.code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "already exists" in result.stderr
    assert "--force" in result.stderr and target.read_bytes() == b"keep me"
    assert tireg_cli("convert", src, "--to", "safetensors", "-o", target, "--force").code == 0
    assert read_file(target).name == "my emb"


def test_convert_bad_input_is_reported_and_the_good_one_written(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = _a1111_file(tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02 broken")
    out = tmp_path / "out"
    result = tireg_cli("convert", good, bad, "--to", "tireg", "--out-dir", out)
    assert result.code == 1 and "bad.pt" in result.stderr
    assert [p.name for p in out.iterdir()] == ["good.tireg.safetensors"]


def test_convert_keeps_stems_when_names_collide(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = _a1111_file(tmp_path / "run-1000.pt", name="same")
    b = _a1111_file(tmp_path / "run-2000.pt", name="same", n=3)
    out = tmp_path / "out"
    result = tireg_cli("convert", a, b, "--to", "a1111-pt", "--out-dir", out)
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["run-1000.pt", "run-2000.pt"]


def test_convert_usage_errors(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _a1111_file(tmp_path / "src.pt")
    assert tireg_cli("convert", src, "--to", "ckpt").code == 2
    assert tireg_cli("convert", src).code == 2


def test_convert_sdxl_pair_and_png_refusal(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emb = Embedding(
        name="<xl>",
        vectors={
            "clip_l": np.ones((2, 768), np.float32),
            "clip_g": np.full((2, 1280), 2, np.float32),
        },
    )
    first, second = write_file(
        emb, tmp_path / "learned_embeds.safetensors", "diffusers-safetensors"
    )
    out = tmp_path / "out"
    result = tireg_cli(
        "convert", first, second, "--sdxl-pair", "--to", "safetensors", "--out-dir", out
    )
    assert result.code == 0, result.stderr
    assert read_file(out / "xl.safetensors").same_vectors(read_sdxl_pair(first, second))
    refused = tireg_cli("convert", out / "xl.safetensors", "--to", "png", "--out-dir", out)
    assert refused.code == 1 and "SDXL" in refused.stderr and not (out / "xl.png").exists()


def test_convert_default_out_dir_is_cwd(
    tireg_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "learned_embeds.bin"
    shutil.copyfile(_a1111_file(tmp_path / "a.pt", name="<cat-toy>"), src)
    monkeypatch.chdir(tmp_path)
    assert tireg_cli("convert", src, "--to", "diffusers-bin").code == 0
    assert read_file(tmp_path / "cat-toy.bin").name == "<cat-toy>"


def test_convert_one_output_for_many_inputs(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _a1111_file(tmp_path / "src.pt")
    many = tireg_cli("convert", src, src, "--to", "tireg", "-o", tmp_path / "x")
    assert many.code == 2 and "--out-dir" in many.stderr
    assert not (tmp_path / "x").exists()


def test_convert_output_and_out_dir_is_a_usage_error(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _a1111_file(tmp_path / "src.pt")
    both = tireg_cli(
        "convert", src, "--to", "tireg", "-o", tmp_path / "x", "--out-dir", tmp_path / "d"
    )
    assert both.code == 2 and "--out-dir" in both.stderr and "not both" in both.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "d").exists()


def test_convert_sdxl_pair_needs_two_files(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _a1111_file(tmp_path / "src.pt")
    one = tireg_cli("convert", src, "--sdxl-pair", "--to", "tireg", "--out-dir", tmp_path / "d")
    assert one.code == 2 and "exactly two" in one.stderr


def test_inspect_tireg_file_shows_its_own_format_and_source(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _a1111_file(tmp_path / "src.pt")
    out = tmp_path / "out"
    assert tireg_cli("convert", src, "--to", "tireg", "--out-dir", out).code == 0
    converted = out / "src.tireg.safetensors"
    result = tireg_cli("inspect", "--json", converted, src)
    assert result.code == 0, result.stderr
    internal_rec, original_rec = json.loads(result.stdout)
    assert internal_rec["format"] == "tireg" and internal_rec["source_format"] == "a1111-pt"
    assert internal_rec["layout"] == "tireg"
    assert original_rec["format"] == original_rec["source_format"] == "a1111-pt"
    table = " ".join(tireg_cli("inspect", converted).stdout.split())
    assert "format tireg (from a1111-pt)" in table


def test_inspect_tireg_file_without_provenance(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emb = Embedding(name="fresh", vectors={"clip_l": np.ones((1, 768), np.float32)})
    (path,) = write_file(emb, tmp_path / "fresh.tireg.safetensors", "tireg")
    (record,) = json.loads(tireg_cli("inspect", "--json", path).stdout)
    assert record["format"] == record["source_format"] == "tireg"
    table = " ".join(tireg_cli("inspect", path).stdout.split())
    assert "format tireg " in table and "(from" not in table
