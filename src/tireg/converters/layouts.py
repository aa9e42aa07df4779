"""Which textual-inversion layout a decoded file holds, and how it maps to and from Embedding.

Every container (safetensors, torch pickle, A1111 card) decodes to the same kind of object: a dict
whose tensors are numpy arrays. The layout is recognised from its keys, in A1111's order, so a
file A1111 accepts is read the same way here:

=============  ==============================================================  ==================
layout         keys                                                            name comes from
=============  ==============================================================  ==================
``a1111``      ``string_to_param {"*": T}`` + ``name``/``step``/``sd_checkpoint*``  ``name``
``original``   ``string_to_param`` (ParameterDict) + ``string_to_token`` (0-d)  the file stem
``sdxl``       ``clip_l`` [n,768] + ``clip_g`` [n,1280]                          ``name``/title/stem
``kohya``      one key ``emb_params``                                          title/stem
``diffusers``  one key ``{token: [D] or [n,D]}``                               the token
=============  ==============================================================  ==================

The reverse direction (:func:`a1111_dict`, :func:`diffusers_dict`, :func:`kohya_dict`) builds
the dict each writer serialises. Anything unrecognised is described (what keys, how many tensors)
in a :class:`NotAnEmbeddingError`, so the user learns what the file actually is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from tireg.converters import limits
from tireg.converters.embedding import CLIP_G, CLIP_L, Embedding, encoder_for_width
from tireg.converters.errors import (
    EmbeddingFileError,
    NotAnEmbeddingError,
    UnsupportedConversionError,
)

#: safetensors metadata key kohya (SAI model spec) uses for a human title
TITLE_KEY = "modelspec.title"
#: A1111's constant placeholder token id, kept for compatibility with the original format
A1111_TOKEN_ID = 265

_CONTAINER_TEXT = {
    "pt": "a torch file",
    "safetensors": "a safetensors file",
    "png": "a PNG image embedding",
    "webp": "a WebP image embedding",
}


class Interpretation(NamedTuple):
    """A decoded file read as an embedding: the value, its layout, and its stored dtypes (a
    named tuple: one is made per file read, cheaper than a frozen dataclass)."""

    embedding: Embedding
    layout: str
    #: encoder -> dtype the file stored its vectors in (``float16``, ``bfloat16``, ...)
    dtypes: dict[str, str]


def source_format(layout: str, container: str) -> str:
    """The ``source_format`` label of a layout in a container (diffusers + pt = diffusers-bin)."""
    if layout == "diffusers" and container == "pt":
        return "diffusers-bin"
    return f"{layout}-{container}"


def _is_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray)


#: names of the dtypes vectors arrive in, looked up: ``str(dtype)`` runs numpy's Python code
_DTYPE_NAMES = {np.dtype(name): name for name in ("float16", "float32", "float64")}


def _dtype_name(value: np.ndarray) -> str:
    return _DTYPE_NAMES.get(value.dtype) or str(value.dtype)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _step(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def _describe(obj: Any, container: str) -> str:
    """A short account of what a non-embedding holds, for the error message."""
    where = _CONTAINER_TEXT.get(container, f"a {container} file")
    if isinstance(obj, Mapping):
        tensors = [k for k, v in obj.items() if _is_tensor(v)]
        if len(tensors) > 16:
            return f"{where} with {len(tensors):,} tensors — looks like a checkpoint or LoRA"
        keys = [str(k) for k in list(obj)[:8]]
        more = f", ... ({len(obj)} in all)" if len(obj) > 8 else ""
        return f"{where} holding a dict with keys {keys}{more}, not an embedding"
    if isinstance(obj, (list, tuple)):
        return f"{where} holding a {type(obj).__name__} of {len(obj)} items, not an embedding"
    if _is_tensor(obj):
        return f"{where} holding a bare tensor of shape {list(obj.shape)} with no name"
    return f"{where} holding a {type(obj).__name__}, not an embedding"


def interpret(
    obj: Any,
    *,
    container: str,
    name_hint: str,
    metadata: Mapping[str, str] | None = None,
    source_sha256: str | None = None,
) -> Interpretation:
    """Read a decoded file object as an embedding.

    ``container`` is ``pt``, ``safetensors``, ``png`` or ``webp``; ``name_hint`` (the file stem)
    names the embedding when the file does not; ``metadata`` is a safetensors header's
    ``__metadata__`` (its ``modelspec.*`` entries are kept as extras); ``source_sha256``, the
    sha256 of the file's bytes, goes into the embedding's provenance.
    """
    meta = dict(metadata or {})
    # ``type(...) is dict`` first: every reader gives a plain dict, and an ABC check costs more
    if type(obj) is not dict and not isinstance(obj, Mapping):
        if _is_tensor(obj) and container == "pt":
            # a bare pickled tensor: diffusers accepts it with token=, and so do we, named by file
            arr = limits.matrix(obj, "the tensor")
            return _single("diffusers", container, name_hint, arr, meta, source_sha256, obj.ndim)
        raise NotAnEmbeddingError(_describe(obj, container))

    if "string_to_param" in obj:
        return _from_string_to_param(obj, container, name_hint, source_sha256)
    if CLIP_L in obj and CLIP_G in obj:
        return _from_sdxl(obj, container, name_hint, meta, source_sha256)
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if _is_tensor(value):
            arr = limits.matrix(value, f"tensor {key!r}")
            if key == "emb_params":
                name = meta.get(TITLE_KEY) or name_hint
                return _single("kohya", container, name, arr, meta, source_sha256, value.ndim)
            name = key if isinstance(key, str) else name_hint
            return _single("diffusers", container, name, arr, meta, source_sha256, value.ndim)
    raise NotAnEmbeddingError(_describe(obj, container))


def _extras(meta: Mapping[str, str]) -> dict[str, str]:
    """The safetensors metadata worth keeping: the SAI model spec, minus the title (the name)."""
    return {k: v for k, v in meta.items() if k.startswith("modelspec.") and k != TITLE_KEY}


def _single(
    layout: str,
    container: str,
    name: str,
    arr: np.ndarray,
    meta: Mapping[str, str],
    sha256: str | None,
    rank: int,
) -> Interpretation:
    """One tensor of ``rank`` (1 or 2) read as ``arr`` ``[n, D]``; rank 1 is kept as ``flat``."""
    encoder = encoder_for_width(int(arr.shape[1]))
    embedding = Embedding(
        name=name,
        vectors={encoder: arr},
        source_format=source_format(layout, container),
        source_sha256=sha256,
        extras=_extras(meta),
        flat=rank == 1,
    )
    return Interpretation(embedding, layout, {encoder: _dtype_name(arr)})


#: the keys only A1111 writes beside ``string_to_param`` (an ``original`` file has none)
_A1111_KEYS = ("name", "step", "sd_checkpoint", "sd_checkpoint_name")


def _from_string_to_param(
    obj: Mapping[str, Any], container: str, name_hint: str, sha256: str | None
) -> Interpretation:
    params = obj["string_to_param"]
    if type(params) is not dict and not isinstance(params, Mapping):
        raise EmbeddingFileError(f"string_to_param is a {type(params).__name__}, not a dict")
    if len(params) != 1:
        raise EmbeddingFileError(
            f"embedding file has multiple terms in it ({len(params)} placeholders)",
            hint="A1111 refuses such files too; split it into one file per placeholder",
        )
    ((placeholder, value),) = params.items()
    arr = limits.matrix(value, f"string_to_param[{placeholder!r}]")
    # any of A1111's keys: the keys view's own test, not a generator made per file
    is_a1111 = container in ("png", "webp") or not obj.keys().isdisjoint(_A1111_KEYS)
    layout = "a1111" if is_a1111 else "original"
    name = _text(obj.get("name"))
    if not name:
        name = placeholder if isinstance(placeholder, str) and placeholder != "*" else name_hint
    encoder = encoder_for_width(int(arr.shape[1]))
    embedding = Embedding(
        name=name,
        vectors={encoder: arr},
        step=_step(obj.get("step")),
        trained_on_hash=_text(obj.get("sd_checkpoint")),
        trained_on_name=_text(obj.get("sd_checkpoint_name")),
        source_format=source_format(layout, container),
        source_sha256=sha256,
    )
    return Interpretation(embedding, layout, {encoder: _dtype_name(arr)})


def _from_sdxl(
    obj: Mapping[str, Any],
    container: str,
    name_hint: str,
    meta: Mapping[str, str],
    sha256: str | None,
) -> Interpretation:
    clip_l = limits.matrix(obj[CLIP_L], "clip_l")
    clip_g = limits.matrix(obj[CLIP_G], "clip_g")
    others = [str(k) for k, v in obj.items() if _is_tensor(v) and k not in (CLIP_L, CLIP_G)]
    if others:
        raise NotAnEmbeddingError(
            f"{_CONTAINER_TEXT.get(container, container)} holding clip_l/clip_g and also "
            f"tensors {others[:8]}, not one SDXL embedding"
        )
    if clip_l.shape[0] != clip_g.shape[0]:
        raise EmbeddingFileError(
            f"clip_l has {clip_l.shape[0]} vectors but clip_g has {clip_g.shape[0]}"
        )
    name = _text(obj.get("name")) or meta.get(TITLE_KEY) or name_hint
    embedding = Embedding(
        name=name,
        vectors={CLIP_L: clip_l, CLIP_G: clip_g},
        step=_step(obj.get("step")),
        trained_on_hash=_text(obj.get("sd_checkpoint")),
        trained_on_name=_text(obj.get("sd_checkpoint_name")),
        source_format=source_format("sdxl", container),
        source_sha256=sha256,
        extras=_extras(meta),
    )
    return Interpretation(
        embedding, "sdxl", {CLIP_L: _dtype_name(clip_l), CLIP_G: _dtype_name(clip_g)}
    )


# -- the other direction: the dict each writer serialises --------------------------------------


def is_pair(embedding: Embedding) -> bool:
    """True for a two-encoder (SDXL-style ``clip_l`` + ``clip_g``) embedding.

    Raises :class:`UnsupportedConversionError` for any other multi-encoder combination, which
    only the internal format can hold.
    """
    keys = set(embedding.vectors)
    if len(keys) == 1:
        return False
    if keys == {CLIP_L, CLIP_G}:
        return True
    raise UnsupportedConversionError(
        f"encoders {sorted(keys)} fit no format but tireg's own",
        hint="convert to the tireg format",
    )


def a1111_dict(embedding: Embedding) -> dict[str, Any]:
    """The dict A1111's ``Embedding.save`` writes; SDXL: ``clip_l`` and ``clip_g``, nothing else.

    A1111 never writes SDXL ``.pt`` files. Its loader's SDXL branch (``textual_inversion.py``,
    ``create_embedding_from_data``) calls ``.detach()`` on every value of the dict, so a ``name``
    or ``step`` beside the two tensors makes it fail; an SDXL ``.pt`` keeps only its vectors.
    """
    if is_pair(embedding):
        return {CLIP_L: embedding.vectors[CLIP_L], CLIP_G: embedding.vectors[CLIP_G]}
    (matrix,) = embedding.vectors.values()
    return {
        "string_to_token": {"*": A1111_TOKEN_ID},
        "string_to_param": {"*": matrix},
        "name": embedding.name,
        "step": embedding.step,
        "sd_checkpoint": embedding.trained_on_hash,
        "sd_checkpoint_name": embedding.trained_on_name,
    }


def diffusers_dicts(embedding: Embedding) -> list[dict[str, np.ndarray]]:
    """``{token: [n, D]}`` per file (``[D]`` for a ``flat`` embedding, as it was read): one file,
    or diffusers' SDXL pair (clip_l, then clip_g)."""
    encoders = (CLIP_L, CLIP_G) if is_pair(embedding) else tuple(embedding.vectors)
    return [
        {embedding.name: embedding.vectors[enc][0] if embedding.flat else embedding.vectors[enc]}
        for enc in encoders
    ]


def kohya_dict(embedding: Embedding) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """kohya's tensors (``emb_params``, or ``clip_l``/``clip_g``) and safetensors metadata."""
    metadata = {k: v for k, v in embedding.extras.items() if k.startswith("modelspec.")}
    metadata[TITLE_KEY] = embedding.name
    if is_pair(embedding):
        return {CLIP_L: embedding.vectors[CLIP_L], CLIP_G: embedding.vectors[CLIP_G]}, metadata
    (matrix,) = embedding.vectors.values()
    return {"emb_params": matrix}, metadata
