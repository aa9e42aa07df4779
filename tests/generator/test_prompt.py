"""A1111 prompt syntax, 75-token chunks and emphasis, checked against rules read from A1111's code.

The parser cases are the doctest examples of A1111's ``modules/prompt_parser.py``
(``parse_prompt_attention``); the chunk rules come from ``modules/sd_hijack_clip.py``
(``tokenize_line``: 75 tokens per chunk, BOS/EOS, comma backtrack of 20, embeddings never split)
and the emphasis from ``modules/sd_emphasis.py`` (``EmphasisOriginal``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.pipelines import build_sd_pipeline, build_sdxl_pipeline, load_clip_tokenizer
from tireg.pipelines.errors import PromptError
from tireg.pipelines.prompt import (
    CHUNK_LENGTH,
    encode_prompts,
    parse_prompt_attention,
    tokenize_prompt,
)

# -- the parser, on A1111's own docstring examples ------------------------------------------------

A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), A1111_EXAMPLES)
def test_parser_matches_a1111_docstring(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


def test_parser_square_brackets_weights_and_escapes() -> None:
    assert parse_prompt_attention("[word]") == [("word", 1 / 1.1)]
    assert parse_prompt_attention("(word:1.2)") == [("word", 1.2)]
    assert parse_prompt_attention("\\\\ and \\)") == [("\\ and )", 1.0)]
    # an unmatched closer is plain text, as in A1111
    assert parse_prompt_attention("a) b") == [("a) b", 1.0)]
    assert parse_prompt_attention("") == [("", 1.0)]


def test_parser_break() -> None:
    assert parse_prompt_attention("a cat BREAK a dog") == [
        ("a cat", 1.0),
        ("BREAK", -1.0),
        ("a dog", 1.0),
    ]
    # BREAK is a whole word only
    assert parse_prompt_attention("BREAKFAST") == [("BREAKFAST", 1.0)]


def test_bad_weight_is_one_line() -> None:
    with pytest.raises(PromptError) as err:
        parse_prompt_attention("(cat:1.2.3)")
    assert "\n" not in str(err.value) and "1.2.3" in str(err.value)


# -- chunks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_clip_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


def _words(n: int, word: str = "a") -> str:
    return " ".join([word] * n)


def _body(chunk: Any, tokenizer: Any) -> list[int]:
    """The chunk's prompt tokens, without BOS and the EOS padding."""
    eos = tokenizer.eos_token_id
    tokens = chunk.tokens[1:]
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def test_every_chunk_is_bos_75_eos(tokenizer: Any) -> None:
    a_id = tokenizer.convert_tokens_to_ids("a</w>")
    for count, chunks in ((1, 1), (75, 1), (76, 2), (150, 2), (151, 3)):
        result = tokenize_prompt(_words(count), tokenizer)
        assert len(result) == chunks, count
        for chunk in result:
            assert len(chunk.tokens) == CHUNK_LENGTH + 2 == len(chunk.multipliers)
            assert chunk.tokens[0] == tokenizer.bos_token_id
            assert chunk.tokens[-1] == tokenizer.eos_token_id
        assert sum(_body(c, tokenizer).count(a_id) for c in result) == count


def test_empty_prompt_is_one_padded_chunk(tokenizer: Any) -> None:
    (chunk,) = tokenize_prompt("", tokenizer)
    assert chunk.tokens == [tokenizer.bos_token_id] + [tokenizer.eos_token_id] * 76


def test_break_starts_a_new_chunk(tokenizer: Any) -> None:
    chunks = tokenize_prompt("a a BREAK a", tokenizer)
    assert [len(_body(c, tokenizer)) for c in chunks] == [2, 1]


def test_comma_backtrack_moves_the_phrase_after_the_last_comma(tokenizer: Any) -> None:
    # 70 words, a comma (token 71), then 10 words: the chunk fills at 75 tokens, the comma is
    # 5 tokens back (<= 20), so the 4 words after it move to the next chunk with the rest
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks = tokenize_prompt(_words(70) + " , " + _words(10), tokenizer)
    first, second = (_body(c, tokenizer) for c in chunks)
    assert len(first) == 71 and first[-1] == comma
    assert len(second) == 10 and comma not in second


