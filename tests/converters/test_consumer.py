"""A real consumer agrees: diffusers' load_textual_inversion reads every file we write.

Each test writes an embedding with tireg, loads the file into a tiny real pipeline (built once per
session, see tests/pipelines.py) and checks the text encoder's new token rows are the vectors we
wrote, bit for bit. SDXL uses diffusers' documented two-call pattern (clip_l into text_encoder,
clip_g into text_encoder_2). PNG cards have no diffusers reader; their vectors are decoded by us
from each carrier separately and then handed to diffusers as tensors.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.pipelines import token_rows
from tireg.converters import CLIP_G, CLIP_L, Embedding, read_bytes, write_file
from tireg.converters.writing import EXTENSIONS

from .test_png_card import strip_text_chunks

_counter = itertools.count()


def fresh_token() -> str:
    """Tokens must be new to the (session-shared) tokenizer."""
    return f"<tok{next(_counter)}>"


def sd_embedding(name: str, n: int, width: int) -> Embedding:
    rng = np.random.default_rng(n * width)
    encoder = {768: CLIP_L, 1024: "clip_h"}[width]
    return Embedding(
        name=name,
        vectors={encoder: rng.standard_normal((n, width)).astype(np.float32)},
        step=100,
        trained_on_hash="abcdef0123",
        trained_on_name="sd-base",
    )


def sdxl_embedding(name: str, n: int) -> Embedding:
    rng = np.random.default_rng(n)
    return Embedding(
        name=name,
        vectors={
            CLIP_L: rng.standard_normal((n, 768)).astype(np.float32),
            CLIP_G: rng.standard_normal((n, 1280)).astype(np.float32),
        },
    )


def assert_rows(pipe: Any, token: str, expected: np.ndarray, *, second: bool = False) -> None:
    tokenizer = pipe.tokenizer_2 if second else pipe.tokenizer
    encoder = pipe.text_encoder_2 if second else pipe.text_encoder
    rows = token_rows(tokenizer, encoder, token, expected.shape[0])
    assert rows.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    "fmt", ["a1111-pt", "diffusers-bin", "diffusers-safetensors", "safetensors", "tireg"]
)
@pytest.mark.parametrize("n", [1, 4])
def test_sd1_files_load_into_diffusers(sd1_pipeline: Any, out_dir: Path, fmt: str, n: int) -> None:
    token = fresh_token()
    emb = sd_embedding(token, n, 768)
    (path,) = write_file(emb, out_dir / f"e{EXTENSIONS[fmt]}", fmt)
    # a1111-pt and diffusers files name their own token; kohya/tireg files need token= (as A1111's
    # "file stem" rule), exactly as diffusers documents for emb_params files
    own_token = fmt in ("a1111-pt", "diffusers-bin", "diffusers-safetensors")
    sd1_pipeline.load_textual_inversion(str(path), token=None if own_token else token)
    assert_rows(sd1_pipeline, token, emb.vectors[CLIP_L])
    prompt = sd1_pipeline.maybe_convert_prompt(f"a {token} photo", sd1_pipeline.tokenizer)
    assert prompt.count(token) == n  # tok tok_1 ... tok_{n-1}


@pytest.mark.parametrize("fmt", ["a1111-pt", "diffusers-safetensors"])
def test_sd2_width_files_load_into_a_1024_wide_encoder(
    sd2_pipeline: Any, out_dir: Path, fmt: str
) -> None:
    token = fresh_token()
    emb = sd_embedding(token, 3, 1024)
    (path,) = write_file(emb, out_dir / f"e{EXTENSIONS[fmt]}", fmt)
    sd2_pipeline.load_textual_inversion(str(path))
    assert_rows(sd2_pipeline, token, emb.vectors["clip_h"])


def test_wrong_width_is_refused_by_diffusers_too(sd1_pipeline: Any, out_dir: Path) -> None:
    """Sanity check of the consumer: a 1024-wide file we write does not fit SD 1.x."""
    emb = sd_embedding(fresh_token(), 1, 1024)
    (path,) = write_file(emb, out_dir / "e.safetensors", "diffusers-safetensors")
    with pytest.raises(ValueError):
        sd1_pipeline.load_textual_inversion(str(path))


def _two_calls(pipe: Any, token: str, clip_l: torch.Tensor, clip_g: torch.Tensor) -> None:
    pipe.load_textual_inversion(
        clip_l, token=token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        clip_g, token=token, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )


@pytest.mark.parametrize("fmt", ["safetensors", "a1111-pt", "tireg"])
def test_sdxl_clip_l_clip_g_files_load_with_two_calls(
    sdxl_pipeline: Any, out_dir: Path, fmt: str
) -> None:
    token = fresh_token()
    emb = sdxl_embedding(token, 2)
    (path,) = write_file(emb, out_dir / f"e{EXTENSIONS[fmt]}", fmt)
    state = load_file(path) if fmt != "a1111-pt" else torch.load(path, weights_only=True)
    _two_calls(sdxl_pipeline, token, state["clip_l"], state["clip_g"])
    assert_rows(sdxl_pipeline, token, emb.vectors[CLIP_L])
    assert_rows(sdxl_pipeline, token, emb.vectors[CLIP_G], second=True)


@pytest.mark.parametrize("fmt", ["diffusers-bin", "diffusers-safetensors"])
def test_sdxl_pair_loads_like_the_diffusers_sdxl_script_output(
    sdxl_pipeline: Any, out_dir: Path, fmt: str
) -> None:
    token = fresh_token()
    emb = sdxl_embedding(token, 3)
    first, second = write_file(emb, out_dir / f"learned_embeds{EXTENSIONS[fmt]}", fmt)
    assert second.name == f"learned_embeds_2{EXTENSIONS[fmt]}"
    pipe = sdxl_pipeline
    pipe.load_textual_inversion(
        str(first), text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        str(second), text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )
    assert_rows(pipe, token, emb.vectors[CLIP_L])
    assert_rows(pipe, token, emb.vectors[CLIP_G], second=True)


def test_png_card_vectors_from_either_carrier_are_what_diffusers_gets(
    sd1_pipeline: Any, out_dir: Path
) -> None:
    token = fresh_token()
    emb = sd_embedding(token, 2, 768)
    (path,) = write_file(emb, out_dir / "card.png", "png")
    card = path.read_bytes()
    from_text = read_bytes(card, name_hint="card")
    from_pixels = read_bytes(strip_text_chunks(card), name_hint="card")
    assert from_text.same_vectors(emb) and from_pixels.same_vectors(emb)
    sd1_pipeline.load_textual_inversion(torch.from_numpy(from_pixels.vectors[CLIP_L]), token=token)
    assert_rows(sd1_pipeline, token, emb.vectors[CLIP_L])
