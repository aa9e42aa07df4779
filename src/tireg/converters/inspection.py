"""What ``tireg inspect`` reports about a file, as plain data (the CLI only prints it).

:func:`describe` never raises for a bad file: a file that cannot be read becomes a record with
``error`` (and, for a refused pickle, the global it asked for), so one bad file in a folder does
not hide the report on the others.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from tireg.converters import internal
from tireg.converters.embedding import a1111_short_hash
from tireg.converters.errors import UnsafePickleError
from tireg.converters.reading import nonfinite_count, nonfinite_message, read_file_detailed
from tireg.errors import TiregError
from tireg.files import sha256_file


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready account of one file.

    Keys for an embedding: ``path``, ``format`` (the file's own format: ``tireg`` for an
    internal-format file), ``source_format`` (the format its vectors were first read from: for a
    ``tireg`` file the original's, recorded as provenance, else the same as ``format``),
    ``container``,
    ``layout``, ``name``, ``family``, ``encoders`` (``{encoder: [vectors, width]}``), ``dtypes``,
    ``norms``, ``step``, ``trained_on`` (``{hash, name}``), ``sha256``, ``a1111_short_hash``,
    ``vectors_sha256``, ``safety``, ``warnings`` and, for image cards, ``carrier``. For a file
    that fails: ``path``, ``error``, ``safety`` (and ``sha256`` when the file could be read).
    """
    p = path if isinstance(path, Path) else Path(path)
    try:
        # the vectors' finiteness is judged below, from the sums of squares the norms need
        result = read_file_detailed(p, warn=False, finite=False)
    except TiregError as exc:
        return _failure(p, exc)
    e = result.embedding
    file_sha = result.sha256
    is_tireg = result.layout == internal.FORMAT_NAME
    # one pass over the encoders for all three facts (a comprehension is a function object);
    # a norm is finite exactly when its matrix is (Embedding.norms)
    encoders: dict[str, list[int]] = {}
    norms: dict[str, float] = {}
    finite = True
    for key, norm in e.norms().items():
        encoders[key] = list(e.vectors[key].shape)
        finite = finite and math.isfinite(norm)
        norms[key] = round(norm, 4)
    nonfinite = 0 if finite else nonfinite_count(e)
    return {
        "path": str(p),
        "format": internal.FORMAT_NAME if is_tireg else e.source_format,
        "source_format": e.source_format,
        "container": result.container,
        "layout": result.layout,
        "name": e.name,
        "family": e.family.value,
        "encoders": encoders,
        "dtypes": result.dtypes,
        "norms": norms,
        "step": e.step,
        "trained_on": {"hash": e.trained_on_hash, "name": e.trained_on_name},
        "sha256": file_sha,
        "a1111_short_hash": a1111_short_hash(file_sha),
        "vectors_sha256": e.vectors_sha256(),
        "safety": result.safety,
        "carrier": result.carrier,
        "extras": dict(e.extras),
        "warnings": [nonfinite_message(str(p), nonfinite)] if nonfinite else [],
    }


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _failure(path: Path, exc: TiregError) -> dict[str, Any]:
    record: dict[str, Any] = {"path": str(path), "error": exc.message}
    if exc.hint:
        record["hint"] = exc.hint
    if isinstance(exc, UnsafePickleError):
        record["safety"] = f"REFUSED: asks for {exc.global_name}"
    sha = _file_sha256(path) if path.is_file() else None
    if sha is not None:
        record["sha256"] = sha
    return record