def test_no_backtrack_when_the_comma_is_too_far(tokenizer: Any) -> None:
    # the comma is 25 tokens back when the chunk fills: the chunk breaks at 75 exactly
    chunks = tokenize_prompt(_words(50) + " , " + _words(40), tokenizer)
    assert [len(_body(c, tokenizer)) for c in chunks] == [75, 16]
    assert (
        len(
            tokenize_prompt(_words(70) + " , " + _words(10), tokenizer, comma_padding_backtrack=0)[
                0
            ].tokens
        )
        == 77
    )


def test_weights_land_on_their_tokens(tokenizer: Any) -> None:
    (chunk,) = tokenize_prompt("a (cat:1.5) a [dog]", tokenizer)
    cat = tokenizer("cat", add_special_tokens=False)["input_ids"]
    dog = tokenizer("dog", add_special_tokens=False)["input_ids"]
    assert len(cat) == len(dog) == 1
    body = _body(chunk, tokenizer)
    weights = chunk.multipliers[1 : 1 + len(body)]
    assert weights[body.index(cat[0])] == 1.5
    assert weights[body.index(dog[0])] == pytest.approx(1 / 1.1)
    assert [w for t, w in zip(body, weights, strict=True) if t not in (cat[0], dog[0])] == [
        1.0,
        1.0,
    ]
    assert chunk.multipliers[0] == chunk.multipliers[-1] == 1.0


def test_embedding_inside_a_weighted_span(tokenizer: Any) -> None:
    (chunk,) = tokenize_prompt("a (birb:1.3) a", tokenizer, {"birb": 3})
    assert chunk.fixes == [(2, "birb")]
    assert chunk.tokens[2:5] == [0, 0, 0]
    assert chunk.multipliers[2:5] == [1.3, 1.3, 1.3]
    assert chunk.multipliers[1] == chunk.multipliers[5] == 1.0


def test_embedding_vectors_never_straddle_two_chunks(tokenizer: Any) -> None:
    first, second = tokenize_prompt(_words(74) + " birb", tokenizer, {"birb": 3})
    assert first.fixes == [] and len(_body(first, tokenizer)) == 74
    assert second.fixes == [(1, "birb")]


def test_comma_backtrack_carries_an_embedding_with_its_phrase(tokenizer: Any) -> None:
    # A1111 would leave the fix behind in the first chunk; tireg moves it with its tokens
    first, second = tokenize_prompt(_words(70) + " , birb " + _words(5), tokenizer, {"birb": 3})
    assert first.fixes == [] and len(_body(first, tokenizer)) == 71
    assert second.fixes == [(1, "birb")] and second.tokens[1:4] == [0, 0, 0]


def test_longest_embedding_name_wins(tokenizer: Any) -> None:
    (chunk,) = tokenize_prompt("cat dog", tokenizer, {"cat": 1, "cat dog": 2})
    assert chunk.fixes == [(1, "cat dog")]


# -- encoding ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_sd_pipeline(tmp_path_factory.mktemp("sd1"), width=768)


def test_long_prompt_and_negative_get_equal_lengths(sd1: Any) -> None:
    embeds = encode_prompts(sd1, [_words(80), "a"], "")
    assert tuple(embeds.prompt_embeds.shape) == (2, 154, 768)
    assert embeds.negative_prompt_embeds.shape == embeds.prompt_embeds.shape
    # the short ones are padded with the empty prompt's encoding, one chunk at a time
    empty = encode_prompts(sd1, [""]).prompt_embeds[0]
    assert (embeds.negative_prompt_embeds[0, 77:] == empty).all()
    assert (embeds.prompt_embeds[1, 77:] == empty).all()
    assert (embeds.prompt_embeds[1, :77] != empty).any()


def test_emphasis_multiplies_then_restores_the_mean(sd1: Any) -> None:
    plain = encode_prompts(sd1, ["a cat"]).prompt_embeds[0]
    weighted = encode_prompts(sd1, ["a (cat:1.5)"]).prompt_embeds[0]
    assert (encode_prompts(sd1, ["a (cat:1)"]).prompt_embeds[0] == plain).all()
    ratio = weighted / plain
    # every position is rescaled by the same factor (the mean's), the weighted one 1.5x more
    rescale = ratio[1, 0]
    assert ratio[1].sub(rescale).abs().max() < 1e-4
    assert ratio[2].div(rescale).sub(1.5).abs().max() < 1e-4
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4)


