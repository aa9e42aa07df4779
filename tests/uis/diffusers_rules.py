"""diffusers' rules for loading an embedding, run with diffusers' own code.

diffusers is installed, so nothing is reproduced but the width check: the file is read by
``diffusers.loaders.textual_inversion.load_textual_inversion_state_dicts`` (safetensors first,
then ``load_state_dict``'s weights-only torch.load), the token and vectors are picked by
``TextualInversionLoaderMixin._retrieve_tokens_and_embeddings`` (a bare tensor needs ``token=``;
one key is ``{token: T}``; ``string_to_param`` takes ``name`` and ``["*"]``) and split into one
token per vector by ``_extend_tokens_and_embeddings``; ``load_textual_inversion`` step 6 then
refuses any vector whose width is not the text encoder's. SDXL has no layout of its own: the
caller passes ``state_dict["clip_l"]`` and ``state_dict["clip_g"]`` to two calls, as diffusers
documents. ``tests/converters/test_consumer.py`` loads the same files into real pipelines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.textual_inversion import (
    TextualInversionLoaderMixin,
    load_textual_inversion_state_dicts,
)


class Refused(ValueError):
    """diffusers would raise instead of loading."""


def state_dict(path: Path) -> Any:
    """The state dict diffusers reads from ``path``."""
    (found,) = load_textual_inversion_state_dicts([str(path)])
    return found


def load(source: Any, tokenizer: Any, width: int, token: str | None = None) -> torch.Tensor:
    """The ``[n, width]`` rows diffusers would write into a ``width``-wide text encoder."""
    state = state_dict(source) if isinstance(source, Path) else source
    tokens, embeddings = TextualInversionLoaderMixin._retrieve_tokens_and_embeddings(
        [token], [state], tokenizer
    )
    tokens, rows = TextualInversionLoaderMixin._extend_tokens_and_embeddings(
        tokens, embeddings, tokenizer
    )
    if any(width != row.shape[-1] for row in rows):
        raise Refused("Loaded embeddings are of incorrect shape")
    return torch.stack(rows)
