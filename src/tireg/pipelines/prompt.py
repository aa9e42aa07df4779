"""A1111 prompt syntax to diffusers ``prompt_embeds``, with A1111's chunking and emphasis.

Written from A1111's code, which this module follows rule by rule (none of it is copied):

* ``modules/prompt_parser.py``, ``parse_prompt_attention``: ``(a)`` multiplies by 1.1, ``[a]``
  divides by 1.1, ``(a:w)`` multiplies by w, ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal,
  unclosed brackets still apply, ``BREAK`` starts a new chunk, runs of equal weight merge.
* ``modules/sd_hijack_clip.py``, ``FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line``: the
  prompt becomes chunks of 75 tokens, each wrapped in BOS and EOS and padded to 77; a chunk that
  would break mid-phrase moves back to just after the last comma when that comma is at most
  ``comma_padding_backtrack`` (20) tokens back; an embedding's vectors never straddle two
  chunks. ``process_tokens``: after the first EOS the rest is the pad token, EOS for OpenAI's
  CLIP (SD 1.x, SDXL's first encoder) and id 0 (``!``) for OpenCLIP (SD 2.x, SDXL's second:
  ``sd_hijack_open_clip.py`` sets ``id_pad = 0``), whatever the tokenizer's config says; every
  chunk is encoded separately and the results concatenated.
* ``modules/sd_emphasis.py``, ``EmphasisOriginal``: each chunk's hidden states are multiplied by
  their token's weight, then rescaled so the chunk's mean is what it was.
* ``encode_with_transformers``: SD 1.x with Clip skip n > 1 takes ``hidden_states[-n]`` and the
  final layer norm; SD 2.x ignores Clip skip (``sd_hijack_open_clip.py``); SDXL takes the
  penultimate layer of both encoders, concatenated, and the pooled output of the second
  encoder's first chunk.
* ``modules/sd_samplers_cfg_denoiser.py``, ``pad_cond_uncond``: a shorter prompt or negative
  prompt is padded with the encoding of the empty prompt, one chunk at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tireg.converters.embedding import CLIP_G, CLIP_H, CLIP_L
from tireg.pipelines.embeddings import (
    TextEncoderSlot,
    applied_embeddings,
    encoder_slots,
    vectors_for,
)
from tireg.pipelines.errors import PromptError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tireg.converters.embedding import Embedding

CHUNK_LENGTH = 75
COMMA_PADDING_BACKTRACK = 20
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
#: the marker parse_prompt_attention emits for BREAK (A1111 uses the same pair)
BREAK = ("BREAK", -1.0)

_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes, and a lone backslash
    \(|\[|                        # openers
    :([+-]?[.\d]+)\)|             # (text:weight) closer
    \)|]|                         # closers
    [^\\()\[\]:]+|                # plain text
    :                             # a colon that closes nothing
    """,
    re.X,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs exactly as A1111's parser does.

    BREAK comes out as ``("BREAK", -1.0)``. An empty prompt is ``[("", 1.0)]``.
    """
    res: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for match in _ATTENTION.finditer(text):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:
                raise PromptError(
                    f"prompt weight {weight!r} is not a number", hint="write it like (word:1.2)"
                ) from None
            multiply(round_open.pop(), factor)
        elif piece == ")" and round_open:
            multiply(round_open.pop(), ROUND_MULTIPLIER)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK_SPLIT.split(piece)):
                if i:
                    res.append(list(BREAK))
                res.append([part, 1.0])
    for start in round_open:
        multiply(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply(start, SQUARE_MULTIPLIER)
    if not res:
        res = [["", 1.0]]
    merged: list[list[Any]] = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(str(t), float(w)) for t, w in merged]


@dataclass
class PromptChunk:
    """77 token ids, their weights, and where embedding vectors go: ``(offset, word)``."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, str]] = field(default_factory=list)


#: A1111's pad id after the first EOS for OpenCLIP encoders (``!``)
OPENCLIP_PAD = 0


@dataclass(frozen=True)
class _Special:
    bos: int
    eos: int
    comma: int | None


