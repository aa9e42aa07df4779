"""``tireg tokens`` and ``tireg from-text`` against a model's real vocabulary.

The token table is planted: random rows, except that a chosen embedding vector points the same
way as the row of ``cat</w>``. The checkpoint is written in the three layouts people have (an
LDM single file as safetensors and as a torch zip, and a diffusers folder), holding only what
the commands read, so each test also shows that nothing else is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.registry.make_files import write_one
from tireg.converters import CLIP_L, Embedding
from tireg.pipelines.token_table import SINGLE_FILE_KEYS

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB = 49408
CAT, RED, FOX, A = 2368, 736, 3240, 320  # ids of "cat</w>", "red</w>", "fox</w>", "a</w>"


def _table() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((VOCAB, 768)).astype(np.float32)


def _checkpoint(kind: str, folder: Path, table: np.ndarray) -> Path:
    weights = {SINGLE_FILE_KEYS[CLIP_L][0]: torch.from_numpy(table).to(torch.float16)}
    if kind == "safetensors":
        path = folder / "model.safetensors"
        safetensors_torch.save_file(weights, path)
    elif kind == "ckpt":
        path = folder / "model.ckpt"
        torch.save({"state_dict": weights}, path)
    else:
        path = folder / "diffusers"
        (path / "text_encoder").mkdir(parents=True)
        (path / "model_index.json").write_text(
            json.dumps(
                {
                    "_class_name": "StableDiffusionPipeline",
                    "text_encoder": ["transformers", "CLIPTextModel"],
                }
            )
        )
        (path / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 768}))
        safetensors_torch.save_file(
            {"text_model.embeddings.token_embedding.weight": torch.from_numpy(table)},
            path / "text_encoder" / "model.safetensors",
        )
    return path


@pytest.mark.parametrize("kind", ["safetensors", "ckpt", "diffusers"])
def test_tokens_names_the_nearest_vocabulary_words(tireg_cli, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    model = _checkpoint(kind, tmp_path, table)
    vectors = np.stack([table[CAT] * 3.0, table[FOX] * 0.5]).astype(np.float32)
    write_one(
        Embedding(name="catfox", vectors={CLIP_L: vectors}), tmp_path / "in", "catfox", "tireg"
    )
    assert tireg_cli("add", tmp_path / "in").code == 0
    found = tireg_cli("tokens", "catfox", "--model", model, "--top", "3", "--json")
    assert found.code == 0, found.stderr
    rows = json.loads(found.stdout)["encoders"][CLIP_L]
    assert [rows[0][0]["token"].strip(), rows[1][0]["token"].strip()] == ["cat", "fox"]
    assert rows[0][0]["id"] == CAT and rows[0][0]["score"] > 0.99
    assert "cat" in tireg_cli("tokens", "catfox", "--model", model).stdout


def test_from_text_takes_the_tokens_own_vectors(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    model = _checkpoint("safetensors", tmp_path, table)
    made = tireg_cli("from-text", "a red fox", "--model", model, "--name", "fox", "--json")
    assert made.code == 0, made.stderr
    shown = json.loads(tireg_cli("show", "fox", "--json").stdout)
    assert shown["num_vectors"] == 3
    from tireg.db import open_catalogue
    from tireg.registry import naming
    from tireg.registry.store import ContentStore

    with open_catalogue() as cat, cat.reading() as session:
        sha = naming.resolve(session, "fox").vectors_sha256
    stored = ContentStore().get(sha).vectors[CLIP_L]
    expected = table[[A, RED, FOX]].astype(np.float16).astype(np.float32)  # stored as fp16
    assert np.array_equal(stored, expected)


def test_an_embedding_for_another_encoder_is_refused(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = _checkpoint("safetensors", tmp_path, _table())
    wide = Embedding(name="wide", vectors={"clip_h": np.ones((1, 1024), np.float32)})
    write_one(wide, tmp_path / "in", "wide", "tireg")
    assert tireg_cli("add", tmp_path / "in").code == 0
    result = tireg_cli("tokens", "wide", "--model", model)
    assert result.code == 1 and "clip_h" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sdxl_reads_both_encoders_tables(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SDXL: CLIP-L vectors are read against the first table, CLIP-G against the second."""
    from tireg.converters import CLIP_G

    rng = np.random.default_rng(12)
    table_l = rng.standard_normal((VOCAB, 768)).astype(np.float16)
    table_g = rng.standard_normal((VOCAB, 1280)).astype(np.float16)
    model = tmp_path / "xl.safetensors"
    safetensors_torch.save_file(
        {
            SINGLE_FILE_KEYS[CLIP_L][1]: torch.from_numpy(table_l),
            SINGLE_FILE_KEYS[CLIP_G][0]: torch.from_numpy(table_g),
        },
        model,
    )
    vectors = {
        CLIP_L: table_l[[CAT]].astype(np.float32),
        CLIP_G: table_g[[FOX]].astype(np.float32),
    }
    write_one(Embedding(name="xl", vectors=vectors), tmp_path / "in", "xl", "tireg")
    assert tireg_cli("add", tmp_path / "in").code == 0
    found = tireg_cli("tokens", "xl", "--model", model, "--json")
    assert found.code == 0, found.stderr
    encoders = json.loads(found.stdout)["encoders"]
    assert encoders[CLIP_L][0][0]["id"] == CAT and encoders[CLIP_G][0][0]["id"] == FOX
