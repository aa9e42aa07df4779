"""Compatibility verdicts on real imports: the corpus A1111 embedding, synthetic checkpoints whose
hashes an embedding recorded, and every family pairing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoints.builders import write_checkpoint, write_ckpt
from tireg.checkpoints import hash_file
from tireg.converters import CLIP_G, CLIP_H, CLIP_L, Embedding, write_file
from tireg.db import Catalogue, open_catalogue
from tireg.registry.compat import (
    EXACT,
    SAME_FAMILY,
    SD1_ON_SDXL,
    UNKNOWN,
    WRONG_FAMILY,
    check,
    compatible_embedding_ids,
    verdict,
)
from tireg.registry.importer import add_paths
from tireg.registry.model_refs import ModelNotFoundError, name_hash, resolve_model
from tireg.registry.naming import resolve

WIDTH = {CLIP_L: 768, CLIP_H: 1024, CLIP_G: 1280}


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def _embedding(
    folder: Path, name: str, encoders: tuple[str, ...], trained_on: str | None = None
) -> Path:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    vectors = {enc: rng.standard_normal((2, WIDTH[enc])).astype(np.float32) for enc in encoders}
    emb = Embedding(name=name, vectors=vectors, trained_on_hash=trained_on)
    folder.mkdir(parents=True, exist_ok=True)
    if encoders == (CLIP_L, CLIP_G):
        return write_file(emb, folder / f"{name}.safetensors", "safetensors")[0]
    return write_file(emb, folder / f"{name}.pt", "a1111-pt")[0]


def _import(catalogue: Catalogue, *paths: Path, **hints: str) -> None:
    report = add_paths(catalogue, paths, hints=hints or None)
    assert not report.errors, report.errors


def _relations(catalogue: Catalogue, model: str, names: list[str]) -> dict[str, str]:
    with catalogue.transaction() as session:
        _, results = check(session, model, names)
    return {r.name: r.verdict.relation for r in results}


# -- the corpus: an A1111 embedding recording sd_checkpoint "e6e8e1fc" -----------------------


def test_corpus_old_hash_names_the_novelai_model(catalogue: Catalogue, corpus: Path) -> None:
    _import(catalogue, corpus / "a1111-gasai-yuno-16600.pt")
    with catalogue.transaction() as session:
        row = resolve(session, "gasai yuno")
        assert row.trained_on_hash == "e6e8e1fc"
        assert name_hash(session, "e6e8e1fc") == ["NovelAI anime, full, latest"]
        model = resolve_model(session, "e6e8e1fc")
        assert model.name == "NovelAI anime, full, latest" and model.family == "sd1"
        result = verdict(session, row, model)
    assert result.relation == EXACT and result.works
    assert "probably" in result.reason
    assert any("NovelAI anime, full, latest" in line for line in result.evidence)
    # the same embedding against other well-known models
    assert _relations(catalogue, "Stable Diffusion 1.4", ["gasai yuno"]) == {
        "gasai yuno": SAME_FAMILY
    }
    assert _relations(catalogue, "v2-1_768-ema-pruned.ckpt", ["gasai yuno"]) == {
        "gasai yuno": WRONG_FAMILY
    }
    assert _relations(catalogue, "Stable Diffusion XL base 1.0", ["gasai yuno"]) == {
        "gasai yuno": SD1_ON_SDXL
    }


def test_corpus_check_cli(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus / "a1111-gasai-yuno-16600.pt").code == 0
    out = tireg_cli("check", "--model", "E6E8E1FC", "--json")
    assert out.code == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"]["name"] == "NovelAI anime, full, latest"
    [entry] = data["embeddings"]
    assert entry["relation"] == EXACT and entry["works"] and not entry["cannot_work"]
    table = tireg_cli("check", "--model", "e6e8e1fc", "gasai yuno")
    assert table.code == 0 and "exact" in table.stdout and "NovelAI" in table.stdout


# -- synthetic checkpoints whose hashes embeddings recorded ---------------------------------


@pytest.mark.parametrize("writer", [write_checkpoint, write_ckpt], ids=["safetensors", "ckpt"])
def test_checkpoint_file_matches_both_hash_forms(
    catalogue: Catalogue, tmp_path: Path, writer
) -> None:  # type: ignore[no-untyped-def]
    suffix = ".safetensors" if writer is write_checkpoint else ".ckpt"
    ckpt = writer(tmp_path / f"mymodel{suffix}", "sd1", padding=2 << 20, seed=7)
    hashes = hash_file(ckpt)
    assert hashes.old_hash_meaningful
    folder = tmp_path / "embeddings"
    _import(
        catalogue,
        _embedding(folder, "old-style", (CLIP_L,), trained_on=hashes.old_hash),  # 2022 A1111
        _embedding(folder, "new-style", (CLIP_L,), trained_on=hashes.autov2.upper()),  # 2023 A1111
        _embedding(folder, "other-sd1", (CLIP_L,), trained_on="7460a6fa"),
        _embedding(folder, "sd2-one", (CLIP_H,)),
        _embedding(folder, "xl-one", (CLIP_L, CLIP_G)),
    )
    with catalogue.transaction() as session:
        model, results = check(session, str(ckpt))
        by_name = {r.name: r.verdict for r in results}
        ids = compatible_embedding_ids(session, model)
    assert model.family == "sd1" and model.old_hash == hashes.old_hash
    assert by_name["old-style"].relation == EXACT and "probably" in by_name["old-style"].reason
    assert by_name["new-style"].relation == EXACT and "autov2" in by_name["new-style"].reason
    assert by_name["other-sd1"].relation == SAME_FAMILY
    assert any("Stable Diffusion 1.4" in e for e in by_name["other-sd1"].evidence)
    assert by_name["sd2-one"].relation == WRONG_FAMILY and by_name["sd2-one"].cannot_work
    assert by_name["xl-one"].relation == WRONG_FAMILY
    assert {r.name for r in results if r.embedding_id in ids} == {
        "old-style",
        "new-style",
        "other-sd1",
    }


def test_model_by_hash_after_registering_it(
    catalogue: Catalogue, tmp_path: Path, tireg_cli
) -> None:  # type: ignore[no-untyped-def]
    ckpt = write_checkpoint(tmp_path / "mine.safetensors", "sdxl", padding=2 << 20, seed=3)
    hashes = hash_file(ckpt)
    assert tireg_cli("model", "add", ckpt, "--name", "My XL").code == 0
    with catalogue.transaction() as session:
        for spec in (hashes.sha256, hashes.autov2, hashes.sha256[:16], "My XL", "mine.safetensors"):
            model = resolve_model(session, spec)
            assert (model.name, model.family, model.path) == (
                "My XL",
                "sdxl",
                str(ckpt.resolve()),
            ), spec


def test_sd1_on_sdxl_and_unsupported_families(catalogue: Catalogue, tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    _import(
        catalogue,
        _embedding(folder, "l-only", (CLIP_L,)),
        _embedding(folder, "xl", (CLIP_L, CLIP_G)),
    )
    xl = write_checkpoint(tmp_path / "xl.safetensors", "sdxl")
    sd3 = write_checkpoint(tmp_path / "sd3.safetensors", "sd3")
    assert _relations(catalogue, str(xl), []) == {"l-only": SD1_ON_SDXL, "xl": SAME_FAMILY}
    assert _relations(catalogue, str(sd3), []) == {"l-only": WRONG_FAMILY, "xl": WRONG_FAMILY}
    with catalogue.transaction() as session:
        _, [result, _] = check(session, str(sd3))
    assert "SD3" in result.verdict.reason


def test_family_conflict_ignores_an_old_hash_collision(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    ckpt = write_checkpoint(tmp_path / "sd1.safetensors", "sd1", padding=2 << 20)
    old = hash_file(ckpt).old_hash
    _import(catalogue, _embedding(tmp_path / "e", "wide", (CLIP_H,), trained_on=old))
    with catalogue.transaction() as session:
        _, [result] = check(session, str(ckpt))
    assert result.verdict.relation == WRONG_FAMILY
    assert any("ignored" in line for line in result.verdict.evidence)


def test_base_model_hint_is_evidence(catalogue: Catalogue, tmp_path: Path) -> None:
    _import(
        catalogue,
        _embedding(tmp_path / "e", "hinted", (CLIP_L,)),
        base_model_hint="SD 1.5",
        base_model_evidence="civitai baseModel",
    )
    with catalogue.transaction() as session:
        _, [result] = check(session, "Stable Diffusion 1.4")
    assert result.verdict.relation == SAME_FAMILY
    assert "base model hint 'SD 1.5' (civitai baseModel)" in result.verdict.evidence


def test_base_model_hint_with_a_hash_is_exact(catalogue: Catalogue, tmp_path: Path) -> None:
    _import(
        catalogue,
        _embedding(tmp_path / "e", "pony-thing", (CLIP_L, CLIP_G)),
        base_model_hint="67AB2FD8EC",
    )
    with catalogue.transaction() as session:
        _, [result] = check(session, "Pony Diffusion V6 XL")
    assert result.verdict.relation == EXACT and "autov2" in result.verdict.reason


# -- naming models ---------------------------------------------------------------------------


def test_resolve_model_edge_cases(catalogue: Catalogue) -> None:
    with catalogue.transaction() as session:
        collision = resolve_model(session, "ffa7b160")
        assert (
            collision.family == "sd1"
            and len(collision.files) == 3
            and "3 different" in (collision.note or "")
        )
        unknown = resolve_model(session, "0123456789")
        assert unknown.family == UNKNOWN and unknown.autov2 == "0123456789"
        with pytest.raises(ModelNotFoundError, match="names"):
            resolve_model(session, "Waifu Diffusion")
        with pytest.raises(ModelNotFoundError, match="no model named"):
            resolve_model(session, "definitely not a model")
        both = resolve_model(session, "Stable Diffusion 1.5 (EMA-only)")
        assert {f.old_hash for f in both.files} == {"81761151", "d7049739"}


def test_unknown_hash_only_finds_exact_matches(catalogue: Catalogue, tmp_path: Path) -> None:
    _import(
        catalogue,
        _embedding(tmp_path / "e", "a", (CLIP_L,), trained_on="0a1b2c3d4e"),
        _embedding(tmp_path / "e", "b", (CLIP_L,)),
    )
    assert _relations(catalogue, "0A1B2C3D4E", []) == {"a": EXACT, "b": UNKNOWN}


def test_check_cli_errors(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tireg_cli("check", "--model", "nothing-like-this")
    assert out.code == 1 and "no model named" in out.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    out = tireg_cli("check", "--model", bad)
    assert out.code == 1 and "bad.safetensors" in out.stderr
    missing = tireg_cli("check", "--model", "Stable Diffusion 1.4", "no-such-embedding")
    assert missing.code == 1


def test_diffusers_folder_as_model(catalogue: Catalogue, tmp_path: Path) -> None:
    folder = tmp_path / "pipe"
    (folder / "text_encoder").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    _import(catalogue, _embedding(tmp_path / "e", "h", (CLIP_H,)))
    assert _relations(catalogue, str(folder), []) == {"h": SAME_FAMILY}
    shutil.rmtree(folder)
