"""Read any embedding file, choosing the reader by content (magic bytes), never by extension.

(Initial version: the internal format and safetensors layouts. The pickle and PNG readers plug in
here.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tireg.converters import internal, safetensors_file
from tireg.converters.embedding import CLIP_G, CLIP_L, Embedding, encoder_for_width
from tireg.converters.errors import EmbeddingFileError, NotAnEmbeddingError

MAX_FILE_SIZE = 64 * 1024 * 1024  # embeddings are KB to a few MB; anything bigger is not one


def read_file(path: str | os.PathLike[str]) -> Embedding:
    """Read one embedding file; errors name the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_SIZE:
            raise NotAnEmbeddingError(f"{size} bytes is too large for an embedding")
        data = p.read_bytes()
    except OSError as exc:
        raise EmbeddingFileError(f"cannot read file: {exc.strerror}") from exc
    except EmbeddingFileError as exc:
        raise exc.with_path(p) from None
    try:
        return read_bytes(data, name_hint=p.stem)
    except EmbeddingFileError as exc:
        raise exc.with_path(p) from None


def read_bytes(data: bytes, *, name_hint: str) -> Embedding:
    """Read an embedding from bytes; ``name_hint`` (the file stem) names it when the file doesn't."""
    if not data:
        raise EmbeddingFileError("empty file")
    sha = hashlib.sha256(data).hexdigest()
    if len(data) >= 9 and data[8:9] == b"{":
        tensors, metadata = safetensors_file.loads(data)
        if internal.is_internal(metadata):
            return internal.from_parts(tensors, metadata)
        return _from_tensor_dict(tensors, name_hint).with_meta(
            source_format=_safetensors_format(tensors), source_sha256=sha
        )
    raise EmbeddingFileError("unrecognised file format (not safetensors, torch, or an image)")


def _safetensors_format(tensors: dict) -> str:  # type: ignore[type-arg]
    if CLIP_L in tensors and CLIP_G in tensors:
        return "sdxl-safetensors"
    if "emb_params" in tensors:
        return "kohya-safetensors"
    return "diffusers-safetensors"


def _from_tensor_dict(tensors: dict, name_hint: str) -> Embedding:  # type: ignore[type-arg]
    if CLIP_L in tensors and CLIP_G in tensors:
        return Embedding(name=name_hint, vectors={CLIP_L: tensors[CLIP_L], CLIP_G: tensors[CLIP_G]})
    if len(tensors) != 1:
        raise NotAnEmbeddingError(f"holds {len(tensors)} tensors, not one embedding")
    ((key, value),) = tensors.items()
    name = name_hint if key in ("emb_params", "*") else key
    width = int(value.shape[-1]) if value.ndim else 0
    return Embedding(name=name, vectors={encoder_for_width(width): value})


def read_sdxl_pair(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> Embedding:
    """Combine diffusers' SDXL pair: ``learned_embeds`` (clip_l) + ``learned_embeds_2`` (clip_g)."""
    a, b = read_file(first), read_file(second)
    return Embedding(
        name=a.name,
        vectors={CLIP_L: next(iter(a.vectors.values())), CLIP_G: next(iter(b.vectors.values()))},
        source_format="diffusers-sdxl-pair",
        source_sha256=a.source_sha256,
    )
