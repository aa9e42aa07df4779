"""Validation runs as catalogue evidence: recording them and listing them.

Why here and not in :mod:`tireg.validate`: the catalogue is the registry's business, and the
registry never imports the renderer. ``tireg validate`` hands over a :class:`RunRecord` of plain
facts (hashes, settings, files); this module writes it in one transaction together with a
``validated`` compatibility fact per embedding and model, which is what makes ``tireg check``
rank "validated on this model" above everything else (see :mod:`tireg.registry.compat`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tireg import __version__
from tireg.db.schema import (
    CompatRow,
    EmbeddingRow,
    ValidationImageRow,
    ValidationModelRow,
    ValidationRow,
)
from tireg.db.session import Catalogue, retried
from tireg.registry.compat import VALIDATED
from tireg.registry.model_refs import resolve_model
from tireg.registry.naming import refs, resolve

#: the ``evidence`` of the compatibility fact a run records (one per embedding and model)
EVIDENCE = "tireg validate"


@dataclass(frozen=True)
class ModelUsed:
    """A checkpoint a run rendered on, with every hash that names it."""

    name: str
    path: str | None
    family: str
    sha256: str | None
    autov2: str | None
    old_hash: str | None
    seconds: float


@dataclass(frozen=True)
class ImageMade:
    """One image of a run; ``embedding_sha256`` (vectors) is ``None`` for the row without."""

    model: int  # index into RunRecord.models
    embedding_sha256: str | None
    prompt_word: str | None
    prompt: str
    seed: int
    path: str
    sha256: str
    cached: bool


@dataclass(frozen=True)
class RunRecord:
    """Everything one ``tireg validate`` run did, as plain facts.

    ``evidence`` lists the ``(vectors sha256, model index)`` pairs that count as "validated on
    this model": embeddings forced onto a model they cannot work on are rendered but not
    listed, so a forced run never turns into a compatibility claim."""

    started_at: datetime
    seconds: float
    settings: dict[str, Any]
    seeds: list[int]
    out_dir: str
    grid_path: str
    grid_sha256: str
    models: list[ModelUsed]
    images: list[ImageMade]
    evidence: list[tuple[str, int]] = field(default_factory=list)


@retried
def record_run(catalogue: Catalogue, record: RunRecord) -> int:
    """Write ``record`` and its evidence in one transaction; return the run's id.

    1. Map vectors hashes to catalogued embeddings (a file path given to ``validate`` that is
       not catalogued keeps its hash, without an id).
    2. Insert the run, its models, its images.
    3. Add one ``validated`` compatibility fact per evidence pair, naming the model by its
       SHA-256 (a diffusers folder, which has none, by its path), unless it is already there.
    """
    with catalogue.transaction() as session:
        hashes = {i.embedding_sha256 for i in record.images if i.embedding_sha256}
        found = session.execute(
            select(EmbeddingRow.vectors_sha256, EmbeddingRow.id).where(
                EmbeddingRow.vectors_sha256.in_(sorted(hashes))
            )
        )
        ids = {vectors: row_id for vectors, row_id in found}
        run = ValidationRow(
            started_at=record.started_at,
            seconds=record.seconds,
            settings=json.dumps(record.settings, sort_keys=True),
            seeds=json.dumps(record.seeds),
            out_dir=record.out_dir,
            grid_path=record.grid_path,
            grid_sha256=record.grid_sha256,
            tireg_version=__version__,
        )
        models = [ValidationModelRow(position=i, **vars(m)) for i, m in enumerate(record.models)]
        run.models = models
        run.images = [
            ValidationImageRow(
                model=models[i.model],
                embedding_id=ids.get(i.embedding_sha256 or ""),
                embedding_vectors_sha256=i.embedding_sha256,
                prompt_word=i.prompt_word,
                prompt=i.prompt,
                seed=i.seed,
                path=i.path,
                sha256=i.sha256,
                cached=i.cached,
            )
            for i in record.images
        ]
        session.add(run)
        for vectors, index in sorted(set(record.evidence)):
            model = record.models[index]
            model_ref = model.sha256 or model.path
            if vectors in ids and model_ref:
                _add_fact(session, ids[vectors], model_ref)
        session.flush()
        return run.id


def _add_fact(session: Session, embedding_id: int, model_ref: str) -> None:
    fact = {"embedding_id": embedding_id, "relation": VALIDATED, "model_ref": model_ref}
    exists = session.scalar(select(CompatRow.id).filter_by(**fact, evidence=EVIDENCE).limit(1))
    if exists is None:
        session.add(CompatRow(**fact, evidence=EVIDENCE))


def run_record(run: ValidationRow, refs: dict[int, str] | None = None) -> dict[str, Any]:
    """A run as JSON-ready facts: settings, seeds, models, embeddings, grid, timings."""
    refs = refs or {}
    embeddings: dict[str, dict[str, Any]] = {}
    for image in run.images:
        if image.embedding_vectors_sha256 is None:
            continue
        embeddings.setdefault(
            image.embedding_vectors_sha256,
            {
                "ref": refs.get(image.embedding_id or 0, image.prompt_word),
                "prompt_word": image.prompt_word,
                "vectors_sha256": image.embedding_vectors_sha256,
                "catalogued": image.embedding_id is not None,
            },
        )
    return {
        "id": run.id,
        "started_at": run.started_at,
        "seconds": run.seconds,
        "grid": run.grid_path,
        "grid_sha256": run.grid_sha256,
        "grid_present": Path(run.grid_path).is_file(),
        "out_dir": run.out_dir,
        "settings": json.loads(run.settings),
        "seeds": json.loads(run.seeds),
        "models": [
            {
                "name": m.name,
                "path": m.path,
                "family": m.family,
                "sha256": m.sha256,
                "autov2": m.autov2,
                "old_hash": m.old_hash,
                "seconds": m.seconds,
            }
            for m in run.models
        ],
        "embeddings": list(embeddings.values()),
        "images": len(run.images),
        "tireg_version": run.tireg_version,
    }


def runs_of_embedding(session: Session, embedding_id: int) -> list[ValidationRow]:
    """Runs that rendered the embedding, newest first."""
    query = (
        select(ValidationRow)
        .where(
            ValidationRow.id.in_(
                select(ValidationImageRow.validation_id).where(
                    ValidationImageRow.embedding_id == embedding_id
                )
            )
        )
        .options(selectinload(ValidationRow.models), selectinload(ValidationRow.images))
        .order_by(ValidationRow.id.desc())
    )
    return list(session.scalars(query))


def _on_model(runs: Sequence[ValidationRow], session: Session, spec: str) -> list[ValidationRow]:
    """Those of ``runs`` that rendered on the model ``spec`` names (a path, hash or name, as
    ``tireg check`` takes it): by SHA-256 where the run knows it, else by path or name."""
    model = resolve_model(session, spec)
    paths = {f.path for f in model.files if f.path}
    names = {f.name.lower() for f in model.files}

    def same(m: ValidationModelRow) -> bool:
        if m.sha256 and model.match(m.sha256):
            return True
        return m.path in paths or m.name.lower() in names

    return [r for r in runs if any(same(m) for m in r.models)]


def list_runs(
    catalogue: Catalogue, embedding: str | None = None, *, model: str | None = None
) -> list[dict[str, Any]]:
    """``tireg validations``: recorded runs, newest first, of one embedding (naming rule) and on
    one model when given. A model given as a file is hashed and recorded, as ``check`` does."""
    with catalogue.transaction() as session:
        if embedding is not None:
            runs = runs_of_embedding(session, resolve(session, embedding).id)
        else:
            runs = list(
                session.scalars(
                    select(ValidationRow)
                    .options(selectinload(ValidationRow.models), selectinload(ValidationRow.images))
                    .order_by(ValidationRow.id.desc())
                )
            )
        if model is not None:
            runs = _on_model(runs, session, model)
        ids = {i.embedding_id for r in runs for i in r.images if i.embedding_id is not None}
        rows = session.scalars(select(EmbeddingRow).where(EmbeddingRow.id.in_(sorted(ids))))
        shown = refs(session, rows)
        return [run_record(r, shown) for r in runs]
