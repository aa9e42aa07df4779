"""Hypothesis strategies for embeddings: shapes, widths, float32 bit patterns and metadata."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tireg.converters import CLIP_G, CLIP_L, Embedding
from tireg.converters.embedding import encoder_for_width

#: widths worth covering: SD1, SD2, and odd ones no model uses (kept, never guessed)
SINGLE_WIDTHS = (768, 1024, 1, 7, 320, 1280)

names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=24
).filter(lambda s: s.strip() == s and s.strip() != "" and s not in ("*", "__metadata__"))

hashes = st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=8, max_size=10))
model_names = st.one_of(st.none(), names)
steps = st.one_of(st.none(), st.integers(min_value=0, max_value=10**9))


@st.composite
def matrices(draw: st.DrawFn, n: int, width: int, *, finite: bool = True) -> np.ndarray:
    """float32 [n, width]: random normals, then a few cells overwritten with edge values."""
    seed = draw(st.integers(0, 2**32 - 1))
    arr = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    edge = st.floats(
        width=32, allow_nan=not finite, allow_infinity=not finite, allow_subnormal=True
    )
    for _ in range(draw(st.integers(0, 4))):
        arr[draw(st.integers(0, n - 1)), draw(st.integers(0, width - 1))] = draw(edge)
    return arr


@st.composite
def embeddings(
    draw: st.DrawFn, *, sdxl: bool | None = None, max_vectors: int = 16, finite: bool = True
) -> Embedding:
    """An Embedding: one encoder of a chosen width, or an SDXL clip_l + clip_g pair."""
    n = draw(st.integers(1, max_vectors))
    pair = draw(st.booleans()) if sdxl is None else sdxl
    if pair:
        vectors = {
            CLIP_L: draw(matrices(n, 768, finite=finite)),
            CLIP_G: draw(matrices(n, 1280, finite=finite)),
        }
    else:
        width = draw(st.sampled_from(SINGLE_WIDTHS))
        vectors = {encoder_for_width(width): draw(matrices(n, width, finite=finite))}
    extras = draw(
        st.dictionaries(
            st.sampled_from(("modelspec.architecture", "modelspec.date", "note", "origin.url")),
            names,
            max_size=2,
        )
    )
    return Embedding(
        name=draw(names),
        vectors=vectors,
        step=draw(steps),
        trained_on_hash=draw(hashes),
        trained_on_name=draw(model_names),
        source_format=draw(st.sampled_from(("a1111-pt", "diffusers-bin", "kohya-safetensors"))),
        source_sha256=draw(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
        extras=extras,
        flat=n == 1 and draw(st.booleans()),
    )


#: the ways :func:`damaged` breaks a file
DAMAGES = ("flip", "cut", "splice")


def damaged(
    data: st.DataObject, blob: bytes, how: str, *, flips: int, spliced: int, first: int = 0
) -> bytes:
    """``blob`` broken as a download or a disk breaks files: ``flip`` 1 to ``flips`` bytes at
    or after offset ``first``, ``cut`` it short, or ``splice`` in up to ``spliced`` random
    bytes."""
    if how == "flip":
        buf = bytearray(blob)
        for _ in range(data.draw(st.integers(1, flips))):
            buf[data.draw(st.integers(first, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
        return bytes(buf)
    if how == "cut":
        return blob[: data.draw(st.integers(0, len(blob)))]
    at = data.draw(st.integers(0, len(blob)))
    return blob[:at] + data.draw(st.binary(max_size=spliced)) + blob[at:]
