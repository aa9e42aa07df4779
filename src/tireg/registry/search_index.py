"""Keeping the FTS5 search index (``embedding_search``) in step with the catalogue.

One FTS row per embedding, ``rowid = embeddings.id``, with five columns: ``name``,
``triggers`` (every name the vectors were seen under, file stems included, and the triggers
sources gave), ``description``, ``tags`` and ``sources`` (source kinds, locators and titles,
base-model hints, file names). The columns aggregate several tables, so SQL triggers cannot
maintain them; instead whoever changes an embedding's facts calls :func:`reindex` (or
:func:`remove`) in the same transaction, and the index can never disagree with a committed
catalogue. On databases without FTS5 (anything but SQLite) both are no-ops and search falls back
to plain SQL.
"""

from __future__ import annotations

from pathlib import PurePath

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from tireg.db.models import CompatRow, EmbeddingRow, ProvenanceRow, SourceRow, TagRow
from tireg.db.session import FTS_TABLE


def has_index(session: Session) -> bool:
    """Whether this catalogue has the FTS5 index (SQLite catalogues do)."""
    return session.get_bind().dialect.name == "sqlite"


def _joined(values: list[str | None]) -> str:
    """Distinct non-empty values, in first-seen order, one per line."""
    seen: dict[str, None] = {}
    for value in values:
        if value and value.strip():
            seen.setdefault(value.strip(), None)
    return "\n".join(seen)


# Built once: an import reindexes every file it records, and building a statement costs more
# than running one.
_ROW = select(EmbeddingRow.name, EmbeddingRow.description).where(EmbeddingRow.id == bindparam("id"))
_TAGS = select(TagRow.tag).where(TagRow.embedding_id == bindparam("id")).order_by(TagRow.tag)
_FOUND = (
    select(
        ProvenanceRow.name_in_file,
        ProvenanceRow.location,
        SourceRow.trigger,
        SourceRow.kind,
        SourceRow.locator,
        SourceRow.title,
        SourceRow.base_model_hint,
    )
    .outerjoin(SourceRow, ProvenanceRow.source_id == SourceRow.id)
    .where(ProvenanceRow.embedding_id == bindparam("id"))
    .order_by(ProvenanceRow.id)
)
_HINTS = select(CompatRow.model_ref).where(
    CompatRow.embedding_id == bindparam("id"), CompatRow.relation == "base_model_hint"
)
_DELETE = text(f"DELETE FROM {FTS_TABLE} WHERE rowid = :id")  # noqa: S608
_INSERT = text(
    f"INSERT INTO {FTS_TABLE} (rowid, name, triggers, description, tags, sources) "  # noqa: S608
    "VALUES (:id, :name, :triggers, :description, :tags, :sources)"
)


def document(session: Session, embedding_id: int) -> dict[str, str] | None:
    """The five searchable texts of one embedding (``None`` if it does not exist)."""
    key = {"id": embedding_id}
    row = session.execute(_ROW, key).one_or_none()
    if row is None:
        return None
    name, description = row
    triggers: list[str | None] = [name]
    sources: list[str | None] = []
    for name_in_file, location, trigger, *source in session.execute(_FOUND, key):
        file_name = PurePath(location.rsplit("?", 1)[0]).name
        # A1111 and ComfyUI type the file's stem, whatever name the file holds
        triggers += [name_in_file, PurePath(file_name).stem, trigger]
        sources += [file_name, *source]
    sources += session.scalars(_HINTS, key).all()
    return {
        "name": name,
        "triggers": _joined(triggers),
        "description": description or "",
        "tags": _joined(list(session.scalars(_TAGS, key))),
        "sources": _joined(sources),
    }


def reindex(session: Session, embedding_id: int) -> None:
    """Rewrite the FTS row of ``embedding_id`` from the catalogue (removing it if the row is gone).

    Call after any change to an embedding's name, description, tags, provenance or sources,
    in the same transaction.
    """
    if not has_index(session):
        return
    session.flush()  # the document is read back through SQL
    session.execute(_DELETE, {"id": embedding_id})
    doc = document(session, embedding_id)
    if doc is not None:
        session.execute(_INSERT, {"id": embedding_id, **doc})


def remove(session: Session, embedding_id: int) -> None:
    """Drop the FTS row of ``embedding_id`` (call when deleting the embedding)."""
    if has_index(session):
        session.execute(_DELETE, {"id": embedding_id})


def rebuild(session: Session) -> int:
    """Rebuild the whole index from the catalogue (repair); return how many rows it holds."""
    if not has_index(session):
        return 0
    session.execute(text(f"DELETE FROM {FTS_TABLE}"))  # noqa: S608
    ids = session.scalars(select(EmbeddingRow.id).order_by(EmbeddingRow.id)).all()
    for embedding_id in ids:
        reindex(session, embedding_id)
    return len(ids)
