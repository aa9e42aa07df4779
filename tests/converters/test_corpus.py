"""Files real tools wrote (../shared/corpus) decode to exactly what the corpus README states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tireg.converters import (
    CLIP_L,
    NotAnEmbeddingError,
    read_bytes_detailed,
    read_file,
    read_file_detailed,
)
from tireg.converters.a1111_png import loads_both

from .test_png_card import strip_text_chunks

SHA256 = {
    "sd-concepts-birb-style": "f2e23a8f2d3628ed77acb8151751ecd4efc4017e8da86bc29af10f855ca308d9",
    "a1111-gasai-yuno-1000": "a021ed7983d7202f9f6f07834e6d205b6626278903d115ea1b3bc700f93658c1",
    "a1111-gasai-yuno-16600": "b3dffb279f1f6253951a04c19a672819e911356814edf727047ad9efc7010bf9",
    "a1111-gasai-yuno-10000": "91502229449edc152f85b5ffce28a075382ffc90a338669524a5eb44d527bd9d",
}


def test_birb_style_diffusers_bin(corpus: Path) -> None:
    result = read_file_detailed(corpus / "sd-concepts-birb-style.bin")
    emb = result.embedding
    assert result.container == "torch-zip" and emb.source_format == "diffusers-bin"
    assert emb.name == "<birb-style>" and emb.step is None
    assert emb.widths == {CLIP_L: 768} and emb.num_vectors == 1 and emb.family.value == "sd1"
    assert result.dtypes == {CLIP_L: "float32"}
    assert round(emb.norms()[CLIP_L], 4) == 3.0136
    assert emb.source_sha256 == SHA256["sd-concepts-birb-style"]


@pytest.mark.parametrize(
    "stem, step, norm, ckpt, ckpt_name",
    [
        ("a1111-gasai-yuno-1000", 1000, 8.1353, None, None),
        ("a1111-gasai-yuno-16600", 16600, 37.6245, "e6e8e1fc", "model"),
    ],
)
def test_a1111_pt_training_outputs(
    corpus: Path, stem: str, step: int, norm: float, ckpt: str | None, ckpt_name: str | None
) -> None:
    """Saved from CUDA tensors: the storage location is ignored, nothing needs a GPU."""
    emb = read_file(corpus / f"{stem}.pt")
    assert emb.source_format == "a1111-pt" and emb.name == "gasai yuno" and emb.step == step
    assert emb.widths == {CLIP_L: 768} and emb.num_vectors == 8
    assert round(emb.norms()[CLIP_L], 4) == norm
    assert (emb.trained_on_hash, emb.trained_on_name) == (ckpt, ckpt_name)
    assert emb.source_sha256 == SHA256[stem]


def test_png_card_decodes_from_both_carriers_identically(corpus: Path) -> None:
    data = (corpus / "a1111-gasai-yuno-10000.png").read_bytes()
    with_text = read_bytes_detailed(data, name_hint="a1111-gasai-yuno-10000")
    stripped = strip_text_chunks(data)
    assert b"sd-ti-embedding" not in stripped and stripped != data
    pixels_only = read_bytes_detailed(stripped, name_hint="a1111-gasai-yuno-10000")
    assert (with_text.carrier, pixels_only.carrier) == ("text", "pixels")
    for result in (with_text, pixels_only):
        emb = result.embedding
        assert emb.source_format == "a1111-png" and emb.name == "gasai yuno" and emb.step == 10000
        assert emb.widths == {CLIP_L: 768} and emb.num_vectors == 8
    assert with_text.embedding.same_vectors(pixels_only.embedding)
    assert with_text.sha256 == SHA256["a1111-gasai-yuno-10000"]
    # and each carrier on its own, before any float32 cast: the very same float64 JSON numbers
    text, pixels = loads_both(data)
    assert text is not None and pixels is not None
    assert np.array_equal(text["string_to_param"]["*"], pixels["string_to_param"]["*"])
    assert {k: v for k, v in text.items() if k != "string_to_param"} == {
        k: v for k, v in pixels.items() if k != "string_to_param"
    }


def test_plain_preview_png_is_not_an_embedding(corpus: Path) -> None:
    with pytest.raises(NotAnEmbeddingError, match="not an embedding") as info:
        read_file(corpus / "a1111-gasai-yuno-16600.png")
    assert "a1111-gasai-yuno-16600.png" in str(info.value)


def test_same_run_same_name_different_vectors(corpus: Path) -> None:
    a = read_file(corpus / "a1111-gasai-yuno-1000.pt")
    b = read_file(corpus / "a1111-gasai-yuno-16600.pt")
    assert a.name == b.name and a.vectors_sha256() != b.vectors_sha256()
