"""Similar embeddings and near-duplicates, answered from a cached matrix of every embedding.

**The measure.** Two embeddings are compared by the cosine similarity of their *mean vectors*,
encoder by encoder, averaged over the encoders (SDXL: the mean of the CLIP-L and the CLIP-G
cosine). Embeddings have 1 to 75 vectors and their count differs even between versions of one
concept, so a per-position comparison is meaningless; the mean vector is where the prompt word
lands on average, which is what Embedding Inspector's similarity shows too. Scores run from -1
to 1; 1.0 means the same direction.

**Near-duplicates** are embeddings whose vectors agree within float16 rounding: the same shapes
and the same bits once every value is rounded to float16. Rounding to float16 is idempotent, so
an fp16 copy of a file and its fp32 original land on the same key, and so do re-saves and
re-uploads under other names (which the store already merges when their float32 bits agree).

**The cache.** Comparing against 100,000 embeddings must be interactive, but reading 100,000
store files per question is not. Per family, ``cache/similar/<family>/`` keeps each
embedding's vectors hash, unit mean vectors and float16 key; on each question the catalogue's
fingerprint (count, largest and summed ids) is compared with the cache's; when it moved, only
the difference is read from the store (a cache that is gone is rebuilt). The matrix is
memory-mapped, so asking is one indexed aggregate and one matrix-vector product.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from tireg import config
from tireg.converters import Embedding
from tireg.db import Catalogue
from tireg.db.schema import EmbeddingRow
from tireg.errors import TiregError
from tireg.files import atomic_write_bytes
from tireg.registry import naming
from tireg.registry.store import ContentStore

#: families whose embeddings all share one layout; ``unknown`` widths compare with nothing
COMPARABLE = ("sd1", "sd2", "sdxl")
#: bumped when the cached arrays change meaning, so an old cache is rebuilt, never misread
CACHE_VERSION = 1


class SimilarityError(TiregError):
    """An embedding cannot be compared (its family has no others, or it is of unknown width)."""


@dataclass(frozen=True)
class Neighbour:
    """One answer of :func:`similar`: an embedding and its score (1.0: same direction)."""

    ref: str
    name: str
    family: str
    num_vectors: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Matrix:
    """One family's cached arrays, row-aligned and sorted by vectors hash."""

    shas: np.ndarray  # S64, ascending: a row is found by binary search, never a dict of 100k
    unit_means: np.ndarray  # float32 [n, sum of widths]: per-encoder unit mean vectors
    fp16_keys: np.ndarray  # S64
    encoders: int  # how many encoders each row concatenates (the cosine's divisor)

    def row(self, sha: str) -> int | None:
        """The row of the embedding with this vectors hash, if cached."""
        key = sha.encode()
        at = int(np.searchsorted(self.shas, key))
        return at if at < len(self.shas) and self.shas[at] == key else None


def features(embedding: Embedding) -> tuple[np.ndarray, str]:
    """An embedding's unit mean vector per encoder (concatenated, in key order) and its
    float16 key (see the module docstring)."""
    parts = []
    digest = hashlib.sha256()
    for key in sorted(embedding.vectors):
        vectors = np.asarray(embedding.vectors[key], dtype=np.float32).reshape(
            -1, embedding.vectors[key].shape[-1]
        )
        mean = vectors.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        parts.append(mean / norm if norm > 0 and np.isfinite(norm) else np.zeros_like(mean))
        rounded = vectors.astype(np.float16)
        digest.update(f"{key}:{rounded.shape}".encode())
        digest.update(rounded.tobytes())
    return np.concatenate(parts).astype(np.float32), digest.hexdigest()


def _cache_dir(family: str) -> Path:
    return config.cache_dir() / "similar" / family


def _fingerprint(catalogue: Catalogue, family: str) -> list[int]:
    """Changes whenever an embedding of ``family`` is added or removed (ids only grow), at the
    cost of one indexed aggregate instead of reading 100,000 hashes."""
    with catalogue.reading() as session:
        count, top, total = session.execute(
            select(func.count(), func.max(EmbeddingRow.id), func.total(EmbeddingRow.id)).where(
                EmbeddingRow.family == family
            )
        ).one()
    return [int(count), int(top or 0), int(total or 0)]


def _load_cache(family: str) -> tuple[_Matrix, list[int]] | None:
    """The cached matrix and the fingerprint it was built at; the matrix is memory-mapped, so
    a question reads it from the page cache rather than parsing it."""
    folder = _cache_dir(family)
    try:
        meta = json.loads((folder / "meta.json").read_text("utf-8"))
        if meta.get("version") != CACHE_VERSION:
            return None
        matrix = _Matrix(
            shas=np.load(folder / "shas.npy", mmap_mode="r", allow_pickle=False),
            unit_means=np.load(folder / "means.npy", mmap_mode="r", allow_pickle=False),
            fp16_keys=np.load(folder / "keys.npy", mmap_mode="r", allow_pickle=False),
            encoders=int(meta["encoders"]),
        )
    except (OSError, KeyError, ValueError):
        return None  # absent or damaged: a cache, rebuilt from the store
    if not len(matrix.shas) == len(matrix.fp16_keys) == matrix.unit_means.shape[0]:
        return None
    return matrix, list(meta["fingerprint"])


