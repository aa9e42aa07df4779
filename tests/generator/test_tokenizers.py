"""The CLIP tokenizers tireg builds from the packaged vocabulary, offline."""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from typing import Any

import pytest

from tireg.pipelines import tokenizers
from tireg.pipelines.errors import PipelineError, TokenizerVocabularyError


def _reference_tokenizer() -> Any:
    """OpenAI's own ``SimpleTokenizer`` from the carrier package, loaded by file (the ``clip``
    package itself imports torchvision)."""
    source = metadata.distribution("openai-clip").locate_file("clip/simple_tokenizer.py")
    spec = importlib.util.spec_from_file_location("clip_simple_tokenizer", str(source))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def test_a_photo_of_a_cat_gives_the_published_ids() -> None:
    for family, which in (("sd1", 1), ("sd2", 1), ("sdxl", 1), ("sdxl", 2)):
        tok = tokenizers.load_tokenizer(family, which)
        assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert len(tok) == 49408
        assert tok.model_max_length == 77


def test_files_follow_the_conversion_rules() -> None:
    directory = tokenizers.tokenizer_dir("sd1")
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    merges = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    assert vocab["!"] == 0 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["a</w>"] == 320


def test_pad_tokens_per_encoder() -> None:
    """CLIP-L pads with <|endoftext|>; the OpenCLIP encoders (SD 2.x, SDXL's G) with '!' (id 0)."""
    ids = {
        (f, w): tokenizers.load_tokenizer(f, w)("a cat", padding="max_length").input_ids
        for f, w in (("sd1", 1), ("sd2", 1), ("sdxl", 1), ("sdxl", 2))
    }
    assert ids[("sd1", 1)][-1] == ids[("sdxl", 1)][-1] == 49407
    assert ids[("sd2", 1)][-1] == ids[("sdxl", 2)][-1] == 0
    assert all(len(v) == 77 for v in ids.values())


def test_matches_openai_simple_tokenizer_on_prompts() -> None:
    reference = _reference_tokenizer()
    tok = tokenizers.load_tokenizer("sd1")
    prompts = [
        "masterpiece, best quality, (1girl:1.2), [blurry], <lora:x:0.8>",
        "an astronaut riding a horse on mars, 4k!! trending on artstation",
        "Café au lait, naïve façade, émoji 🐱🚀, ÆØÅ",
        "a painting in the style of birb-style, oil on canvas",
    ]
    for prompt in prompts:
        assert tok(prompt).input_ids[1:-1] == reference.encode(prompt), prompt


def test_built_once_then_reused() -> None:
    first = tokenizers.tokenizer_dir("sdxl", 2)
    stamp = (first / "vocab.json").stat().st_mtime_ns
    assert tokenizers.tokenizer_dir("sd2") == first
    assert (first / "vocab.json").stat().st_mtime_ns == stamp
    assert not list(first.parent.glob("*.tireg-tmp"))


def test_unknown_encoder_is_one_line() -> None:
    with pytest.raises(PipelineError, match="no CLIP tokenizer 2 for model family 'sd1'"):
        tokenizers.tokenizer_dir("sd1", 2)


def test_missing_vocabulary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tokenizers, "CARRIERS", (("no-such-carrier", "x/" + tokenizers.VOCAB_FILE),)
    )
    with pytest.raises(TokenizerVocabularyError) as err:
        tokenizers.vocabulary_file()
    assert "pip install openai-clip" in str(err.value) and "\n" not in str(err.value)


def test_a_copy_with_other_content_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed file is checked against the published SHA-256 before it is used."""
    monkeypatch.setattr(tokenizers, "VOCAB_SHA256", "0" * 64)
    with pytest.raises(TokenizerVocabularyError, match="unexpected content"):
        tokenizers.vocabulary_file()