def _special(tokenizer: Any) -> _Special:
    """BOS, EOS and comma ids (the comma drives A1111's chunk backtrack)."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    return _Special(
        bos=int(tokenizer.bos_token_id),
        eos=int(tokenizer.eos_token_id),
        comma=None if comma in (None, tokenizer.unk_token_id) else int(comma),
    )


def _ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _lookup(tokenizer: Any, lengths: dict[str, int]) -> dict[int, list[tuple[list[int], str, int]]]:
    """First token -> [(name tokens, word, vector count)], longest names first (A1111's order)."""
    table: dict[int, list[tuple[list[int], str, int]]] = {}
    for word, count in lengths.items():
        ids = _ids(tokenizer, [word])[0]
        if ids:
            table.setdefault(ids[0], []).append((ids, word, count))
    for entries in table.values():
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
    return table


def tokenize_prompt(
    text: str,
    tokenizer: Any,
    embeddings: dict[str, int] | None = None,
    *,
    comma_padding_backtrack: int = COMMA_PADDING_BACKTRACK,
) -> list[PromptChunk]:
    """A prompt as A1111's chunks: each BOS + 75 tokens + EOS, padded with EOS.

    ``embeddings`` maps a prompt word to its number of vectors; where the word's tokens appear,
    that many placeholder positions are reserved (carrying the span's weight) and recorded in
    the chunk's ``fixes``.
    """
    special = _special(tokenizer)
    lookup = _lookup(tokenizer, embeddings or {})
    parsed = parse_prompt_attention(text)
    tokenized = _ids(tokenizer, [t for t, _ in parsed])
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    last_comma = -1

    def close(current: PromptChunk) -> PromptChunk:
        nonlocal last_comma
        pad = CHUNK_LENGTH - len(current.tokens)
        current.tokens = [special.bos, *current.tokens, *[special.eos] * pad, special.eos]
        current.multipliers = [1.0, *current.multipliers, *[1.0] * pad, 1.0]
        current.fixes = [(offset + 1, word) for offset, word in current.fixes]
        last_comma = -1
        chunks.append(current)
        return PromptChunk()

    for tokens, (part, weight) in zip(tokenized, parsed, strict=True):
        if (part, weight) == BREAK:
            chunk = close(chunk)
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == special.comma:
                last_comma = len(chunk.tokens)
            elif (
                comma_padding_backtrack
                and len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= comma_padding_backtrack
            ):
                cut = last_comma + 1
                # A1111 moves the tokens but leaves the chunk's fixes behind, so an embedding
                # after the comma loses its vectors there; tireg moves the fixes with them.
                moved = PromptChunk(
                    chunk.tokens[cut:],
                    chunk.multipliers[cut:],
                    [(o - cut, w) for o, w in chunk.fixes if o >= cut],
                )
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                chunk.fixes = [(o, w) for o, w in chunk.fixes if o < cut]
                close(chunk)
                chunk = moved
            if len(chunk.tokens) == CHUNK_LENGTH:
                chunk = close(chunk)
            match = next(
                (
                    (ids, word, count)
                    for ids, word, count in lookup.get(token, [])
                    if tokens[position : position + len(ids)] == ids
                ),
                None,
            )
            if match is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            ids, word, count = match
            if len(chunk.tokens) + count > CHUNK_LENGTH:
                chunk = close(chunk)
            chunk.fixes.append((len(chunk.tokens), word))
            # A1111 reserves id 0 for the positions the vectors overwrite
            chunk.tokens.extend([0] * count)
            chunk.multipliers.extend([weight] * count)
            position += len(ids)
    if chunk.tokens or not chunks:
        close(chunk)
    return chunks


@contextmanager
def _vectors_written(
    text_encoder: Any, rows: Sequence[Sequence[tuple[int, torch.Tensor]]]
) -> Iterator[None]:
    """Overwrite token embeddings at the given (offset, vectors) of each row while encoding.

    A forward hook on the input embedding layer plays the part of A1111's
    ``EmbeddingsWithFixes``; it is removed again when the block ends.
    """
    import torch

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not any(rows):
            return output
        pieces = []
        for row, fixes in zip(output, rows, strict=True):
            for offset, vectors in fixes:
                vec = vectors.to(device=row.device, dtype=row.dtype)
                row = torch.cat([row[:offset], vec, row[offset + vec.shape[0] :]])
            pieces.append(row)
        return torch.stack(pieces)

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class EncodedChunks:
    """One encoder's output for a list of prompts: ``hidden`` [prompts, 77 * chunks, width]."""

    hidden: list[torch.Tensor]
    pooled: list[torch.Tensor | None]
    used: list[list[str]]


def _slot_vectors(
    slot: TextEncoderSlot, embeddings: dict[str, Embedding]
) -> list[tuple[str, np.ndarray]]:
    """(word, vectors) of the embeddings that have vectors for this encoder."""
    found = ((word, vectors_for(embedding, slot)) for word, embedding in embeddings.items())
    return [(word, arr) for word, arr in found if arr is not None]


def _without_words(chunk: PromptChunk, dropped: dict[str, int], pad: int) -> PromptChunk:
    """``chunk`` with the positions of ``dropped`` words (word -> positions reserved) removed
    and the chunk padded at its end, as ComfyUI's ``SDClipModel.set_up_textual_embeddings``
    (``comfy/sd1_clip.py``) drops an embedding whose width is not the encoder's."""
    tokens, multipliers, fixes = [], [], []
    skip: dict[int, int] = {offset: dropped[w] for offset, w in chunk.fixes if w in dropped}
    position = 0
    while position < len(chunk.tokens):
        if position in skip:
            position += skip[position]
            continue
        tokens.append(chunk.tokens[position])
        multipliers.append(chunk.multipliers[position])
        position += 1
    for offset, word in chunk.fixes:
        if word not in dropped:
            fixes.append((offset - sum(n for o, n in skip.items() if o < offset), word))
    missing = len(chunk.tokens) - len(tokens)
    return PromptChunk(tokens + [pad] * missing, multipliers + [1.0] * missing, fixes)


def _encode_slot(
    slot: TextEncoderSlot,
    texts: Sequence[str],
    *,
    layer: str,
    clip_skip: int,
    embeddings: dict[str, Embedding],
) -> EncodedChunks:
    """Encode every chunk of every text in one batch, then emphasise and regroup per text."""
    import torch

    vectors = {word: torch.from_numpy(arr.copy()) for word, arr in _slot_vectors(slot, embeddings)}
    # an embedding applied partially (``--force``) with nothing for this encoder still takes
    # its positions while the prompt is cut into chunks, then loses them (ComfyUI's rule)
    dropped = {w: e.num_vectors for w, e in embeddings.items() if w not in vectors}
    counts = {**dropped, **{word: int(v.shape[0]) for word, v in vectors.items()}}
    special = _special(slot.tokenizer)
    pad = OPENCLIP_PAD if slot.key in (CLIP_H, CLIP_G) else special.eos
    per_text = [tokenize_prompt(text, slot.tokenizer, counts) for text in texts]
    if dropped:
        per_text = [[_without_words(c, dropped, special.eos) for c in cs] for cs in per_text]
    flat = [chunk for chunks in per_text for chunk in chunks]
    tokens = []
    for chunk in flat:
        row = list(chunk.tokens)
        first_eos = row.index(special.eos)
        row[first_eos + 1 :] = [pad] * (len(row) - first_eos - 1)
        tokens.append(row)
    encoder = slot.text_encoder
    device = encoder.device
    ids = torch.tensor(tokens, dtype=torch.long, device=device)
    fixes = [[(offset, vectors[word]) for offset, word in chunk.fixes] for chunk in flat]
    with _vectors_written(encoder, fixes), torch.no_grad():
        out = encoder(ids, output_hidden_states=True)
    if layer == "penultimate":
        z = out.hidden_states[-2]
    elif clip_skip > 1:
        z = getattr(encoder, "text_model", encoder).final_layer_norm(out.hidden_states[-clip_skip])
    else:
        z = out.last_hidden_state
    pooled_all = getattr(out, "text_embeds", None)
    weights = torch.tensor([c.multipliers for c in flat], dtype=z.dtype, device=z.device)
    hidden, pooled, used = [], [], []
    start = 0
    for chunks in per_text:
        parts = []
        for i in range(start, start + len(chunks)):
            original_mean = z[i].mean()
            weighted = z[i] * weights[i].unsqueeze(-1)
            parts.append(weighted * (original_mean / weighted.mean()))
        hidden.append(torch.cat(parts))
        pooled.append(None if pooled_all is None else pooled_all[start])
        used.append(list(dict.fromkeys(w for c in chunks for _, w in c.fixes)))
        start += len(chunks)
    return EncodedChunks(hidden, pooled, used)


def embeddings_used(pipe: Any, text: str) -> list[str]:
    """The applied embedding words a prompt uses, in order, without encoding anything.

    This is what A1111 lists in the infotext's ``TI hashes`` (``sd_hijack_clip.py``,
    ``forward``): the embeddings whose vectors were written into the prompt's chunks.
    """
    slot = encoder_slots(pipe)[0]
    counts = {
        word: int(arr.shape[0]) for word, arr in _slot_vectors(slot, applied_embeddings(pipe))
    }
    chunks = tokenize_prompt(text, slot.tokenizer, counts)
    return list(dict.fromkeys(word for chunk in chunks for _, word in chunk.fixes))


@dataclass
class PromptEmbeds:
    """What the diffusers pipeline takes instead of prompt strings, one row per image.

    ``used`` and ``negative_used`` list the embedding words each prompt used (for ``TI hashes``).
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    used: list[list[str]] = field(default_factory=list)
    negative_used: list[str] = field(default_factory=list)

    def pipeline_kwargs(self, rows: slice | None = None) -> dict[str, Any]:
        """Keyword arguments for the pipeline call, for a slice of the images."""
        rows = rows or slice(None)
        kwargs: dict[str, Any] = {
            "prompt_embeds": self.prompt_embeds[rows],
            "negative_prompt_embeds": self.negative_prompt_embeds[rows],
        }
        if self.pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds[rows]
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds[rows]  # type: ignore[index]
        return kwargs


def _pad_to(hidden: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    import torch

    missing = (length - hidden.shape[0]) // empty.shape[0]
    return torch.cat([hidden, *[empty] * missing]) if missing > 0 else hidden


def encode_prompts(
    pipe: Any, prompts: Sequence[str], negative: str = "", *, clip_skip: int = 1
) -> PromptEmbeds:
    """Encode one prompt per image and the shared negative prompt, all to the same length.

    The embeddings applied to ``pipe`` (:func:`tireg.pipelines.embeddings.apply_embeddings`)
    are found by word, inside weighted spans too.
    """
    import torch

    if clip_skip < 1:
        raise PromptError(f"Clip skip must be 1 or more, not {clip_skip}")
    slots = encoder_slots(pipe)
    dual = len(slots) > 1
    embeddings = applied_embeddings(pipe)
    texts = [*prompts, negative, ""]
    per_slot = []
    for slot in slots:
        layer = "penultimate" if dual else "last"
        skip = clip_skip if (not dual and slot.key == CLIP_L) else 1
        per_slot.append(
            _encode_slot(slot, texts, layer=layer, clip_skip=skip, embeddings=embeddings)
        )
    # SDXL: both encoders see the same tokens, so their chunk counts agree; join the widths
    hidden = [torch.cat([enc.hidden[i] for enc in per_slot], dim=-1) for i in range(len(texts))]
    empty = hidden.pop()
    length = max(h.shape[0] for h in hidden)
    padded = [_pad_to(h, length, empty) for h in hidden]
    count = len(prompts)
    result = PromptEmbeds(
        prompt_embeds=torch.stack(padded[:count]),
        negative_prompt_embeds=torch.stack([padded[count]] * count),
        used=per_slot[0].used[:count],
        negative_used=per_slot[0].used[count],
    )
    if dual:
        pooled = [p for p in per_slot[-1].pooled[: count + 1] if p is not None]
        result.pooled_prompt_embeds = torch.stack(pooled[:count])
        result.negative_pooled_prompt_embeds = torch.stack([pooled[count]] * count)
    return result
