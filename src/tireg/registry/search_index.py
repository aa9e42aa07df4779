"""Keeping the search index in step with the catalogue, on either backend.

One index row per embedding (``embeddings.id``) with five texts: ``name``, ``triggers`` (every
name the vectors were seen under, file stems included, and the triggers sources gave),
``description``, ``tags`` and ``sources`` (source kinds, locators and titles, base-model hints,
file names, and the trained-on model's names). The texts aggregate several tables, so SQL
triggers cannot maintain them; instead whoever changes an embedding's facts calls
:func:`reindex` (or :func:`remove`) in the same transaction, and the index can never disagree
with a committed catalogue.

This module builds the texts once for every backend; how they are stored and matched is a
:class:`SearchBackend`: FTS5 tables on SQLite (:mod:`tireg.registry.search_sqlite`), a
``tsvector`` and ``pg_trgm`` table on PostgreSQL (:mod:`tireg.registry.search_postgres`). On
other databases there is no index, these calls do nothing, and search falls back to plain SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import PurePath

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter, TextClause

from tireg.checkpoints.known_models import lookup_hash
from tireg.db.schema import CompatRow, EmbeddingRow, ProvenanceRow, SourceRow, TagRow
from tireg.registry.search_text import (
    Document,
    SearchBackend,
)


def backend(session: Session) -> SearchBackend | None:
    """This catalogue's search backend (``None`` on databases without one)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from tireg.registry.search_sqlite import SQLITE

        return SQLITE
    if dialect == "postgresql":
        from tireg.registry.search_postgres import POSTGRES

        return POSTGRES
    return None


#: words matching more rows than this are common: see :func:`word_matches`
COMMON = 500


def word_matches(
    session: Session,
    index: SearchBackend,
    query: str,
    *,
    columns: tuple[str, ...] | None = None,
) -> TextClause | None:
    """The word matches of ``query`` as search ranks them (an ``id, rank`` statement).

    Relevance functions score every match (BM25 also reads each matching document's every
    phrase), about two microseconds a match: 170 ms for a word in nearly every row of 100,000.
    So the words are first counted, no further than :data:`COMMON` (a fraction of a
    millisecond): as typed, then with the last one as a prefix. Rarer words are ranked exactly;
    commoner ones by length among their newest :data:`COMMON` matches, which is where BM25's
    order degenerates to for a word in nearly every document anyway (its inverse document
    frequency is near zero), at a bounded cost whatever the catalogue's size. Counting the words
    as typed first spares a common word the prefix expansion, which reads its whole doclist.
    """
    for prefix in (False, True):
        counted = index.count_word_matches(query, cap=COMMON + 1, columns=columns, prefix=prefix)
        if counted is None:
            return None
        if (session.scalar(counted) or 0) > COMMON:
            return index.newest_word_matches(query, cap=COMMON, columns=columns, prefix=prefix)
    return index.word_matches(query, columns=columns)


def has_index(session: Session) -> bool:
    """Whether this catalogue has a search index (SQLite and PostgreSQL catalogues do)."""
    return backend(session) is not None


def _joined(values: list[str | None]) -> str:
    """Distinct non-empty values, in first-seen order, one per line."""
    seen: dict[str, None] = {}
    for value in values:
        if value and value.strip():
            seen.setdefault(value.strip(), None)
    return "\n".join(seen)


# Built once: an import reindexes every embedding it touches, and building a statement costs
# more than running one. Each reads a whole batch of embeddings (``ids``) at a time.
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_ROWS = select(
    EmbeddingRow.id,
    EmbeddingRow.name,
    EmbeddingRow.description,
    EmbeddingRow.trained_on_name,
    EmbeddingRow.trained_on_hash,
).where(EmbeddingRow.id.in_(_IDS))
_TAGS = (
    select(TagRow.embedding_id, TagRow.tag)
    .where(TagRow.embedding_id.in_(_IDS))
    .order_by(TagRow.embedding_id, TagRow.tag)
)
_FOUND = (
    select(
        ProvenanceRow.embedding_id,
        ProvenanceRow.name_in_file,
        ProvenanceRow.location,
        SourceRow.trigger,
        SourceRow.kind,
        SourceRow.locator,
        SourceRow.title,
        SourceRow.base_model_hint,
    )
    .outerjoin(SourceRow, ProvenanceRow.source_id == SourceRow.id)
    .where(ProvenanceRow.embedding_id.in_(_IDS))
    .order_by(ProvenanceRow.id)
)
_HINTS = (
    select(CompatRow.embedding_id, CompatRow.model_ref)
    .where(CompatRow.embedding_id.in_(_IDS), CompatRow.relation == "base_model_hint")
    .order_by(CompatRow.id)
)
#: SQLite allows a limited number of bound values per statement; reindex in slices of this
_SLICE = 500


