"""The one internal value every format converts to and from: :class:`Embedding`.

An embedding is a small float matrix per text encoder. The encoder keys say which text encoder the
vectors are for, and their widths say which model family can use them:

=========  =====  ==========================================
key        width  meaning
=========  =====  ==========================================
clip_l     768    CLIP ViT-L/14: SD 1.x, and SDXL's first encoder
clip_g     1280   OpenCLIP bigG: SDXL's second encoder
clip_h     1024   OpenCLIP ViT-H: SD 2.x
emb        other  a width tireg does not know (kept, never guessed)
=========  =====  ==========================================
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np

CLIP_L = "clip_l"
CLIP_G = "clip_g"
CLIP_H = "clip_h"
UNKNOWN_ENCODER = "emb"

ENCODER_WIDTHS: dict[str, int] = {CLIP_L: 768, CLIP_G: 1280, CLIP_H: 1024}

#: the byte layout vectors are hashed in (made once: a dtype parsed from text costs per call)
_LITTLE_F32 = np.dtype("<f4")
#: where native float32 is that layout already
_LITTLE_HOST = sys.byteorder == "little"


class Family(str, Enum):
    """The model family an embedding can work on, decided by its widths alone."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        return {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "unknown": "unknown"}[self.value]


def encoder_for_width(width: int) -> str:
    """The encoder key a single-matrix file of this width belongs to (``emb`` if unknown).

    1280 on its own is ambiguous (SDXL's second encoder, or the original LDM's BERT), so it is
    reported as unknown rather than guessed.
    """
    if width == 768:
        return CLIP_L
    if width == 1024:
        return CLIP_H
    return UNKNOWN_ENCODER


def family_of(widths: Mapping[str, int]) -> Family:
    """Family from the encoder widths: 768 -> SD 1.x, 1024 -> SD 2.x, 768 + 1280 -> SDXL."""
    items = dict(widths)
    if items == {CLIP_L: 768}:
        return Family.SD1
    if items == {CLIP_H: 1024}:
        return Family.SD2
    if items == {CLIP_L: 768, CLIP_G: 1280}:
        return Family.SDXL
    return Family.UNKNOWN


