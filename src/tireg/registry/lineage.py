"""Lineage: which run or operation made an embedding, and from which entry.

A training run records every save as a catalogue entry with a lineage row; the rows of one run
share its ``run_id`` and each points at the save before it, so the entries are versions of one
embedding rather than unrelated files that share a name. Mixing, merging and trimming use the
same rows with their own ``operation``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tireg.db.schema import EmbeddingRow, LineageRow

TRAIN = "train"


def record_version(
    session: Session,
    embedding_id: int,
    *,
    run_id: str,
    operation: str,
    parent_id: int | None = None,
    step: int | None = None,
    loss: float | None = None,
    settings: dict[str, Any] | None = None,
) -> LineageRow:
    """Link ``embedding_id`` to its run (in the caller's transaction); recording the same
    entry for the same run again updates the row."""
    row = session.scalar(
        select(LineageRow).where(
            LineageRow.embedding_id == embedding_id, LineageRow.run_id == run_id
        )
    )
    if row is None:
        row = LineageRow(embedding_id=embedding_id, run_id=run_id, operation=operation)
        session.add(row)
    row.parent_id = parent_id if parent_id != embedding_id else None
    row.step, row.loss = step, loss
    row.settings = None if settings is None else json.dumps(settings, sort_keys=True)
    session.flush()
    return row


def last_version(session: Session, run_id: str) -> LineageRow | None:
    """The latest entry of a run (the highest step), the parent of its next save."""
    return session.scalar(
        select(LineageRow)
        .where(LineageRow.run_id == run_id)
        .order_by(LineageRow.step.desc(), LineageRow.id.desc())
        .limit(1)
    )


def lineage_of(session: Session, embedding_id: int) -> list[dict[str, Any]]:
    """Every version of every run ``embedding_id`` belongs to, in order, as dicts."""
    runs = session.scalars(
        select(LineageRow.run_id).where(LineageRow.embedding_id == embedding_id)
    ).all()
    if not runs:
        return []
    rows = session.execute(
        select(LineageRow, EmbeddingRow.name, EmbeddingRow.vectors_sha256)
        .join(EmbeddingRow, EmbeddingRow.id == LineageRow.embedding_id)
        .where(LineageRow.run_id.in_(runs))
        .order_by(LineageRow.run_id, LineageRow.step, LineageRow.id)
    ).all()
    return [
        {
            "run_id": row.run_id,
            "operation": row.operation,
            "ref": f"{name}@{sha[:8]}",
            "step": row.step,
            "loss": row.loss,
            "parent_id": row.parent_id,
            "this": row.embedding_id == embedding_id,
            "settings": json.loads(row.settings) if row.settings else None,
        }
        for row, name, sha in rows
    ]
