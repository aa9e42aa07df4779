"""Textual-inversion embeddings on a loaded pipeline, the way A1111 applies them.

A1111 never adds tokens to the tokenizer. Its embedding database
(``modules/textual_inversion/textual_inversion.py``, ``EmbeddingDatabase``) tokenizes each
embedding's name, and the prompt tokenizer (``modules/sd_hijack_clip.py``, ``tokenize_line``)
looks for that token sequence in the prompt; where it matches, the name's tokens are replaced by
the embedding's n vectors (a multi-vector embedding takes n positions), which
``modules/sd_hijack.py`` (``EmbeddingsWithFixes``) writes over the token embeddings before the
transformer runs. So any word can be an embedding's name, even one in the vocabulary, and the
pipeline's weights are never touched: one loaded pipeline serves many embeddings in turn.

tireg does the same. :func:`apply_embeddings` only records which embeddings a pipeline has, by
prompt word; :mod:`tireg.pipelines.prompt` finds the words and overwrites the token embeddings
with a forward hook while it encodes. SDXL embeddings give ``clip_l`` to the first text encoder
and ``clip_g`` to the second, as A1111's ``textual_inversion_key`` does.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from tireg.converters.embedding import CLIP_G, CLIP_L, Embedding, encoder_for_width
from tireg.pipelines.errors import EmbeddingMismatchError

#: the embeddings applied to each live pipeline, by prompt word (weak: a pipeline can be freed)
_APPLIED: weakref.WeakKeyDictionary[Any, dict[str, Embedding]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a pipeline: its tokenizer, the model, and the embedding key it takes."""

    tokenizer: Any
    text_encoder: Any
    key: str
    width: int


def encoder_slots(pipe: Any) -> list[TextEncoderSlot]:
    """The pipeline's text encoders in order: SD 1.x/2.x one, SDXL two (``clip_l``, ``clip_g``)."""
    first = pipe.text_encoder
    second = getattr(pipe, "text_encoder_2", None)
    width = int(first.config.hidden_size)
    if second is None:
        return [TextEncoderSlot(pipe.tokenizer, first, encoder_for_width(width), width)]
    return [
        TextEncoderSlot(pipe.tokenizer, first, CLIP_L, width),
        TextEncoderSlot(pipe.tokenizer_2, second, CLIP_G, int(second.config.hidden_size)),
    ]


def _describe(embedding: Embedding) -> str:
    widths = " + ".join(f"{key} {width}" for key, width in embedding.widths.items())
    return f"{embedding.family.label}: {widths}"


def _describe_pipe(slots: Sequence[TextEncoderSlot]) -> str:
    return " + ".join(f"{s.key} {s.width}" for s in slots)


def vectors_for(embedding: Embedding, slot: TextEncoderSlot) -> np.ndarray | None:
    """The ``[n, width]`` vectors this embedding gives ``slot``'s encoder, if any fit.

    A pipeline with one text encoder takes the embedding's only matrix when its width matches,
    whatever its key says (A1111 compares shapes alone); SDXL's encoders take ``clip_l`` and
    ``clip_g`` by key.
    """
    if slot.key in (CLIP_L, CLIP_G) and slot.key in embedding.vectors:
        arr = embedding.vectors[slot.key]
    elif len(embedding.vectors) == 1:
        arr = next(iter(embedding.vectors.values()))
    else:
        return None
    return arr if arr.shape[1] == slot.width else None


def check_fits(pipe: Any, word: str, embedding: Embedding) -> None:
    """Raise one line naming both widths when the embedding cannot work on this pipeline."""
    slots = encoder_slots(pipe)
    dual = len(slots) > 1
    fits = [vectors_for(embedding, slot) is not None for slot in slots]
    if all(fits) and (dual or len(embedding.vectors) == 1):
        return
    raise EmbeddingMismatchError(
        f"embedding {word!r} ({_describe(embedding)}) cannot work on this pipeline "
        f"(text encoders: {_describe_pipe(slots)})",
        hint="render it on a model of its own family",
    )


def apply_embeddings(pipe: Any, items: Sequence[tuple[str, Embedding]]) -> None:
    """Make each embedding available in prompts under its word (the name it is installed as).

    Every embedding is checked before any is applied, so a bad one changes nothing. A word
    applied again replaces the earlier embedding, as a re-loaded A1111 embedding does.
    """
    for word, embedding in items:
        if not word or word != word.strip():
            raise EmbeddingMismatchError(f"embedding prompt word {word!r} is empty or padded")
        check_fits(pipe, word, embedding)
    table = _APPLIED.setdefault(pipe, {})
    for word, embedding in items:
        table[word] = embedding


def remove_embeddings(pipe: Any, words: Sequence[str] | None = None) -> None:
    """Forget the given words' embeddings (all when ``words`` is None); unknown words are fine."""
    table = _APPLIED.get(pipe)
    if table is None:
        return
    for word in list(table) if words is None else words:
        table.pop(word, None)


def applied_embeddings(pipe: Any) -> dict[str, Embedding]:
    """The embeddings prompts on this pipeline can use, by word."""
    return dict(_APPLIED.get(pipe, {}))


@contextmanager
def embeddings_applied(pipe: Any, items: Sequence[tuple[str, Embedding]]) -> Iterator[None]:
    """Apply embeddings for a block, then restore exactly what the pipeline had before."""
    before = applied_embeddings(pipe)
    apply_embeddings(pipe, items)
    try:
        yield
    finally:
        _APPLIED[pipe] = before