@dataclass(frozen=True, eq=False)
class Embedding:
    """A textual-inversion embedding, independent of the file format it came in.

    ``vectors`` maps an encoder key to a C-contiguous float32 ``[n, width]`` array; every encoder
    has the same ``n``. Equality compares names, metadata and the exact bits of every vector, so
    round-trip tests can demand ``read(write(e)) == e``.

    ``flat`` says the file held its one vector as a 1-D ``[width]`` tensor (older diffusers and
    sd-concepts-library files) rather than ``[1, width]``. The vectors are the same, but not to
    every reader: InvokeAI's probe takes a diffusers file's width from ``shape[0]``, so a
    ``[1, 768]`` copy of a ``[768]`` file stops loading there. The diffusers writers keep it.
    """

    name: str
    vectors: Mapping[str, np.ndarray]
    step: int | None = None
    trained_on_hash: str | None = None
    trained_on_name: str | None = None
    source_format: str | None = None
    source_sha256: str | None = None
    extras: Mapping[str, str] = field(default_factory=dict)
    flat: bool = False

    def __post_init__(self) -> None:
        if not self.vectors:
            raise ValueError("an embedding needs at least one encoder's vectors")
        fixed: dict[str, np.ndarray] = {}
        counts: set[int] = set()  # gathered in the one loop: a set comprehension is a function
        for key, value in self.vectors.items():
            arr = value if type(value) is np.ndarray else np.asarray(value)
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
                raise ValueError(f"encoder {key!r}: expected [n, width], got {list(arr.shape)}")
            fixed[key] = np.ascontiguousarray(arr, dtype=np.float32)
            counts.add(arr.shape[0])
        if len(counts) != 1:
            raise ValueError(f"encoders disagree on the number of vectors: {sorted(counts)}")
        if self.flat and counts != {1}:
            raise ValueError(f"only a single vector can be flat, not {counts.pop()}")
        # one encoder (most embeddings) and no extras are in order already: nothing to sort
        ordered = fixed if len(fixed) == 1 else dict(sorted(fixed.items()))
        object.__setattr__(self, "vectors", ordered)
        extras = self.extras
        object.__setattr__(self, "extras", dict(sorted(extras.items())) if extras else {})

    # -- derived facts -------------------------------------------------------------------------

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def widths(self) -> dict[str, int]:
        return {key: int(arr.shape[1]) for key, arr in self.vectors.items()}

    @property
    def family(self) -> Family:
        return family_of(self.widths)

    @property
    def is_finite(self) -> bool:
        """False when any vector holds NaN or Inf (such files load, with a warning)."""
        # Checked on every read, so one ufunc call per matrix where one settles it: a finite sum
        # proves every element finite (a NaN makes the sum NaN; an Inf makes it Inf or NaN). A
        # sum that is not finite (a NaN, an Inf, or finite values whose float32 sum overflowed)
        # is judged element by element. The ufuncs' own reduce: ``ndarray.sum``/``all`` go
        # through numpy's Python-level wrappers, which cost more than the test on a small matrix.
        for arr in self.vectors.values():
            if not math.isfinite(np.add.reduce(arr, axis=None)) and not bool(
                np.logical_and.reduce(np.isfinite(arr), axis=None)
            ):
                return False
        return True

    def norms(self) -> dict[str, float]:
        """The L2 norm of each encoder's whole matrix (what ``tireg inspect`` shows and the
        corpus README quotes); NaN or Inf exactly when the matrix holds one.

        Each float32 element is squared as it is widened to float64 (one ufunc call, where its
        square is exact) and the squares are summed pairwise in float64: far below the 4
        decimals quoted, where ``np.linalg.norm`` sums a float32 matrix in float32 and misses
        them. Not ``np.dot`` on a widened copy: past 10,000 elements OpenBLAS hands the sum to
        its threads, which then spin on the other core. The sum cannot overflow (each square is
        below 2**256, and the decoded-size cap allows far fewer than 2**700 of them), so the
        norm is finite exactly when every element is.
        """
        norms: dict[str, float] = {}
        for key, arr in self.vectors.items():
            # the ufunc's own reduce: ``ndarray.sum`` goes through a Python-level wrapper
            norms[key] = math.sqrt(np.add.reduce(np.square(arr, dtype=np.float64), axis=None))
        return norms

    def vectors_sha256(self) -> str:
        """A content identity of the vectors alone (names and metadata excluded).

        The same vectors reached through two files or sources share this id, so the catalogue
        can keep one embedding with two provenance records.
        """
        digest = hashlib.sha256()
        for key, arr in self.vectors.items():
            digest.update(f"{key}:{arr.shape[0]}x{arr.shape[1]};".encode())
            # C-contiguous native float32 (__post_init__): on a little-endian host its bytes
            # are hashed in place
            digest.update(arr.data if _LITTLE_HOST else arr.astype(_LITTLE_F32).data)
        return digest.hexdigest()

    def with_meta(self, **changes: Any) -> Embedding:
        """A copy with some metadata replaced (the vectors are shared, never copied)."""
        return replace(self, **changes)

    # -- equality ------------------------------------------------------------------------------

    def _meta_key(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.step,
            self.trained_on_hash,
            self.trained_on_name,
            self.source_format,
            self.source_sha256,
            tuple(self.extras.items()),
            self.flat,
        )

    def same_vectors(self, other: Embedding) -> bool:
        """True when both have the same encoders with bit-identical vectors."""
        if self.vectors.keys() != other.vectors.keys():
            return False
        return all(
            a.shape == other.vectors[k].shape and a.tobytes() == other.vectors[k].tobytes()
            for k, a in self.vectors.items()
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Embedding):
            return NotImplemented
        return self._meta_key() == other._meta_key() and self.same_vectors(other)

    def __hash__(self) -> int:
        return hash((self._meta_key(), self.vectors_sha256()))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={a.shape[0]}x{a.shape[1]}" for k, a in self.vectors.items())
        family = self.family.value
        return f"Embedding(name={self.name!r}, {shapes}, family={family}, step={self.step})"


def a1111_short_hash(sha256: str) -> str:
    """A1111's TI short hash: the first 12 hex digits of the file's sha256."""
    return sha256[:12]
