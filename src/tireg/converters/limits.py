"""Every bound on what a reader accepts, and the one validation every reader's result passes.

Why one module: each container (tireg's format, safetensors layouts, torch pickles, A1111 cards)
decodes differently, but what makes a decoded value an embedding is the same, and a check that
lives in one reader only is a hole in the others (a tireg-format file once took int64 vectors, a
15,000,000-wide ``clip_l`` and a step in Arabic-Indic digits). So: :func:`matrix` checks each
tensor before it is widened to float32, :func:`step_from_text` parses a step written as text, and
:func:`check` validates the finished :class:`~tireg.converters.embedding.Embedding` of every
reader (:func:`tireg.converters.reading.read_bytes_detailed` calls it), with one line saying what
was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tireg.converters.embedding import ENCODER_WIDTHS, UNKNOWN_ENCODER, Embedding
from tireg.converters.errors import EmbeddingFileError

#: more vectors than this is no textual inversion (a prompt holds 75 tokens in all)
MAX_VECTORS = 1024
#: wider than this is no text encoder's token table
MAX_WIDTH = 16384
#: dimensions of any tensor a file may describe (numpy's floor across versions is 32)
MAX_DIMS = 32
#: the longest name, in UTF-8 bytes: with an extension it still fits a file name (255 bytes)
MAX_NAME_BYTES = 200
#: the largest step: SQLite's INTEGER is a signed 64-bit number
MAX_STEP = 2**63 - 1
#: the dtypes vectors may be stored in (float8 and integers are no trained embedding)
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


def matrix(value: Any, what: str) -> np.ndarray:
    """Check a tensor is a float ``[D]`` or ``[n, D]`` of sane size; return it as ``[n, D]``."""
    if not isinstance(value, np.ndarray):
        raise EmbeddingFileError(f"{what} is a {type(value).__name__}, not a tensor")
    arr: np.ndarray = value
    if arr.dtype.kind != "f" or arr.dtype.itemsize > 8:
        raise EmbeddingFileError(f"{what} holds {arr.dtype} values, not floats")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise EmbeddingFileError(f"{what} has shape {list(arr.shape)}, not [vectors, width]")
    n, width = arr.shape
    if not (1 <= n <= MAX_VECTORS) or not (1 <= width <= MAX_WIDTH):
        raise EmbeddingFileError(
            f"{what} has shape {list(arr.shape)}: an embedding has 1..{MAX_VECTORS} vectors "
            f"of width 1..{MAX_WIDTH}"
        )
    return arr


def step_from_text(text: str, what: str) -> int:
    """A step written as text: plain ASCII digits only (``int()`` would also take ``" 1"``,
    ``"+1"``, ``"1_0"`` and non-Latin digits), and in range."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_STEP)):
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise EmbeddingFileError(f"{what} is not a step number ({shown!r})")
    return check_step(int(text))


def check_step(step: int) -> int:
    """A step must be in 0..2**63-1: it is stored as an SQLite INTEGER."""
    if not 0 <= step <= MAX_STEP:
        bits = step.bit_length()
        raise EmbeddingFileError(f"step is out of range (a {bits}-bit number; 0..2**63-1 allowed)")
    return step


def check_name(name: str) -> str:
    """A name must fit a file name once an extension is added."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise EmbeddingFileError(
            f"the embedding's name is {size} bytes long (at most {MAX_NAME_BYTES})",
            hint="rename it in a tool that can, or convert it with a shorter name",
        )
    return name


def check(embedding: Embedding, dtypes: Mapping[str, str]) -> Embedding:
    """The validation every reader's result passes; returns ``embedding`` unchanged.

    ``dtypes`` (encoder -> dtype the file stored it in) must all be float dtypes; known encoder
    keys must have their encoder's width; vector counts and widths are bounded; the name and step
    are bounded.
    """
    for key, dtype in dtypes.items():
        if dtype not in FLOAT_DTYPES:
            raise EmbeddingFileError(f"vectors of {key!r} are stored as {dtype}, not as floats")
    for key, arr in embedding.vectors.items():
        width = ENCODER_WIDTHS.get(key)
        if width is None and key != UNKNOWN_ENCODER:
            raise EmbeddingFileError(f"unknown encoder key {key!r}")
        if width is not None and arr.shape[1] != width:
            raise EmbeddingFileError(
                f"{key} vectors are {arr.shape[1]} wide; {key} is always {width} wide"
            )
        matrix(arr, key)
    check_name(embedding.name)
    if embedding.step is not None:
        check_step(embedding.step)
    return embedding
