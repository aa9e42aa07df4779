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

An embedding of another family is refused, unless applied with ``partial=True`` (``tireg
validate --force``): then it is applied as ComfyUI applies it, since A1111 would not apply it at
all (``textual_inversion.py``, ``EmbeddingDatabase.load_from_file``: an embedding whose shape is
not the model's ``expected_shape`` goes to ``skipped_embeddings``). ComfyUI's tokenizers load the
file once per text encoder (``comfy/sd1_clip.py``, ``load_embed``, with the encoder's
``embedding_key``: ``clip_l``, or ``clip_g`` for SDXL's second encoder in ``comfy/sdxl_clip.py``,
``SDXLClipGTokenizer``), and ``SDClipModel.set_up_textual_embeddings`` drops every vector whose
width is not the encoder's ("shape mismatch when trying to apply embedding, embedding will be
ignored"): the word's positions vanish from that encoder's chunk, which is padded at its end.
So an SD 1.x embedding on SDXL reaches the first encoder only, and one that fits no encoder
leaves the prompt as if the word were not there. :func:`fit` says which parts go where.
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


def _part_for(embedding: Embedding, slot: TextEncoderSlot) -> str | None:
    """The key of the matrix this embedding gives ``slot``'s encoder, if one fits.

    A pipeline with one text encoder takes the embedding's only matrix when its width matches,
    whatever its key says (A1111 compares shapes alone); SDXL's encoders take ``clip_l`` and
    ``clip_g`` by key, and a file without the encoder's key offers its only matrix, as
    ComfyUI's ``load_embed`` offers its first.
    """
    if slot.key in (CLIP_L, CLIP_G) and slot.key in embedding.vectors:
        key = slot.key
    elif len(embedding.vectors) == 1:
        key = next(iter(embedding.vectors))
    else:
        return None
    return key if embedding.vectors[key].shape[1] == slot.width else None


def vectors_for(embedding: Embedding, slot: TextEncoderSlot) -> np.ndarray | None:
    """The ``[n, width]`` vectors this embedding gives ``slot``'s encoder, if any fit."""
    key = _part_for(embedding, slot)
    return None if key is None else embedding.vectors[key]


@dataclass(frozen=True)
class EmbeddingFit:
    """Which parts of an embedding a pipeline's text encoders take, and which they ignore."""

    word: str
    embedding: Embedding
    slots: tuple[TextEncoderSlot, ...]
    parts: tuple[str | None, ...]  # per slot: the embedding key it takes, or None

    @property
    def unused(self) -> list[str]:
        """The embedding's keys no encoder takes."""
        return [key for key in self.embedding.vectors if key not in self.parts]

    @property
    def complete(self) -> bool:
        """Every encoder gets vectors and every vector reaches an encoder: the family fits."""
        return None not in self.parts and not self.unused

    @property
    def applies(self) -> bool:
        """At least one encoder gets vectors."""
        return any(part is not None for part in self.parts)

    def mismatch(self) -> EmbeddingMismatchError:
        """The one-line refusal, naming both sides' widths."""
        return EmbeddingMismatchError(
            f"embedding {self.word!r} ({_describe(self.embedding)}) cannot work on this "
            f"pipeline (text encoders: {_describe_pipe(self.slots)})",
            hint="render it on a model of its own family",
        )

    def ignored(self) -> str:
        """One line saying what is applied where and what is ignored (for an incomplete fit)."""
        widths = self.embedding.widths
        pipe = _describe_pipe(self.slots)
        if not self.applies:
            return (
                f"{self.word!r} ({_describe(self.embedding)}) fits no text encoder ({pipe}): "
                "ignored, so its row renders the prompt without it"
            )
        pairs = list(zip(self.slots, self.parts, strict=True))
        taken = ", ".join(f"{p} {widths[p]} to {s.key}" for s, p in pairs if p is not None)
        left = [f"{s.key} {s.width} gets none" for s, p in pairs if p is None]
        left += [f"{key} {widths[key]} unused" for key in self.unused]
        what = f"{self.word!r} ({_describe(self.embedding)})"
        return f"{what} partly applied: {taken}; {', '.join(left)}"


def fit(pipe: Any, word: str, embedding: Embedding) -> EmbeddingFit:
    """How ``embedding`` fits ``pipe``'s text encoders (see the module docstring)."""
    slots = tuple(encoder_slots(pipe))
    return EmbeddingFit(word, embedding, slots, tuple(_part_for(embedding, s) for s in slots))


def check_fits(pipe: Any, word: str, embedding: Embedding) -> None:
    """Raise one line naming both widths when the embedding cannot work on this pipeline."""
    found = fit(pipe, word, embedding)
    if not found.complete:
        raise found.mismatch()


def apply_embeddings(
    pipe: Any, items: Sequence[tuple[str, Embedding]], *, partial: bool = False
) -> None:
    """Make each embedding available in prompts under its word (the name it is installed as).

    Every embedding is checked before any is applied, so a bad one changes nothing; with
    ``partial`` one that does not fit is applied where it fits and ignored elsewhere, as
    ComfyUI does. A word applied again replaces the earlier embedding, as a re-loaded A1111
    embedding does.
    """
    for word, embedding in items:
        if not word or word != word.strip():
            raise EmbeddingMismatchError(f"embedding prompt word {word!r} is empty or padded")
        if not partial:
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
def embeddings_applied(
    pipe: Any, items: Sequence[tuple[str, Embedding]], *, partial: bool = False
) -> Iterator[None]:
    """Apply embeddings for a block, then restore exactly what the pipeline had before."""
    before = applied_embeddings(pipe)
    apply_embeddings(pipe, items, partial=partial)
    try:
        yield
    finally:
        _APPLIED[pipe] = before
