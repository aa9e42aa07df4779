"""What each gallery page shows, gathered from the registry as plain data for the templates.

Why apart from the routes: a page's data is the part worth testing and timing (the bench times
:func:`gallery` rendered), and keeping it free of request handling keeps the routes thin, as the
CLI's commands are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tireg.db.schema import (
    CheckpointRow,
    EmbeddingRow,
    PreviewRow,
    SourceRow,
    ValidationImageRow,
)
from tireg.db.session import Catalogue
from tireg.errors import TiregError
from tireg.registry import naming, query, similar
from tireg.registry.install_state import install_record
from tireg.registry.models import USER
from tireg.registry.query import EmbeddingDetails, EmbeddingSummary, Filters
from tireg.registry.uis import UiRoot

#: cards on one gallery page
PAGE_SIZE = 100
FAMILIES = ("sd1", "sd2", "sdxl", "unknown")
#: nearest neighbours shown on an embedding's page
NEIGHBOURS = 8


@dataclass(frozen=True)
class GalleryQuery:
    """The gallery's form: words to search, filters, and a page (1-based) when listing."""

    words: str = ""
    family: str | None = None
    source: str | None = None
    tag: str | None = None
    model: int | None = None  # a user checkpoint's id: "works on this model"
    page: int = 1

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> GalleryQuery:
        """Read the query string; empty fields mean "any", a bad number means the default."""

        def text(name: str) -> str | None:
            value = (args.get(name) or "").strip()
            return value or None

        def number(name: str, default: int | None) -> int | None:
            value = text(name)
            return int(value) if value is not None and value.isdigit() else default

        return cls(
            words=text("q") or "",
            family=text("family"),
            source=text("source"),
            tag=text("tag"),
            model=number("model", None),
            page=max(1, number("page", 1) or 1),
        )

    def link(self, **changes: Any) -> dict[str, Any]:
        """Query-string arguments for this query with ``changes`` (for page and tag links)."""
        values = {
            "q": self.words,
            "family": self.family,
            "source": self.source,
            "tag": self.tag,
            "model": self.model,
            "page": self.page,
        }
        values.update(changes)
        if values["page"] == 1:
            del values["page"]
        return {k: v for k, v in values.items() if v not in (None, "")}


@dataclass(frozen=True)
class Card:
    """One embedding on the gallery: its summary and what to show: its first local preview, else
    the grid of the newest validation run that rendered it, else neither."""

    summary: EmbeddingSummary
    preview_id: int | None
    grid_id: int | None


@dataclass
class Gallery:
    """A gallery page: the cards, the choices the filter form offers, and whether more follow."""

    query: GalleryQuery
    cards: list[Card]
    sources: list[str]
    models: list[CheckpointRow]
    more: bool
    error: str | None = None


def model_spec(row: CheckpointRow) -> str:
    """How to name a user checkpoint to :mod:`tireg.registry.model_refs` without reading its file:
    by hash where one is recorded (an exact match), else by name."""
    return row.sha256 or row.old_hash or row.name


def user_models(session: Session) -> list[CheckpointRow]:
    """The user's checkpoints (``tireg model add``), by name: the "works on this model" choices."""
    found = select(CheckpointRow).where(CheckpointRow.origin == USER)
    return list(session.scalars(found.order_by(func.lower(CheckpointRow.name), CheckpointRow.id)))


def _preview_ids(session: Session, ids: list[int]) -> dict[int, int]:
    """The first local preview of each embedding in ``ids`` (remote ones are never fetched)."""
    found = (
        select(PreviewRow.embedding_id, func.min(PreviewRow.id))
        .where(PreviewRow.embedding_id.in_(ids), PreviewRow.location.not_like("%://%"))
        .group_by(PreviewRow.embedding_id)
    )
    return {int(e): int(p) for e, p in session.execute(found)}


def _grid_ids(session: Session, ids: list[int]) -> dict[int, int]:
    """The newest validation run that rendered each embedding in ``ids``."""
    found = (
        select(ValidationImageRow.embedding_id, func.max(ValidationImageRow.validation_id))
        .where(ValidationImageRow.embedding_id.in_(ids))
        .group_by(ValidationImageRow.embedding_id)
    )
    return {e: int(v) for e, v in session.execute(found) if e is not None}


def gallery(session: Session, wanted: GalleryQuery) -> Gallery:
    """The cards for ``wanted``: a ranked search when words are given, else the catalogue by
    name, a page at a time; an unknown tag or source gives the CLI's error line, no cards."""
    models = user_models(session)
    sources = list(session.scalars(select(SourceRow.kind).distinct().order_by(SourceRow.kind)))
    chosen = next((m for m in models if m.id == wanted.model), None)
    filters = Filters(
        family=wanted.family,
        source=wanted.source,
        tag=wanted.tag,
        compatible_with=model_spec(chosen) if chosen is not None else None,
    )
    try:
        if wanted.words:
            rows = query.search(session, wanted.words, filters, limit=PAGE_SIZE)
            more = False
        else:
            offset = (wanted.page - 1) * PAGE_SIZE
            rows = query.list_embeddings(session, filters, limit=PAGE_SIZE + 1, offset=offset)
            more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
    except TiregError as exc:
        return Gallery(wanted, [], sources, models, False, str(exc))
    previews = _preview_ids(session, [r.id for r in rows])
    grids = _grid_ids(session, [r.id for r in rows if r.id not in previews])
    cards = [Card(r, previews.get(r.id), grids.get(r.id)) for r in rows]
    return Gallery(wanted, cards, sources, models, more)


@dataclass
class EmbeddingPage:
    """An embedding's page: every fact :func:`tireg.registry.query.details` gives, its versions
    (embeddings sharing its name), neighbours, and where it can be installed."""

    row_id: int
    details: EmbeddingDetails
    versions: list[EmbeddingSummary]
    previews: list[int]
    uis: list[UiRoot]
    installs: list[tuple[int, dict[str, Any]]]
    neighbours: list[similar.Neighbour] = field(default_factory=list)
    neighbours_error: str | None = None


def embedding_page(catalogue: Catalogue, row_id: int, uis: list[UiRoot]) -> EmbeddingPage:
    """Everything the page of embedding ``row_id`` shows (:class:`naming.NotFoundError` if none)."""
    with catalogue.reading() as session:
        row = session.get(EmbeddingRow, row_id)
        if row is None:
            raise naming.NotFoundError(f"no embedding with id {row_id}", hint="go back to the list")
        details = query.details(session, row)
        namesakes = naming.candidates(session, row.name)
        versions = query.list_embeddings(
            session, Filters(ids=frozenset(r.id for r in namesakes)), limit=None
        )
        previews = sorted(p.id for p in row.previews if "://" not in p.location)
        installs = [(i.id, install_record(i)) for i in sorted(row.installs, key=lambda i: i.id)]
    page = EmbeddingPage(row_id, details, versions, previews, uis, installs)
    try:
        page.neighbours = similar.similar(catalogue, details.summary.ref, limit=NEIGHBOURS)
    except TiregError as exc:
        page.neighbours_error = str(exc)
    return page
