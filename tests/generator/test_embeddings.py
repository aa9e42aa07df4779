"""Embeddings applied as A1111 applies them, on tiny random SD 1.x, SD 2.x and SDXL pipelines.

The sharpest check needs no reference output: an embedding whose vectors are the token
embeddings of some words must encode exactly like those words, on every encoder it goes to.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.pipelines import build_sd_pipeline, build_sdxl_pipeline
from tireg.converters.embedding import Embedding
from tireg.pipelines.embeddings import (
    applied_embeddings,
    apply_embeddings,
    embeddings_applied,
    encoder_slots,
    fit,
    remove_embeddings,
)
from tireg.pipelines.errors import EmbeddingMismatchError
from tireg.pipelines.prompt import embeddings_used, encode_prompts


@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pipes")
    return {
        "sd1": build_sd_pipeline(root / "sd1", width=768),
        "sd2": build_sd_pipeline(root / "sd2", width=1024),
        "sdxl": build_sdxl_pipeline(root / "sdxl"),
    }


def _rows(tokenizer: Any, text_encoder: Any, words: str) -> np.ndarray:
    """The token-embedding rows of ``words`` (what an embedding of those words would hold)."""
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    return text_encoder.get_input_embeddings().weight.detach()[ids].numpy().copy()


def _embedding_of(pipe: Any, words: str, name: str = "birb") -> Embedding:
    slots = encoder_slots(pipe)
    if len(slots) == 1:
        return Embedding(name, {slots[0].key: _rows(pipe.tokenizer, pipe.text_encoder, words)})
    return Embedding(
        name,
        {
            "clip_l": _rows(pipe.tokenizer, pipe.text_encoder, words),
            "clip_g": _rows(pipe.tokenizer_2, pipe.text_encoder_2, words),
        },
    )


def _same(a: Any, b: Any) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-6))


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_multi_vector_embedding_encodes_like_its_words(pipes: dict[str, Any], family: str) -> None:
    pipe = pipes[family]
    emb = _embedding_of(pipe, "cat dog")
    assert emb.num_vectors == 2
    with embeddings_applied(pipe, [("birb", emb)]):
        used = encode_prompts(pipe, ["a (birb:1.2) photo"], "birb")
    words = encode_prompts(pipe, ["a (cat dog:1.2) photo"], "cat dog")
    assert _same(used.prompt_embeds, words.prompt_embeds)
    assert _same(used.negative_prompt_embeds, words.negative_prompt_embeds)
    assert used.used == [["birb"]] and used.negative_used == ["birb"]
    with embeddings_applied(pipe, [("birb", emb), ("cat", emb)]):
        assert embeddings_used(pipe, "(cat:0.5), birb, birb, dog") == ["cat", "birb"]
    if family == "sdxl":
        # clip_l went to the first encoder and clip_g to the second: the pooled output agrees too
        assert _same(used.pooled_prompt_embeds, words.pooled_prompt_embeds)
    # without the embedding the word is just letters again
    assert not _same(
        encode_prompts(pipe, ["a (birb:1.2) photo"]).prompt_embeds, words.prompt_embeds
    )


def test_a_vocabulary_word_can_be_an_embedding_name(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    with embeddings_applied(pipe, [("cat", _embedding_of(pipe, "dog", "cat"))]):
        as_cat = encode_prompts(pipe, ["a cat"]).prompt_embeds
    assert _same(as_cat, encode_prompts(pipe, ["a dog"]).prompt_embeds)


def test_prompt_without_the_word_is_untouched(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    before = encode_prompts(pipe, ["a photo of a cat"]).prompt_embeds
    with embeddings_applied(pipe, [("birb", _embedding_of(pipe, "dog"))]):
        during = encode_prompts(pipe, ["a photo of a cat"])
    assert (during.prompt_embeds == before).all() and during.used == [[]]


def test_apply_remove_and_context_restore(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    one, two = _embedding_of(pipe, "cat", "one"), _embedding_of(pipe, "dog", "two")
    apply_embeddings(pipe, [("one", one)])
    try:
        with embeddings_applied(pipe, [("two", two), ("one", two)]):
            assert applied_embeddings(pipe) == {"one": two, "two": two}
        assert applied_embeddings(pipe) == {"one": one}
    finally:
        remove_embeddings(pipe)
    assert applied_embeddings(pipe) == {}
    remove_embeddings(pipe, ["never-applied"])


def _random(widths: dict[str, int], n: int = 2) -> Embedding:
    rng = np.random.default_rng(1)
    return Embedding(
        "x", {k: rng.standard_normal((n, w), dtype=np.float32) for k, w in widths.items()}
    )


@pytest.mark.parametrize(
    ("family", "widths", "named"),
    [
        ("sd1", {"clip_h": 1024}, "SD 2.x: clip_h 1024"),
        ("sd1", {"clip_l": 768, "clip_g": 1280}, "SDXL: clip_g 1280 + clip_l 768"),
        ("sd2", {"clip_l": 768}, "SD 1.x: clip_l 768"),
        ("sdxl", {"clip_l": 768}, "SD 1.x: clip_l 768"),
        ("sdxl", {"clip_h": 1024}, "SD 2.x: clip_h 1024"),
        ("sdxl", {"emb": 1280}, "unknown: emb 1280"),
    ],
)
def test_wrong_width_is_refused_in_one_line_naming_both(
    pipes: dict[str, Any], family: str, widths: dict[str, int], named: str
) -> None:
    pipe = pipes[family]
    good = _embedding_of(pipe, "cat")
    with pytest.raises(EmbeddingMismatchError) as err:
        # the good one is not applied either: all are checked first
        apply_embeddings(pipe, [("good", good), ("bad", _random(widths))])
    line = str(err.value)
    assert "\n" not in line and "'bad'" in line and named in line
    expected = {"sd1": "clip_l 768", "sd2": "clip_h 1024", "sdxl": "clip_l 768 + clip_g 1280"}
    assert f"text encoders: {expected[family]}" in line
    assert applied_embeddings(pipe) == {}


def test_a_single_matrix_fits_by_width_whatever_its_key(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd2"]
    with embeddings_applied(pipe, [("x", _random({"emb": 1024}))]):
        assert list(applied_embeddings(pipe)) == ["x"]


def test_empty_word_is_refused(pipes: dict[str, Any]) -> None:
    with pytest.raises(EmbeddingMismatchError):
        apply_embeddings(pipes["sd1"], [(" ", _embedding_of(pipes["sd1"], "cat"))])


def test_forced_sd1_on_sdxl_reaches_clip_l_only(pipes: dict[str, Any]) -> None:
    """ComfyUI's rule (``--force``): an SD 1.x embedding on SDXL gives its vectors to the first
    encoder, and the second encoder reads the prompt as if the word were not there."""
    pipe = pipes["sdxl"]
    sd1 = Embedding("birb", {"clip_l": _rows(pipe.tokenizer, pipe.text_encoder, "cat dog")})
    found = fit(pipe, "birb", sd1)
    assert (found.complete, found.applies, found.parts) == (False, True, ("clip_l", None))
    line = found.ignored()
    assert "\n" not in line and "clip_l 768 to clip_l" in line and "clip_g 1280 gets none" in line
    with pytest.raises(EmbeddingMismatchError):
        apply_embeddings(pipe, [("birb", sd1)])
    with embeddings_applied(pipe, [("birb", sd1)], partial=True):
        forced = encode_prompts(pipe, ["a (birb:1.2) photo"]).prompt_embeds
    as_words = encode_prompts(pipe, ["a (cat dog:1.2) photo"]).prompt_embeds
    without = encode_prompts(pipe, ["a photo"]).prompt_embeds
    assert _same(forced[..., :768], as_words[..., :768])
    assert _same(forced[..., 768:], without[..., 768:])
    assert not _same(forced, without)


@pytest.mark.parametrize(
    ("family", "widths"), [("sd1", {"clip_h": 1024}), ("sdxl", {"clip_h": 1024})]
)
def test_forced_embedding_that_fits_nothing_leaves_the_prompt_without_it(
    pipes: dict[str, Any], family: str, widths: dict[str, int]
) -> None:
    pipe = pipes[family]
    found = fit(pipe, "bad", _random(widths))
    assert not found.applies and "fits no text encoder" in found.ignored()
    with embeddings_applied(pipe, [("bad", _random(widths))], partial=True):
        forced = encode_prompts(pipe, ["a bad photo, bad"])
    assert _same(forced.prompt_embeds, encode_prompts(pipe, ["a photo,"]).prompt_embeds)
    assert forced.used == [[]]


def test_forced_sdxl_on_sd1_takes_clip_l(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    sdxl = _embedding_of(pipes["sdxl"], "cat")
    found = fit(pipe, "x", sdxl)
    assert found.parts == ("clip_l",) and found.unused == ["clip_g"] and not found.complete
    assert "clip_g 1280 unused" in found.ignored()
