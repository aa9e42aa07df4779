"""`tireg model add/list` and `tireg hash` end to end: real files, catalogue and cache."""

from __future__ import annotations

import json
from pathlib import Path

from tests.checkpoints.builders import write_checkpoint
from tireg.checkpoints import hash_file, known_models


def test_model_add_then_list(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = write_checkpoint(tmp_path / "base.safetensors", "sd2", padding=2 << 20)
    first = tireg_cli("model", "add", ckpt, "--json")
    assert first.code == 0, first.stderr
    [added] = json.loads(first.stdout)
    assert added["family"] == "sd2" and added["supported"]
    assert added["hashes"]["sha256"] == hash_file(ckpt).sha256
    again = json.loads(tireg_cli("model", "add", ckpt, "--json").stdout)[0]
    assert again["id"] == added["id"] and again["hashes_cached"]

    listing = json.loads(tireg_cli("model", "list", "--json").stdout)
    assert len(listing) == len(known_models()) + 1
    assert listing[0]["name"] == "base" and listing[0]["origin"] == "user"
    known = json.loads(tireg_cli("model", "list", "--origin", "known", "--json").stdout)
    assert len(known) == len(known_models())
    pony = next(r for r in known if r["name"] == "Pony Diffusion V6 XL")
    assert pony["autov2"] == "67ab2fd8ec"
    table = tireg_cli("model", "list")
    assert table.code == 0 and "Stable Diffusion 1.4" in table.stdout


def test_model_add_unsupported_family_is_recorded_as_such(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    flux = write_checkpoint(tmp_path / "flux1.safetensors", "flux")
    out = tireg_cli("model", "add", flux)
    assert out.code == 0 and "Flux" in out.stdout and "not served" in out.stdout


def test_model_add_refuses_bad_paths_before_recording_any(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = write_checkpoint(tmp_path / "good.safetensors", "sd1")
    out = tireg_cli("model", "add", good, tmp_path / "missing.ckpt")
    assert out.code == 1 and "missing.ckpt" in out.stderr
    listing = json.loads(tireg_cli("model", "list", "--origin", "user", "--json").stdout)
    assert listing == []


def test_hash_cli_json_and_cache(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = write_checkpoint(tmp_path / "m.safetensors", "sd1", padding=2 << 20)
    small = tmp_path / "tiny.pt"
    small.write_bytes(b"0" * 100)
    out = tireg_cli("hash", big, small, "--json")
    assert out.code == 0, out.stderr
    first, tiny = json.loads(out.stdout)
    expected = hash_file(big)
    assert first["sha256"] == expected.sha256 and first["autov2"] == expected.sha256[:10]
    assert first["addnet"] == expected.addnet and not first["cached"]
    assert tiny["old_hash_meaningful"] is False and tiny["addnet"] is None
    second = json.loads(tireg_cli("hash", big, "--json").stdout)[0]
    assert second["cached"] and second["sha256"] == first["sha256"]
    text = tireg_cli("hash", small)
    assert "not meaningful" in text.stdout
    assert tireg_cli("hash", tmp_path / "nope").code == 1
