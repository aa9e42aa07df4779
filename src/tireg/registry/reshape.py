"""New embeddings made from catalogued ones: mix, merge, trim and scale.

These are the operations of A1111's embedding-merge and Embedding Inspector extensions, made
first-class: each result is a catalogue entry like any other (a store file, a searchable name),
and its ``lineage`` row records the operation, its parents and its arguments, so ``tireg show``
says where it came from.

* **mix** ``"0.7*a + 0.3*b"``: a weighted sum, vector by vector, of embeddings of one shape.
* **merge** ``a b``: the vectors of ``a`` followed by those of ``b`` (what typing ``a b`` in a
  prompt feeds the text encoder), as embedding-merge's ``a + b``.
* **trim** ``NAME 0:4``: a slice of the vectors (Python slice syntax).
* **scale** ``NAME 0.8``: every vector times a factor (a weaker or stronger concept).

Only embeddings of one family combine: an SD 1.x (768) vector added to an SD 2.x (1024) one is
refused in one line, as is a mix of different vector counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from tireg.converters import Embedding
from tireg.db import Catalogue
from tireg.db.schema import EmbeddingRow, name_key
from tireg.db.session import retried
from tireg.errors import TiregError
from tireg.registry import naming
from tireg.registry.importer import import_embedding
from tireg.registry.lineage import record_version
from tireg.registry.store import ContentStore

MIX, MERGE, TRIM, SCALE = "mix", "merge", "trim", "scale"


class ReshapeError(TiregError):
    """An operation that cannot be done on these embeddings (families, shapes, arguments)."""


@dataclass(frozen=True)
class Parent:
    """One input of an operation: the catalogue row and its vectors."""

    row: EmbeddingRow
    embedding: Embedding
    weight: float = 1.0

    @property
    def ref(self) -> str:
        return naming.ref_of(self.row)


@dataclass(frozen=True)
class Made:
    """What an operation made: the new entry, its parents and the operation's arguments."""

    ref: str
    name: str
    family: str
    num_vectors: int
    vectors_sha256: str
    operation: str
    parents: list[str]
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "family": self.family,
            "num_vectors": self.num_vectors,
            "vectors_sha256": self.vectors_sha256,
            "operation": self.operation,
            "parents": self.parents,
            "arguments": self.arguments,
        }


#: ``0.7*name``, ``name``, ``-0.5 * name@1a2b3c``: a term of a mix expression
_TERM = re.compile(r"^\s*(?:([-+]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)\s*\*)?\s*(.+?)\s*$")


def parse_mix(expression: str) -> list[tuple[float, str]]:
    """``"0.7*a + 0.3*b"`` as ``[(0.7, "a"), (0.3, "b")]``; a ``-`` between terms negates.

    Terms are separated by `` + `` or `` - `` with spaces around them, so names that contain
    ``-`` or ``+`` (``cat-toy``) stay whole.
    """
    parts = re.split(r"\s+([+-])\s+", " " + expression.strip() + " ")
    terms: list[tuple[float, str]] = []
    sign = 1.0
    for index, part in enumerate(parts):
        if index % 2:
            sign = -1.0 if part == "-" else 1.0
            continue
        match = _TERM.match(part)
        if not part.strip() or match is None or not match.group(2).strip():
            raise ReshapeError(
                f"cannot read the mix expression {expression!r}",
                hint='write it as "0.7*NAME + 0.3*OTHER" (spaces around + and -)',
            )
        weight = float(match.group(1).replace(" ", "")) if match.group(1) else 1.0
        terms.append((sign * weight, match.group(2)))
    return terms


def parse_rows(text: str) -> slice:
    """``"0:4"``, ``":2"``, ``"3:"`` or ``"1"`` as a slice of vectors."""
    match = re.fullmatch(r"\s*(-?\d+)?\s*(:)?\s*(-?\d+)?\s*", text)
    if match is None or (match.group(2) is None and match.group(1) is None):
        raise ReshapeError(f"cannot read the vectors {text!r}", hint="write START:STOP, e.g. 0:4")
    start = int(match.group(1)) if match.group(1) else None
    if match.group(2) is None:
        assert start is not None
        return slice(start, start + 1 if start != -1 else None)
    stop = int(match.group(3)) if match.group(3) else None
    return slice(start, stop)


def _parents(
    catalogue: Catalogue, specs: list[tuple[float, str]], store: ContentStore
) -> list[Parent]:
    with catalogue.reading() as session:
        rows = [(weight, naming.resolve(session, spec)) for weight, spec in specs]
    return [Parent(row, store.get(row.vectors_sha256), weight) for weight, row in rows]


def _same_family(parents: list[Parent], operation: str) -> None:
    """Refuse inputs whose encoders or widths differ (they feed different text encoders)."""
    first = parents[0]
    for other in parents[1:]:
        if other.embedding.widths != first.embedding.widths:
            raise ReshapeError(
                f"cannot {operation} {first.ref} ({_widths(first)}) with {other.ref}"
                f" ({_widths(other)}): they are for different text encoders",
                hint="combine embeddings of one model family",
            )


