"""The trained vectors, and how they reach the text encoders.

Only the new vectors are parameters: one ``[n, width]`` tensor per text encoder (two for SDXL).
The token table itself is never resized, written or given to the optimizer; the diffusers
recipe instead trains the whole 49,408-row table, keeps AdamW moments for all of it and copies
the other rows back after every step.

The vectors reach the encoder through :class:`PlaceholderEmbedding`, a stand-in for the
encoder's token-embedding lookup that writes the vectors at the placeholder positions of each
prompt. The positions are handed to it just before the encoder runs, as A1111's
``modules/sd_hijack.py`` (``EmbeddingsWithFixes``) does: the token ids themselves stay ordinary
in-vocabulary ids, so everything else in the encoder that reads them (the pooled output looks for
the end-of-text token) works unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tireg.train.errors import InitTextError

#: what stands for the embedding in a prompt while it is tokenized (never a real word)
MARKER = "\x00tireg-placeholder\x00"


class PlaceholderEmbedding(nn.Module):
    """The encoder's frozen token table plus the trained vectors at the placeholder slots."""

    def __init__(self, table: nn.Embedding, vectors: nn.Parameter) -> None:
        super().__init__()
        self.table = table
        self.vectors = vectors
        self.slots: torch.Tensor | None = None  # [B, L] bool, set by :meth:`placing`

    @property
    def weight(self) -> torch.Tensor:
        """The table's weight (transformers reads ``get_input_embeddings().weight``)."""
        return self.table.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        embeds = self.table(ids)
        if self.slots is None:
            return embeds
        # masked_scatter fills the slots in row-major order: each occurrence of the placeholder
        # takes vectors 0..n-1 in turn
        occurrences = int(self.slots.sum()) // self.vectors.shape[0]
        source = self.vectors.to(embeds.dtype).repeat(occurrences, 1)
        return embeds.masked_scatter(self.slots.unsqueeze(-1), source)

    @contextlib.contextmanager
    def placing(self, slots: torch.Tensor) -> Iterator[None]:
        """Write the vectors at ``slots`` during the encoder calls inside the block."""
        self.slots = slots
        try:
            yield
        finally:
            self.slots = None


@dataclass
class TrainedEncoder:
    """One text encoder with its tokenizer and the vectors trained for it."""

    key: str  # the embedding-file encoder key: clip_l, clip_g, clip_h
    tokenizer: Any
    encoder: Any
    lookup: PlaceholderEmbedding

    @property
    def vectors(self) -> nn.Parameter:
        return self.lookup.vectors

    def token_ids(self, prompt: str) -> tuple[list[int], list[bool]]:
        """Token ids of ``prompt`` (BOS, text, EOS, padding to the encoder's 77) and which
        positions are the vectors' slots. An occurrence that would not fit whole is dropped."""
        tok = self.tokenizer
        limit = tok.model_max_length
        count = self.vectors.shape[0]
        ids, slots = [tok.bos_token_id], [False]
        pieces = prompt.split(MARKER)
        for i, piece in enumerate(pieces):
            words = tok(piece, add_special_tokens=False)["input_ids"] if piece.strip() else []
            words = words[: max(0, limit - 1 - len(ids))]
            ids += words
            slots += [False] * len(words)
            if i < len(pieces) - 1 and len(ids) + count <= limit - 1:
                ids += [tok.bos_token_id] * count  # any in-vocabulary id: the slot is overwritten
                slots += [True] * count
        ids.append(tok.eos_token_id)
        slots.append(False)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        padding = limit - len(ids)
        return ids + [pad] * padding, slots + [False] * padding

    def batch_ids(
        self, prompts: list[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.token_ids(p) for p in prompts]
        ids = torch.tensor([r[0] for r in rows], device=device)
        slots = torch.tensor([r[1] for r in rows], device=device)
        return ids, slots

    def encode(self, prompts: list[str], device: torch.device, *, penultimate: bool) -> Any:
        """The encoder's output for ``prompts`` with the vectors in place."""
        ids, slots = self.batch_ids(prompts, device)
        with self.lookup.placing(slots):
            return self.encoder(ids, output_hidden_states=penultimate)


def init_vectors(tokenizer: Any, table: nn.Embedding, init_text: str, count: int) -> torch.Tensor:
    """``count`` vectors from ``init_text``'s token embeddings, as A1111's
    ``modules/textual_inversion/textual_inversion.py`` (``create_embedding``) builds them:
    vector ``i`` copies token ``i * tokens // count``, so fewer tokens than vectors repeat; an
    empty init text gives zeros. Where A1111 silently cuts an init text that needs more tokens
    than there are vectors, tireg refuses it."""
    width = table.weight.shape[1]
    if not init_text.strip():
        return torch.zeros(count, width)
    ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
    if len(ids) > count:
        raise InitTextError(
            f"init text {init_text!r} is {len(ids)} tokens, more than the {count} vectors",
            hint=f"shorten it or train --vectors {len(ids)}",
        )
    with torch.no_grad():
        rows = table.weight[torch.tensor(ids, device=table.weight.device)].float().cpu()
    return torch.stack([rows[i * len(ids) // count] for i in range(count)]).clone()


def attach(key: str, tokenizer: Any, encoder: Any, init_text: str, count: int) -> TrainedEncoder:
    """Put a :class:`PlaceholderEmbedding` with freshly initialised vectors into ``encoder``."""
    table = encoder.get_input_embeddings()
    if isinstance(table, PlaceholderEmbedding):
        table = table.table
    start = init_vectors(tokenizer, table, init_text, count).to(table.weight.device)
    lookup = PlaceholderEmbedding(table, nn.Parameter(start))
    encoder.set_input_embeddings(lookup)
    return TrainedEncoder(key, tokenizer, encoder, lookup)


def detach(encoders: list[TrainedEncoder]) -> None:
    """Give each encoder its own token table back (the pipeline is as it was loaded)."""
    for trained in encoders:
        trained.encoder.set_input_embeddings(trained.lookup.table)
