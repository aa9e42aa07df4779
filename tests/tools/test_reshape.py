"""``tireg mix``, ``merge``, ``trim`` and ``scale``: new catalogue entries with their lineage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.registry.make_files import write_one
from tireg.converters import CLIP_H, CLIP_L, Embedding
from tireg.db import open_catalogue
from tireg.registry import naming
from tireg.registry.lineage import lineage_of
from tireg.registry.store import ContentStore


def _emb(name: str, vectors: np.ndarray, key: str = CLIP_L) -> Embedding:
    return Embedding(name=name, vectors={key: vectors.astype(np.float32)})


@pytest.fixture
def catalogued(tireg_cli, tmp_path: Path) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    vectors = {
        "alpha": rng.standard_normal((3, 768)),
        "beta": rng.standard_normal((3, 768)),
        "gamma": rng.standard_normal((2, 768)),
    }
    for name, v in vectors.items():
        write_one(_emb(name, v), tmp_path / "in", name, "safetensors")
    write_one(
        _emb("wide", rng.standard_normal((3, 1024)), CLIP_H), tmp_path / "in", "wide", "tireg"
    )
    assert tireg_cli("add", tmp_path / "in").code == 0
    return {k: v.astype(np.float32) for k, v in vectors.items()}


def _stored(name: str) -> np.ndarray:
    with open_catalogue() as cat, cat.reading() as session:
        sha = naming.resolve(session, name).vectors_sha256
    return ContentStore().get(sha).vectors[CLIP_L]


def _lineage(name: str) -> list[dict[str, object]]:
    with open_catalogue() as cat, cat.reading() as session:
        return lineage_of(session, naming.resolve(session, name).id)


def test_mix_is_the_weighted_sum_and_records_its_parents(tireg_cli, catalogued) -> None:  # type: ignore[no-untyped-def]
    made = tireg_cli("mix", "0.7*alpha + 0.3*beta", "--name", "ab", "--json")
    assert made.code == 0, made.stderr
    a64, b64 = (catalogued[k].astype(np.float64) for k in ("alpha", "beta"))
    expected = (0.7 * a64 + 0.3 * b64).astype(np.float32)
    assert np.array_equal(_stored("ab"), expected)
    (row,) = _lineage("ab")
    assert row["operation"] == "mix"
    settings = row["settings"]
    assert isinstance(settings, dict) and settings["expression"] == "0.7*alpha + 0.3*beta"
    # parents are recorded as NAME@HASH refs: unambiguous even once other namesakes arrive
    parents = [(p["ref"].split("@")[0], p["weight"]) for p in settings["parents"]]
    assert parents == [("alpha", 0.7), ("beta", 0.3)]
    assert [r.split("@")[0] for r in json.loads(made.stdout)["parents"]] == ["alpha", "beta"]
    minus = tireg_cli("mix", "alpha - 0.5*beta", "--name", "a-b")
    assert minus.code == 0
    assert np.allclose(_stored("a-b"), catalogued["alpha"] - 0.5 * catalogued["beta"], atol=1e-6)


def test_merge_trim_scale(tireg_cli, catalogued) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("merge", "alpha", "gamma", "--name", "ag").code == 0
    assert np.array_equal(_stored("ag"), np.concatenate([catalogued["alpha"], catalogued["gamma"]]))
    assert tireg_cli("trim", "alpha", "--vectors", "1:3", "--name", "a13").code == 0
    assert np.array_equal(_stored("a13"), catalogued["alpha"][1:3])
    assert tireg_cli("scale", "beta", "0.8", "--name", "b08").code == 0
    assert np.array_equal(
        _stored("b08"), (catalogued["beta"].astype(np.float64) * 0.8).astype(np.float32)
    )
    assert _lineage("b08")[0]["operation"] == "scale"
    shown = json.loads(tireg_cli("show", "a13", "--json").stdout)
    assert "trim" in json.dumps(shown), "show lists how the entry was made"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("mix", "alpha + wide", "--name", "x"), "different text encoders"),
        (("merge", "alpha", "wide", "--name", "x"), "different text encoders"),
        (("mix", "alpha + gamma", "--name", "x"), "different numbers of vectors"),
        (("mix", "0.5*", "--name", "x"), "cannot read the mix expression"),
        (("trim", "gamma", "--vectors", "5:9", "--name", "x"), "keeps none"),
        (("scale", "alpha", "1", "--name", "beta"), "already catalogued"),
    ],
)
def test_bad_operations_are_one_line(tireg_cli, catalogued, args, words) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli(*args)
    assert result.code == 1
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
