"""Layout detection on decoded objects, and the dicts each writer builds."""

from __future__ import annotations

import numpy as np
import pytest

from tireg.converters import (
    CLIP_G,
    CLIP_L,
    Embedding,
    EmbeddingFileError,
    NotAnEmbeddingError,
    layouts,
)


def vec(n: int = 2, width: int = 768) -> np.ndarray:
    return np.arange(n * width, dtype=np.float32).reshape(n, width)


def test_a1111_needs_no_name_to_be_a1111() -> None:
    found = layouts.interpret(
        {"string_to_param": {"*": vec()}, "step": 5}, container="pt", name_hint="file-stem"
    )
    assert found.layout == "a1111" and found.embedding.name == "file-stem"
    assert found.embedding.step == 5


def test_original_placeholder_other_than_star_names_the_embedding() -> None:
    found = layouts.interpret(
        {"string_to_token": {"sks": np.array(42)}, "string_to_param": {"sks": vec()}},
        container="pt",
        name_hint="embeddings",
    )
    assert found.layout == "original" and found.embedding.name == "sks"


@pytest.mark.parametrize("bad_step", [True, "100", 1.5, None])
def test_odd_metadata_values_are_dropped_not_fatal(bad_step: object) -> None:
    found = layouts.interpret(
        {"string_to_param": {"*": vec()}, "name": 7, "step": bad_step, "sd_checkpoint": ["x"]},
        container="pt",
        name_hint="stem",
    )
    e = found.embedding
    assert (e.name, e.step, e.trained_on_hash) == ("stem", None, None)


def test_sdxl_with_extra_tensors_is_not_one_embedding() -> None:
    with pytest.raises(NotAnEmbeddingError, match="also tensors"):
        layouts.interpret(
            {"clip_l": vec(), "clip_g": vec(2, 1280), "lora_up": vec()},
            container="safetensors",
            name_hint="x",
        )


def test_kohya_title_and_modelspec_extras() -> None:
    meta = {"modelspec.title": "T", "modelspec.date": "2024", "format": "pt", "ss_other": "x"}
    found = layouts.interpret(
        {"emb_params": vec()}, container="safetensors", name_hint="s", metadata=meta
    )
    assert found.embedding.name == "T"
    assert found.embedding.extras == {"modelspec.date": "2024"}


def test_non_string_key_falls_back_to_file_stem() -> None:
    found = layouts.interpret({7: vec()}, container="pt", name_hint="stem")
    assert found.embedding.name == "stem"


def test_bare_tensor_only_in_pickles() -> None:
    assert layouts.interpret(vec(), container="pt", name_hint="s").layout == "diffusers"
    with pytest.raises(NotAnEmbeddingError):
        layouts.interpret(vec(), container="png", name_hint="s")


def test_dtypes_are_reported_as_stored() -> None:
    found = layouts.interpret({"<t>": vec().astype(np.float16)}, container="pt", name_hint="s")
    assert found.dtypes == {CLIP_L: "float16"}
    assert found.embedding.vectors[CLIP_L].dtype == np.float32


def test_writer_dicts() -> None:
    sd1 = Embedding(
        name="n", vectors={CLIP_L: vec()}, step=3, trained_on_hash="h", trained_on_name="m"
    )
    a1111 = layouts.a1111_dict(sd1)
    assert a1111["string_to_token"] == {"*": 265} and list(a1111["string_to_param"]) == ["*"]
    assert (a1111["name"], a1111["step"], a1111["sd_checkpoint"], a1111["sd_checkpoint_name"]) == (
        "n",
        3,
        "h",
        "m",
    )
    xl = Embedding(name="x", vectors={CLIP_L: vec(), CLIP_G: vec(2, 1280)}, step=3)
    # A1111's SDXL branch calls .detach() on every value: nothing but the two tensors
    assert list(layouts.a1111_dict(xl)) == ["clip_l", "clip_g"]
    first, second = layouts.diffusers_dicts(xl)
    assert first["x"].shape == (2, 768) and second["x"].shape == (2, 1280)
    flat = Embedding(name="f", vectors={CLIP_L: vec(1)}, flat=True)
    assert layouts.diffusers_dicts(flat)[0]["f"].shape == (768,)
    assert layouts.diffusers_dicts(flat.with_meta(flat=False))[0]["f"].shape == (1, 768)
    assert layouts.a1111_dict(flat)["string_to_param"]["*"].shape == (1, 768)
    tensors, meta = layouts.kohya_dict(sd1.with_meta(extras={"modelspec.date": "d", "other": "o"}))
    assert list(tensors) == ["emb_params"] and meta == {
        "modelspec.title": "n",
        "modelspec.date": "d",
    }


def test_absurd_width_is_refused() -> None:
    with pytest.raises(EmbeddingFileError, match=r"width 1\.\.16384"):
        layouts.interpret({"<t>": np.zeros((1, 20000), np.float32)}, container="pt", name_hint="s")
