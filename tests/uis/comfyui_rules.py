"""ComfyUI's rules for loading an embedding named in a prompt, reproduced from its source.

Upstream (comfyanonymous/ComfyUI):

* ``comfy/sd1_clip.py`` ``SDTokenizer.tokenize_with_weights``: the prompt is split at spaces and a
  word ``embedding:NAME`` loads NAME; ``load_embed``: the file is NAME itself or NAME plus
  ``.safetensors``, ``.pt``, ``.bin`` (tried in that order) in the embeddings folder or any folder
  below it, never outside it (``commonpath``); safetensors goes through
  ``safetensors.torch.load_file``, anything else through ``torch.load(weights_only=True)`` and, if
  that fails, ``safe_load_embed_zip`` (raw ``data/*`` bytes as float32, reshaped by guessing the
  width); then the key rules: ``string_to_param``'s first value, a list of dicts, the tokenizer's
  ``embedding_key`` (``clip_l``; ``clip_g`` for SDXL's second tokenizer, ``comfy/sdxl_clip.py``
  ``SDXLClipGTokenizer``), else the first value.
* ``comfy/sd1_clip.py`` ``SDClipModel.process_tokens``: a 1-D result is one token, a 2-D one a
  token per row, and a row whose width is not the encoder's is dropped with "shape mismatch when
  trying to apply embedding, embedding will be ignored".

Each tokenizer loads the file by itself (``embedding_size`` 768 for CLIP-L, 1024 for SD2's
OpenCLIP-H in ``comfy/sd2_clip.py``, 1280 for SDXL's bigG).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

EXTENSIONS = (".safetensors", ".pt", ".bin")
#: (embedding_size, embedding_key) of each tokenizer
CLIP_L = (768, "clip_l")
CLIP_H = (1024, "clip_l")  # SD2ClipHTokenizer keeps SDTokenizer's default key
CLIP_G = (1280, "clip_g")


class Ignored(Exception):
    """ComfyUI would warn and use no embedding for the word."""


def embedding_names(prompt: str) -> list[str]:
    """The NAMEs of the ``embedding:NAME`` words of a prompt (split at spaces, as ComfyUI does)."""
    words = [w for w in prompt.replace("\n", " ").split(" ") if w]
    return [w[len("embedding:") :] for w in words if w.startswith("embedding:")]


def find_file(name: str, directory: Path) -> Path | None:
    """``load_embed``'s lookup: the folder and every folder below it, inside it only."""
    folders = {str(directory)} | {root for root, _, _ in os.walk(directory, followlinks=True)}
    for folder in folders:
        base = os.path.abspath(folder)
        candidate = os.path.abspath(os.path.join(folder, name))
        if os.path.commonpath((base, candidate)) != base:
            continue
        if os.path.isfile(candidate):
            return Path(candidate)
        for ext in EXTENSIONS:
            if os.path.isfile(candidate + ext):
                return Path(candidate + ext)
    return None


def _raw_zip_floats(path: Path) -> torch.Tensor | None:
    """``safe_load_embed_zip``: the last ``data/`` member of 768+ floats, width guessed."""
    with zipfile.ZipFile(path) as archive:
        for member in reversed([n for n in archive.namelist() if "data/" in n]):
            raw = archive.read(member)
            count = len(raw) // 4
            if count < 768:
                continue
            width = 768 if count % 768 == 0 else 1024
            return torch.frombuffer(bytearray(raw), dtype=torch.float).reshape(-1, width)
    return None


def load_embed(name: str, directory: Path, tokenizer: tuple[int, str]) -> torch.Tensor:
    """The tensor ``embedding:name`` gives the tokenizer ``(embedding_size, embedding_key)``."""
    size, key = tokenizer
    path = find_file(name, directory)
    if path is None:
        raise Ignored(f"embedding:{name} does not exist")
    embed: Any = None
    if path.name.lower().endswith(".safetensors"):
        embed = safetensors.torch.load_file(path, device="cpu")
    else:
        try:
            embed = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # ComfyUI falls back on any failure
            found = _raw_zip_floats(path)
            if found is None:
                raise Ignored(f"error loading embedding {name}") from None
            return token_rows(found, size)
    if "string_to_param" in embed:
        out = next(iter(embed["string_to_param"].values()))
    elif isinstance(embed, list):
        rows = [t.reshape(-1, t.shape[-1]) for d in embed for t in d.values()]
        out = torch.cat([r for r in rows if r.shape[-1] == size], dim=0)
    elif key in embed:
        out = embed[key]
    else:
        out = next(iter(embed.values()))
    return token_rows(out, size)


def token_rows(embed: torch.Tensor, size: int) -> torch.Tensor:
    """``process_tokens``: the rows the encoder gets, as ``[n, size]``; a wrong width is ignored."""
    rows = [embed] if len(embed.shape) == 1 else [embed[i] for i in range(embed.shape[0])]
    if any(row.shape[0] != size for row in rows):
        raise Ignored(f"shape mismatch when trying to apply embedding: {list(embed.shape)}")
    return torch.stack(rows)