def _save_cache(family: str, matrix: _Matrix, fingerprint: list[int]) -> None:
    """Write the arrays, then the metadata that vouches for them (written last, so a cache
    interrupted half-way is never read as valid)."""
    folder = _cache_dir(family)
    arrays = {
        "shas.npy": matrix.shas,
        "means.npy": np.ascontiguousarray(matrix.unit_means, dtype=np.float32),
        "keys.npy": matrix.fp16_keys,
    }
    meta = {"version": CACHE_VERSION, "fingerprint": fingerprint, "encoders": matrix.encoders}
    # a read-only home still answers, it just rebuilds next time
    with contextlib.suppress(OSError):
        (folder / "meta.json").unlink(missing_ok=True)
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            atomic_write_bytes(folder / name, buffer.getvalue())
        atomic_write_bytes(folder / "meta.json", json.dumps(meta).encode())


def family_matrix(
    catalogue: Catalogue, family: str, *, store: ContentStore | None = None
) -> _Matrix:
    """The cached matrix of ``family``, brought up to date with the catalogue.

    1. A cache whose fingerprint matches the catalogue's is the answer (the common case).
    2. Otherwise read the family's vectors hashes; keep the cached rows still there and read
       only new embeddings from the store.
    3. Save the cache with the new fingerprint.
    """
    fingerprint = _fingerprint(catalogue, family)
    loaded = _load_cache(family)
    if loaded is not None and loaded[1] == fingerprint:
        return loaded[0]
    cached = loaded[0] if loaded is not None else None
    with catalogue.reading() as session:
        wanted = session.scalars(
            select(EmbeddingRow.vectors_sha256)
            .where(EmbeddingRow.family == family)
            .order_by(EmbeddingRow.vectors_sha256)
        ).all()
    rows: list[np.ndarray] = []
    keys: list[bytes] = []
    encoders = cached.encoders if cached is not None else 0
    for sha in wanted:
        at = cached.row(sha) if cached is not None else None
        if cached is not None and at is not None:
            rows.append(np.asarray(cached.unit_means[at]))
            keys.append(bytes(cached.fp16_keys[at]))
            continue
        if store is None:  # made only now: opening a store sweeps its folders
            store = ContentStore()
        embedding = store.get(sha)
        vector, key = features(embedding)
        encoders = len(embedding.vectors)
        rows.append(vector)
        keys.append(key.encode())
    width = rows[0].shape[0] if rows else 0
    matrix = _Matrix(
        shas=np.array([s.encode() for s in wanted], dtype="S64"),
        unit_means=np.stack(rows) if rows else np.zeros((0, width), dtype=np.float32),
        fp16_keys=np.array(keys, dtype="S64"),
        encoders=max(encoders, 1),
    )
    _save_cache(family, matrix, fingerprint)
    return matrix


def similar(catalogue: Catalogue, spec: str, *, limit: int = 10) -> list[Neighbour]:
    """The ``limit`` embeddings of the same family most similar to the one ``spec`` names."""
    with catalogue.reading() as session:
        row = naming.resolve(session, spec)
        family, sha, shown = row.family, row.vectors_sha256, naming.ref_of(row)
    if family not in COMPARABLE:
        raise SimilarityError(
            f"{shown} has vectors of a width tireg does not know, so nothing compares with it"
        )
    matrix = family_matrix(catalogue, family)
    at = matrix.row(sha)
    if at is None:
        raise SimilarityError(f"{shown} is not in the similarity cache; run the command again")
    scores = matrix.unit_means @ matrix.unit_means[at] / matrix.encoders
    scores[at] = -np.inf  # not its own neighbour
    count = min(limit, len(scores) - 1)
    if count <= 0:
        return []
    best = np.argpartition(-scores, count - 1)[:count]
    best = best[np.argsort(-scores[best], kind="stable")]
    return _neighbours(catalogue, [(matrix.shas[i].decode(), float(scores[i])) for i in best])


def _neighbours(catalogue: Catalogue, scored: list[tuple[str, float]]) -> list[Neighbour]:
    """Catalogue rows for ``(vectors hash, score)`` pairs, in the given order."""
    with catalogue.reading() as session:
        rows = session.scalars(
            select(EmbeddingRow).where(EmbeddingRow.vectors_sha256.in_([s for s, _ in scored]))
        ).all()
        shown = naming.refs(session, rows)
        by_sha = {r.vectors_sha256: r for r in rows}
        return [
            Neighbour(
                ref=shown[by_sha[s].id],
                name=by_sha[s].name,
                family=by_sha[s].family,
                num_vectors=by_sha[s].num_vectors,
                score=round(score, 6),
            )
            for s, score in scored
            if s in by_sha
        ]


def near_duplicates(catalogue: Catalogue) -> list[list[str]]:
    """Groups (of refs) of embeddings whose vectors agree within float16 rounding, biggest
    first; each group has two or more members (families of known widths only)."""
    with catalogue.reading() as session:
        families = session.scalars(select(EmbeddingRow.family).distinct()).all()
    groups: dict[bytes, list[str]] = {}
    for family in sorted(set(families) & set(COMPARABLE)):
        matrix = family_matrix(catalogue, family)
        for sha, key in zip(matrix.shas.tolist(), matrix.fp16_keys.tolist(), strict=True):
            groups.setdefault(key, []).append(sha.decode())
    shared = [shas for shas in groups.values() if len(shas) > 1]
    if not shared:
        return []
    with catalogue.reading() as session:
        wanted = [s for shas in shared for s in shas]
        rows = session.scalars(
            select(EmbeddingRow).where(EmbeddingRow.vectors_sha256.in_(wanted))
        ).all()
        shown = naming.refs(session, rows)
        ref_by_sha = {r.vectors_sha256: shown[r.id] for r in rows}
    named = [sorted(ref_by_sha[s] for s in shas if s in ref_by_sha) for shas in shared]
    return sorted((g for g in named if len(g) > 1), key=lambda g: (-len(g), g))