@cache
def _model_names(trained_on_hash: str | None) -> tuple[str, ...]:
    """The well-known checkpoints a trained-on hash names (several when an old hash collides)."""
    if not trained_on_hash:
        return ()
    return tuple(match.model.name for match in lookup_hash(trained_on_hash))


def documents(session: Session, embedding_ids: Iterable[int]) -> dict[int, Document]:
    """The five searchable texts of each embedding that exists, by id."""
    ids = {"ids": sorted(set(embedding_ids))}
    triggers: dict[int, list[str | None]] = {}
    descriptions: dict[int, str] = {}
    names: dict[int, str] = {}
    sources: dict[int, list[str | None]] = {}
    for embedding_id, name, description, trained_name, trained_hash in session.execute(_ROWS, ids):
        names[embedding_id] = name
        descriptions[embedding_id] = description or ""
        triggers[embedding_id] = [name]
        # `search novelai` finds what was trained on NovelAI's model: its recorded name, and
        # the names the shipped table gives its hash
        sources[embedding_id] = [trained_name, *_model_names(trained_hash)]
    tags: dict[int, list[str | None]] = {i: [] for i in names}
    for embedding_id, name_in_file, location, trigger, *source in session.execute(_FOUND, ids):
        file_name = PurePath(location.rsplit("?", 1)[0]).name
        # A1111 and ComfyUI type the file's stem, whatever name the file holds
        triggers[embedding_id] += [name_in_file, PurePath(file_name).stem, trigger]
        sources[embedding_id] += [file_name, *source]
    for embedding_id, model_ref in session.execute(_HINTS, ids):
        sources[embedding_id].append(model_ref)
    for embedding_id, tag in session.execute(_TAGS, ids):
        tags[embedding_id].append(tag)
    return {
        i: {
            "name": names[i],
            "triggers": _joined(triggers[i]),
            "description": descriptions[i],
            "tags": _joined(tags[i]),
            "sources": _joined(sources[i]),
        }
        for i in names
    }


def document(session: Session, embedding_id: int) -> Document | None:
    """The five searchable texts of one embedding (``None`` if it does not exist)."""
    return documents(session, [embedding_id]).get(embedding_id)


def reindex_many(session: Session, embedding_ids: Iterable[int]) -> None:
    """Rewrite the index rows of these embeddings from the catalogue (dropping rows of any gone).

    Call after changing embeddings' names, descriptions, tags, provenance or sources, in the
    same transaction; a whole batch costs a handful of statements.
    """
    index = backend(session)
    ids = sorted(set(embedding_ids))
    if index is None or not ids:
        return
    session.flush()  # the documents are read back through SQL
    for start in range(0, len(ids), _SLICE):
        part = ids[start : start + _SLICE]
        index.delete(session, part)
        docs = documents(session, part)
        if docs:
            index.insert(session, docs)


def reindex(session: Session, embedding_id: int) -> None:
    """Rewrite the index row of one embedding (see :func:`reindex_many`)."""
    reindex_many(session, [embedding_id])


def remove(session: Session, embedding_id: int) -> None:
    """Drop the index row of ``embedding_id`` (call when deleting the embedding)."""
    index = backend(session)
    if index is not None:
        index.delete(session, [embedding_id])


def rebuild(session: Session) -> int:
    """Rebuild the whole index from the catalogue (repair); return how many rows it holds."""
    index = backend(session)
    if index is None:
        return 0
    index.clear(session)
    ids = session.scalars(select(EmbeddingRow.id).order_by(EmbeddingRow.id)).all()
    reindex_many(session, ids)
    return len(ids)
