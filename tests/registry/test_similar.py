"""``tireg similar`` and ``list --near-duplicates`` on real catalogues built from real files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from tests.registry.make_files import write_one
from tireg.converters import CLIP_G, CLIP_L, Embedding
from tireg.registry.similar import _cache_dir


def _emb(name: str, vectors: dict[str, np.ndarray]) -> Embedding:
    return Embedding(name=name, vectors={k: v.astype(np.float32) for k, v in vectors.items()})


def _catalogue(tireg_cli, folder: Path, embeddings: list[Embedding]) -> None:  # type: ignore[no-untyped-def]
    for embedding in embeddings:
        write_one(embedding, folder, embedding.name, "safetensors")
    assert tireg_cli("add", folder).code == 0


def test_similar_ranks_by_mean_vector_cosine_within_the_family(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 768))
    noise = rng.standard_normal((4, 768))
    _catalogue(
        tireg_cli,
        tmp_path / "in",
        [
            _emb("base", {CLIP_L: base}),
            _emb("scaled", {CLIP_L: base * 0.5}),  # same direction: 1.0
            _emb("nudged", {CLIP_L: base + 0.5 * noise}),
            _emb("other", {CLIP_L: rng.standard_normal((2, 768))}),
            _emb("sd2", {"clip_h": rng.standard_normal((4, 1024))}),
        ],
    )
    found = json.loads(tireg_cli("similar", "base", "--json").stdout)
    assert [n["name"] for n in found] == ["scaled", "nudged", "other"], "same family only"
    assert found[0]["score"] == 1.0
    mean = base.mean(axis=0)
    nudged = (base + 0.5 * noise).mean(axis=0)
    expected = mean @ nudged / np.linalg.norm(mean) / np.linalg.norm(nudged)
    assert abs(found[1]["score"] - expected) < 1e-5
    assert len(json.loads(tireg_cli("similar", "base", "--limit", "1", "--json").stdout)) == 1


def test_sdxl_scores_average_both_encoders(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    l_vec, g_vec = rng.standard_normal((2, 768)), rng.standard_normal((2, 1280))
    _catalogue(
        tireg_cli,
        tmp_path / "in",
        [
            _emb("xl", {CLIP_L: l_vec, CLIP_G: g_vec}),
            _emb("xl-half", {CLIP_L: l_vec, CLIP_G: -g_vec}),  # CLIP-L same, CLIP-G opposite
        ],
    )
    found = json.loads(tireg_cli("similar", "xl", "--json").stdout)
    assert found[0]["name"] == "xl-half" and abs(found[0]["score"]) < 1e-6


def test_the_cache_reads_only_new_embeddings(tireg_cli, tmp_path: Path, tireg_home: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    first = [_emb(f"e{i}", {CLIP_L: rng.standard_normal((2, 768))}) for i in range(3)]
    _catalogue(tireg_cli, tmp_path / "a", first)
    assert tireg_cli("similar", "e0").code == 0
    assert (_cache_dir("sd1") / "meta.json").is_file()
    # a cached embedding's store file vanishes: answering must not need it again
    victim = next((tireg_home / "store").glob("??/*.safetensors"))
    victim.unlink()
    _catalogue(tireg_cli, tmp_path / "b", [_emb("new", {CLIP_L: first[0].vectors[CLIP_L] * 2})])
    found = json.loads(tireg_cli("similar", "e0", "--json").stdout)
    assert found[0]["name"] == "new" and found[0]["score"] == 1.0


def test_near_duplicates_group_fp16_copies_not_near_misses(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(4)
    original = _emb("original", {CLIP_L: rng.standard_normal((3, 768))})
    fp16 = replace(
        original,
        name="fp16-copy",
        vectors={CLIP_L: original.vectors[CLIP_L].astype(np.float16).astype(np.float32)},
    )
    moved = original.vectors[CLIP_L].copy()
    moved[0, 0] += 0.01  # far beyond float16 rounding
    _catalogue(tireg_cli, tmp_path / "in", [original, fp16, _emb("near-miss", {CLIP_L: moved})])
    groups = json.loads(tireg_cli("list", "--near-duplicates", "--json").stdout)
    assert groups == [["fp16-copy", "original"]]
    assert "fp16-copy" in tireg_cli("list", "--near-duplicates").stdout


def test_an_unknown_width_compares_with_nothing(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _catalogue(tireg_cli, tmp_path / "in", [_emb("odd", {"emb": np.ones((1, 512))})])
    result = tireg_cli("similar", "odd")
    assert result.code == 1 and "width tireg does not know" in result.stderr
