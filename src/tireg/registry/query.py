"""Finding and looking at catalogued embeddings: list, ranked search and show.

Embeddings are named by the naming rule of :mod:`tireg.registry.naming`; every listing shows each
row's ref (its :func:`~tireg.registry.naming.refs`), exactly what to type.

**Search** goes through the search index (name, triggers, description, tags, sources; one row
per ``embeddings.id``: FTS5 on SQLite, ``tsvector`` and ``pg_trgm`` on PostgreSQL, see
:mod:`tireg.registry.search_index`) first and joins and filters afterwards, ordering by the
index's rank (BM25, or ``ts_rank_cd``) alone and always with a LIMIT, which keeps a ranked query
at about a microsecond per matching row instead of a scan per filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, TextClause, literal, literal_column, or_, select, text
from sqlalchemy.orm import Session, selectinload

from tireg import config
from tireg.db.schema import EmbeddingRow, name_key
from tireg.db.session import executor
from tireg.registry import available, listing, search_text
from tireg.registry.available import AvailableEntry
from tireg.registry.install_state import install_record
from tireg.registry.lineage import lineage_of
from tireg.registry.listing import NO_FILTERS, EmbeddingSummary, Filters
from tireg.registry.naming import _named, _rows_named, prompt_word, refs_of, resolve

if TYPE_CHECKING:
    from tireg.db.session import Catalogue

#: the rank of a whole-name match, before every word match (whose ranks are negative)
WHOLE_NAME_RANK = -1e9


@dataclass(frozen=True)
class EmbeddingDetails:
    """Everything the catalogue knows about one embedding (``tireg show``)."""

    summary: EmbeddingSummary
    facts: dict[str, Any]
    store_file: str
    store_file_present: bool
    sources: list[dict[str, Any]]
    installs: list[dict[str, Any]]
    compat: list[dict[str, Any]]
    same_name: list[str] = field(default_factory=list)
    #: pictures of what it does: a file path (beside the embedding, or kept under
    #: ``TIREG_HOME/previews``) or an image URL, with the sha256 where the bytes were seen
    previews: list[dict[str, Any]] = field(default_factory=list)
    #: ``tireg validate`` runs that rendered it, newest first, with their grids
    validations: list[dict[str, Any]] = field(default_factory=list)
    #: the versions of the run that made it (:func:`tireg.registry.lineage.lineage_of`)
    lineage: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            **self.facts,
            "store_file": self.store_file,
            "store_file_present": self.store_file_present,
            "sources": self.sources,
            "installs": self.installs,
            "compat": self.compat,
            "same_name": self.same_name,
            "previews": self.previews,
            "validations": self.validations,
            "lineage": self.lineage,
        }


# -- listing and search ----------------------------------------------------------------------


def _resolved(session: Session, filters: Filters) -> Filters:
    """``filters`` checked (:func:`tireg.registry.listing.check_known`), with
    ``compatible_with`` turned into the ids of the embeddings that work."""
    listing.check_known(executor(session), filters)
    if filters.compatible_with is None:
        return filters
    from tireg.registry import compat, model_refs  # checkpoints: only --compatible-with needs them

    model = model_refs.resolve_model(session, filters.compatible_with)
    return listing.resolved_filters(filters, compat.compatible_embedding_ids(session, model))


def _filtered(query: Select[Any], filters: Filters) -> Select[Any]:
    """``query`` (over ``embeddings``) narrowed by ``filters``
    (:func:`tireg.registry.listing.condition`)."""
    where, params = listing.condition(filters)
    return query if where is None else query.where(text(where).bindparams(**params))


def _summaries(
    session: Session, rows: Sequence[EmbeddingRow], ranks: dict[int, float] | None = None
) -> list[EmbeddingSummary]:
    """The listing rows (:func:`tireg.registry.listing.summaries`) of ``rows``."""
    return listing.summaries(
        executor(session),
        [listing.Listed(*(getattr(r, c) for c in listing.Listed._fields)) for r in rows],
        {r.id: prompt_word(r) for r in rows},
        {r.id: [t.tag for t in r.tags] for r in rows},
        ranks,
    )


def list_embeddings(
    session: Session, filters: Filters = NO_FILTERS, *, limit: int | None = 100, offset: int = 0
) -> list[EmbeddingSummary]:
    """Catalogued embeddings matching ``filters``, by name; ``limit=None`` lists them all
    (:func:`tireg.registry.listing.list_rows`)."""
    filters = _resolved(session, filters)
    return listing.list_rows(executor(session), filters, limit=limit, offset=offset)


def search(
    session: Session, query: str, filters: Filters = NO_FILTERS, *, limit: int = 20
) -> list[EmbeddingSummary]:
    """The ``limit`` best matches of ``query`` among embeddings matching ``filters``.

    1. An embedding whose whole name (or prompt word) is what was typed, as the naming rule
       reads names (``<Cat-Toy>`` is ``cat-toy``).
    2. Word matches, best BM25 first (every word must match, the last also as a prefix): those
       in the name, triggers or tags, then those anywhere else (description, sources); words
       in more than :data:`~tireg.registry.search_index.COMMON` rows rank their newest matches,
       shorter first (see :func:`~tireg.registry.search_index.word_matches`).
    3. When those are fewer than ``limit``, infix matches from the trigram index follow: any
       substring of the name, triggers or tags (``板蓝根`` in ``大猫板蓝根-100000``, ``yuno`` in
       ``gasaiyuno``). Words of one or two characters, below a trigram, match by ``LIKE`` on
       the same columns.

    Without filters the index answers ``ORDER BY rank LIMIT n`` on its own; with filters the
    matches are taken first (a materialised CTE) and only then joined and filtered, so a filter
    never turns into a per-row index lookup.
    """
    # the index's upkeep knows the well-known checkpoints' names; `list` never needs them
    from tireg.registry import search_index

    filters = _resolved(session, filters)
    index = search_index.backend(session)
    if index is None:
        return _search_like(session, query, filters, limit=limit)
    hits: list[tuple[int, float]] = []

    def add(more: list[tuple[int, float]]) -> None:
        found = {i for i, _ in hits}
        hits.extend([hit for hit in more if hit[0] not in found][: limit - len(hits)])

    # a whole name (or prompt word) first: an index lookup, and what someone typing it wants
    named = select(EmbeddingRow.id, literal(WHOLE_NAME_RANK).label("rank"))
    add(_ranked(session, named.where(_named({name_key(query)})), filters, limit))
    # then names, triggers and tags: what people type, and fewer matches than descriptions
    # hold; then every column (see search_index.word_matches for what either costs)
    for columns in (search_text.TYPED_COLUMNS, None):
        if len(hits) < limit:
            words = search_index.word_matches(session, index, query, columns=columns)
            if words is not None:
                add(_ranked(session, words, filters, limit + len(hits)))
    if len(hits) < limit:
        infix = index.infix_matches(query)
        if infix is not None:
            add(_ranked(session, infix, filters, limit + len(hits)))
    ranks = dict(hits)
    rows = session.scalars(
        select(EmbeddingRow)
        .where(EmbeddingRow.id.in_(list(ranks)))
        .options(selectinload(EmbeddingRow.tags))
    )
    by_id = {r.id: r for r in rows}
    return _summaries(session, [by_id[i] for i, _ in hits if i in by_id], ranks)


def _ranked(
    session: Session, matches: Any, filters: Filters, limit: int
) -> list[tuple[int, float]]:
    """The ``limit`` best ``(id, rank)`` of ``matches`` (an ``id, rank`` statement) that pass
    ``filters``."""
    if isinstance(matches, TextClause):
        matches = matches.columns(literal_column("id"), literal_column("rank"))
    found = matches.subquery()
    if filters == Filters():
        # flattened by SQLite into FTS5's own ORDER BY rank LIMIT, which keeps only the best n
        # (PostgreSQL: a top-n sort over the index's matches)
        best = select(found.c.id, found.c.rank).order_by(found.c.rank).limit(limit)
        return [(int(i), float(r)) for i, r in session.execute(best)]
    matched = (
        select(found.c.id, found.c.rank)
        .cte("matched")
        .prefix_with("MATERIALIZED", dialect="sqlite")
    )
    ranked = _filtered(
        select(matched.c.id, matched.c.rank).join(EmbeddingRow, EmbeddingRow.id == matched.c.id),
        filters,
    )
    ranked = ranked.order_by(matched.c.rank).limit(limit)
    return [(int(i), float(r)) for i, r in session.execute(ranked)]


def _search_like(
    session: Session, query: str, filters: Filters, *, limit: int
) -> list[EmbeddingSummary]:
    """Search without an index (catalogues on databases other than SQLite and PostgreSQL):
    every word in the name or the description, unranked, by name."""
    words = query.split()
    if not words:
        return []
    conditions = [
        or_(EmbeddingRow.name.ilike(f"%{w}%"), EmbeddingRow.description.ilike(f"%{w}%"))
        for w in words
    ]
    found = _filtered(select(EmbeddingRow).where(*conditions), filters)
    found = found.order_by(text(listing.ORDER)).limit(limit)
    return _summaries(
        session,
        list(session.scalars(found.options(selectinload(EmbeddingRow.tags)))),
    )


# -- the same questions asked of a catalogue, each in a session of its own -------------------


def _session_for(catalogue: Catalogue, filters: Filters) -> AbstractContextManager[Session]:
    """A read session, or a write transaction when ``compatible_with`` may name a model file,
    which :func:`tireg.registry.compat.resolve_model` hashes and records."""
    return catalogue.reading() if filters.compatible_with is None else catalogue.transaction()


def list_catalogue(
    catalogue: Catalogue, filters: Filters = NO_FILTERS, *, limit: int | None = 100
) -> list[EmbeddingSummary]:
    """:func:`list_embeddings` in a session of its own (``tireg list``)."""
    with _session_for(catalogue, filters) as session:
        return list_embeddings(session, filters, limit=limit)


@dataclass(frozen=True)
class SearchResults:
    """What ``tireg search`` finds: catalogued matches, best first, then sources known but not
    downloaded (asked only without filters: they have no family, tags or vectors to filter on)."""

    local: list[EmbeddingSummary]
    available: list[AvailableEntry]


def search_catalogue(
    catalogue: Catalogue, text: str, filters: Filters = NO_FILTERS, *, limit: int = 20
) -> SearchResults:
    """:func:`search` and :func:`tireg.registry.available.search` in one session."""
    with _session_for(catalogue, filters) as session:
        local = search(session, text, filters, limit=limit)
        remote = available.search(session, text, limit=limit) if filters == Filters() else []
    return SearchResults(local, remote)


def show_embedding(
    catalogue: Catalogue, spec: str, *, source: str | None = None
) -> EmbeddingDetails:
    """:func:`show` in a read session of its own (``tireg show``)."""
    with catalogue.reading() as session:
        return show(session, spec, source=source)


# -- show ------------------------------------------------------------------------------------


def store_file(row: EmbeddingRow) -> Path:
    """Where the internal-format file of ``row`` lives in the content store."""
    return config.store_dir() / row.store_path


def details(session: Session, row: EmbeddingRow) -> EmbeddingDetails:
    """Every fact, file, source, install, compatibility record and preview of ``row``."""
    facts = {
        "widths": row.widths,
        "licence": row.licence,
        "nsfw": row.nsfw,
        "step": row.step,
        "trained_on_hash": row.trained_on_hash,
        "trained_on_name": row.trained_on_name,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
    sources = []
    for prov in sorted(row.provenance, key=lambda p: p.id):
        src = prov.source
        sources.append(
            {
                "location": prov.location,
                "format": prov.original_format,
                "original_sha256": prov.original_sha256,
                "name_in_file": prov.name_in_file,
                "revision": prov.revision,
                "imported_at": prov.imported_at,
                "source": None
                if src is None
                else {
                    "kind": src.kind,
                    "locator": src.locator,
                    "revision": src.revision,
                    "title": src.title,
                    "trigger": src.trigger,
                    "licence": src.licence,
                    "base_model_hint": src.base_model_hint,
                    "status": src.status,
                },
            }
        )
    compat = [
        {"relation": c.relation, "model_ref": c.model_ref, "evidence": c.evidence}
        for c in sorted(row.compat, key=lambda c: c.id)
    ]
    from tireg.registry import validations  # it names embeddings through this module

    others = [r for r in _rows_named(session, [prompt_word(row), row.name]) if r.id != row.id]
    (summary,) = _summaries(session, [row])
    path = store_file(row)
    return EmbeddingDetails(
        summary=summary,
        facts=facts,
        store_file=str(path),
        store_file_present=path.is_file(),
        sources=sources,
        installs=[install_record(i) for i in sorted(row.installs, key=lambda i: i.id)],
        compat=compat,
        same_name=refs_of(others) if others else [],
        previews=[
            {"location": p.location, "sha256": p.sha256}
            for p in sorted(row.previews, key=lambda p: p.id)
        ],
        lineage=lineage_of(session, row.id),
        validations=[
            validations.run_record(run) for run in validations.runs_of_embedding(session, row.id)
        ],
    )


def show(session: Session, spec: str, *, source: str | None = None) -> EmbeddingDetails:
    """:func:`details` of the embedding ``spec`` names (see the naming rule)."""
    return details(session, resolve(session, spec, source=source))