def _widths(parent: Parent) -> str:
    return " + ".join(str(w) for _, w in sorted(parent.embedding.widths.items()))


@retried
def record_made(
    catalogue: Catalogue,
    made: Embedding,
    parents: list[Parent],
    operation: str,
    arguments: dict[str, Any],
    store: ContentStore,
) -> Made:
    """Record ``made`` as a new entry with its lineage row (operation, parents, arguments), in
    one transaction; a taken name, or vectors already catalogued, are refused."""
    with catalogue.transaction() as session:
        clash = session.scalar(
            select(EmbeddingRow.id).where(EmbeddingRow.name_key == name_key(made.name)).limit(1)
        )
        if clash is not None:
            raise ReshapeError(
                f"an embedding named {made.name!r} is already catalogued",
                hint="choose another --name (the name is the word you type in a prompt)",
            )
        row, created = import_embedding(
            session, made, location=f"tireg:{operation}/{made.name}", store=store
        )
        if not created:
            raise ReshapeError(
                f"{operation} gives the vectors of {naming.ref_of(row)}, already catalogued",
                hint="nothing new to record",
            )
        refs = [p.ref for p in parents]
        record_version(
            session,
            row.id,
            run_id=f"{operation}:{row.vectors_sha256[:16]}",
            operation=operation,
            parent_id=parents[0].row.id if parents else None,
            settings={
                **arguments,
                "parents": [
                    {"ref": p.ref, "vectors_sha256": p.row.vectors_sha256, "weight": p.weight}
                    for p in parents
                ],
            },
        )
        return Made(
            ref=naming.refs(session, [row])[row.id],
            name=row.name,
            family=row.family,
            num_vectors=row.num_vectors,
            vectors_sha256=row.vectors_sha256,
            operation=operation,
            parents=refs,
            arguments=arguments,
        )


def new_embedding(name: str, vectors: dict[str, np.ndarray]) -> Embedding:
    if not name.strip():
        raise ReshapeError("the new embedding needs a --name")
    as_float32 = {k: np.ascontiguousarray(v, np.float32) for k, v in vectors.items()}
    return Embedding(name=name.strip(), vectors=as_float32)


def mix(catalogue: Catalogue, expression: str, *, name: str) -> Made:
    """The weighted sum ``expression`` describes, as a new entry named ``name``."""
    store = ContentStore()
    parents = _parents(catalogue, parse_mix(expression), store)
    _same_family(parents, MIX)
    shapes = {p.embedding.num_vectors for p in parents}
    if len(shapes) > 1:
        counts = ", ".join(f"{p.ref}: {p.embedding.num_vectors}" for p in parents)
        raise ReshapeError(
            f"cannot mix embeddings with different numbers of vectors ({counts})",
            hint="trim them to one length first (tireg trim NAME --vectors 0:N)",
        )
    keys = parents[0].embedding.vectors
    summed = {
        key: sum(
            (p.weight * p.embedding.vectors[key].astype(np.float64) for p in parents),
            start=np.zeros_like(keys[key], dtype=np.float64),
        )
        for key in keys
    }
    return record_made(
        catalogue, new_embedding(name, summed), parents, MIX, {"expression": expression}, store
    )


def merge(catalogue: Catalogue, specs: list[str], *, name: str) -> Made:
    """The vectors of ``specs`` one after another, as a new entry named ``name``."""
    if len(specs) < 2:
        raise ReshapeError("merge needs two or more embeddings")
    store = ContentStore()
    parents = _parents(catalogue, [(1.0, s) for s in specs], store)
    _same_family(parents, MERGE)
    joined = {
        key: np.concatenate([p.embedding.vectors[key] for p in parents])
        for key in parents[0].embedding.vectors
    }
    return record_made(catalogue, new_embedding(name, joined), parents, MERGE, {}, store)


def trim(catalogue: Catalogue, spec: str, rows: str, *, name: str) -> Made:
    """The vectors ``rows`` (``START:STOP``) of ``spec``, as a new entry named ``name``."""
    store = ContentStore()
    (parent,) = _parents(catalogue, [(1.0, spec)], store)
    part = parse_rows(rows)
    kept = {key: vectors[part] for key, vectors in parent.embedding.vectors.items()}
    if not next(iter(kept.values())).shape[0]:
        raise ReshapeError(
            f"{rows!r} keeps none of the {parent.embedding.num_vectors} vectors of {parent.ref}"
        )
    return record_made(
        catalogue, new_embedding(name, kept), [parent], TRIM, {"vectors": rows}, store
    )


def scale(catalogue: Catalogue, spec: str, factor: float, *, name: str) -> Made:
    """Every vector of ``spec`` times ``factor``, as a new entry named ``name``."""
    if not np.isfinite(factor):
        raise ReshapeError(f"the factor must be a finite number, not {factor!r}")
    store = ContentStore()
    (parent,) = _parents(catalogue, [(factor, spec)], store)
    scaled = {k: v.astype(np.float64) * factor for k, v in parent.embedding.vectors.items()}
    return record_made(
        catalogue, new_embedding(name, scaled), [parent], SCALE, {"factor": factor}, store
    )