def test_clip_skip_takes_an_earlier_layer_then_the_final_norm(sd1: Any) -> None:
    import torch

    tokens = tokenize_prompt("a cat", sd1.tokenizer)[0].tokens
    with torch.no_grad():
        out = sd1.text_encoder(torch.tensor([tokens]), output_hidden_states=True)
        expected = sd1.text_encoder.final_layer_norm(out.hidden_states[-2])[0]
    skipped = encode_prompts(sd1, ["a cat"], clip_skip=2).prompt_embeds[0]
    assert torch.allclose(skipped, expected, atol=1e-6)
    assert not torch.allclose(skipped, encode_prompts(sd1, ["a cat"]).prompt_embeds[0])
    with pytest.raises(PromptError):
        encode_prompts(sd1, ["a"], clip_skip=0)


def test_sdxl_concatenates_both_encoders_and_pools_the_second(tmp_path: Path) -> None:
    import torch

    pipe = build_sdxl_pipeline(tmp_path)
    embeds = encode_prompts(pipe, [_words(80)], "ugly")
    assert tuple(embeds.prompt_embeds.shape) == (1, 154, 768 + 1280)
    assert embeds.negative_prompt_embeds.shape == embeds.prompt_embeds.shape
    assert embeds.pooled_prompt_embeds is not None
    assert embeds.negative_pooled_prompt_embeds is not None
    assert tuple(embeds.pooled_prompt_embeds.shape) == (1, 32)
    # the penultimate layer of each encoder, as diffusers' SDXL pipeline takes it
    chunk = tokenize_prompt("ugly", pipe.tokenizer_2)[0].tokens
    eos = chunk.index(pipe.tokenizer_2.eos_token_id)
    # A1111 pads OpenCLIP's chunks with id 0 after the first EOS
    chunk[eos + 1 :] = [0] * (len(chunk) - eos - 1)
    with torch.no_grad():
        out = pipe.text_encoder_2(torch.tensor([chunk]), output_hidden_states=True)
    assert torch.allclose(embeds.negative_prompt_embeds[0, :77, 768:], out.hidden_states[-2][0])
    assert torch.allclose(embeds.negative_pooled_prompt_embeds[0], out.text_embeds[0])


def test_sd1_pads_with_eos_and_sd2_with_id_0(sd1: Any, tmp_path: Path) -> None:
    import torch

    sd2 = build_sd_pipeline(tmp_path, width=1024)
    eos = sd1.tokenizer.eos_token_id
    for pipe, pad, other in ((sd1, eos, 0), (sd2, 0, eos)):
        tokens = tokenize_prompt("a cat", pipe.tokenizer)[0].tokens
        end = tokens.index(eos)

        def encoded(fill: int, tokens: list[int] = tokens, end: int = end, pipe: Any = pipe) -> Any:
            ids = tokens[: end + 1] + [fill] * (len(tokens) - end - 1)
            with torch.no_grad():
                return pipe.text_encoder(torch.tensor([ids])).last_hidden_state[0]

        got = encode_prompts(pipe, ["a cat"]).prompt_embeds[0]
        # batched against unbatched: equal up to float rounding, and the pad really matters
        assert torch.allclose(got, encoded(pad), atol=1e-5)
        assert not torch.allclose(got, encoded(other), atol=1e-3)


def test_clip_skip_is_ignored_where_a1111_ignores_it(tmp_path: Path) -> None:
    """A1111 applies Clip skip to SD 1.x only: its SD 2.x (OpenCLIP) and SDXL paths ignore it."""
    import torch

    for pipe in (build_sd_pipeline(tmp_path / "sd2", width=1024), build_sdxl_pipeline(tmp_path)):
        plain, skipped = (encode_prompts(pipe, ["a cat"], clip_skip=n) for n in (1, 2))
        assert torch.equal(plain.prompt_embeds, skipped.prompt_embeds)
