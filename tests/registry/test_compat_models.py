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


# -- models known only by a hash: tireg model add --hash --------------------------------------


def _trained_on(folder: Path, name: str, trained_on: str) -> Path:
    """An SD 1.x A1111 embedding recording ``trained_on`` as its sd_checkpoint."""
    import numpy as np

    from tireg.converters import Embedding, write_file

    emb = Embedding(
        name=name,
        vectors={"clip_l": np.full((2, 768), 0.5, np.float32)},
        trained_on_hash=trained_on,
    )
    return write_file(emb, folder / f"{name}.pt", "a1111-pt")[0]


def test_model_add_hash_names_a_recorded_hash(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _trained_on(tmp_path / "emb", "merged-style", "0badf00d")
    assert tireg_cli("add", tmp_path / "emb").code == 0
    before = json.loads(tireg_cli("check", "--model", "0badf00d", "--json").stdout)
    assert before["model"]["family"] == "unknown" and before["model"]["name"] == "0badf00d"

    added = tireg_cli(
        "model", "add", "--hash", "0BADF00D", "--name", "my merge", "--family", "sd1", "--json"
    )
    assert added.code == 0, added.stderr
    record = json.loads(added.stdout)
    assert (record["name"], record["family"], record["origin"], record["path"]) == (
        "my merge",
        "sd1",
        "user",
        None,
    )
    assert (record["old_hash"], record["autov2"], record["sha256"]) == ("0badf00d", None, None)

    for spec in ("0badf00d", "my merge"):
        checked = json.loads(tireg_cli("check", "--model", spec, "--json").stdout)
        assert (checked["model"]["name"], checked["model"]["family"]) == ("my merge", "sd1")
        (verdict,) = checked["embeddings"]
        assert verdict["relation"] == "exact" and verdict["works"]
    on_xl = tireg_cli("check", "--model", "sd_xl_base_1.0.safetensors", "merged-style")
    assert "trained on 0badf00d (a1111 sd_checkpoint): probably my merge" in " ".join(
        on_xl.stdout.split()
    )
    assert json.loads(tireg_cli("list", "--compatible-with", "my merge", "--json").stdout)

    renamed = tireg_cli(
        "model", "add", "--hash", "0badf00d", "--name", "merge v2", "--family", "sd1", "--json"
    )
    assert json.loads(renamed.stdout)["id"] == record["id"]
    users = json.loads(tireg_cli("model", "list", "--origin", "user", "--json").stdout)
    assert [u["name"] for u in users] == ["merge v2"]
    assert "merge v2" in tireg_cli("model", "list").stdout


def test_model_add_hash_by_autov2_and_sha256(tireg_cli) -> None:  # type: ignore[no-untyped-def]
    from tireg.db import open_catalogue
    from tireg.registry.model_refs import resolve_model

    sha = "ab" * 32
    assert tireg_cli("model", "add", "--hash", sha, "--name", "full", "--family", "sdxl").code == 0
    out = tireg_cli("model", "add", "--hash", "cdcdcdcdcd", "--name", "short", "--family", "sd2")
    assert out.code == 0 and "AutoV2 cdcdcdcdcd" in out.stdout
    users = {
        u["name"]: u
        for u in json.loads(tireg_cli("model", "list", "--origin", "user", "--json").stdout)
    }
    assert (users["full"]["sha256"], users["full"]["autov2"]) == (sha, sha[:10])
    assert (users["short"]["sha256"], users["short"]["autov2"]) == (None, "cdcdcdcdcd")
    with open_catalogue() as catalogue, catalogue.transaction() as session:
        for spec, name, family in (
            (sha, "full", "sdxl"),
            (sha[:10], "full", "sdxl"),
            (sha[:16], "full", "sdxl"),
            ("cdcdcdcdcd", "short", "sd2"),
            ("short", "short", "sd2"),
        ):
            model = resolve_model(session, spec)
            assert (model.name, model.family, model.path) == (name, family, None), spec
        # an AutoV2 says nothing about the rest of the SHA-256: a full one is not matched
        assert resolve_model(session, "cdcdcdcdcd" + "0" * 54).family == "unknown"


def test_model_add_hash_usage_and_data_errors(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = write_checkpoint(tmp_path / "real.safetensors", "sd1", padding=2 << 20)
    assert tireg_cli("model", "add", "--hash", "0badf00d", "--name", "x").code == 2
    assert tireg_cli("model", "add", "--hash", "0badf00d", "--family", "sd1").code == 2
    both = tireg_cli("model", "add", ckpt, "--hash", "0badf00d", "--name", "x", "--family", "sd1")
    assert both.code == 2
    assert tireg_cli("model", "add", ckpt, "--family", "sd1").code == 2
    assert tireg_cli("model", "add").code == 2
    bad_family = tireg_cli("model", "add", "--hash", "0badf00d", "--name", "x", "--family", "sd9")
    assert bad_family.code == 2
    for bad in ("123", "0badf00dz", "0badf00d00aa"):
        out = tireg_cli("model", "add", "--hash", bad, "--name", "x", "--family", "sd1")
        assert out.code == 1 and len(out.stderr.strip().splitlines()) == 1, bad
        assert "not a model hash" in out.stderr

    assert tireg_cli("model", "add", ckpt, "--name", "the file").code == 0
    taken = tireg_cli(
        "model", "add", "--hash", hash_file(ckpt).sha256, "--name", "y", "--family", "sd1"
    )
    assert taken.code == 1 and "the file" in taken.stderr and "--name" in taken.stderr
    assert (
        json.loads(tireg_cli("model", "list", "--origin", "user", "--json").stdout)[0]["name"]
        == "the file"
    )
