"""What can be installed but is not downloaded yet: sources known to the catalogue, no files.

``sync hf`` without ``--download`` records each concept repo (title, trigger, base model,
``status='available'``); ``source add`` records git repos, MEGA links, URLs and rentry rows the
same way; ``search --remote civitai`` records each model version it found, and a Civitai spec
or lookup the version it names. None of them has an embedding until
it is fetched, so the catalogue's search (over embeddings) never showed them. :func:`search`
finds them by the words users type, and each entry's ``ref`` is what ``tireg install`` takes
(:func:`install_spec`): the remote spec where one exists, else ``source:ID`` (a git repo),
which fetches that source and installs what it gave.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from tireg.db.schema import ProvenanceRow, SourceRow

#: the spec prefix naming a catalogued source by id (``source:12``)
SOURCE_PREFIX = "source:"
_SEARCHED = (
    SourceRow.title,
    SourceRow.locator,
    SourceRow.trigger,
    SourceRow.description,
    SourceRow.base_model_hint,
)


@dataclass(frozen=True)
class AvailableEntry:
    """One source that can be installed from: ``ref`` is what to type after ``tireg install``."""

    ref: str
    kind: str
    title: str | None
    trigger: str | None
    base_model: str | None
    description: str | None
    state: str = "remote"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "available": True}


def install_spec(source: SourceRow) -> str:
    """What ``tireg install`` takes for ``source``: ``hf:REPO``, ``civitai:MODEL@VERSION``, the
    URL or MEGA link itself, or ``source:ID`` where no remote spec reaches it (git)."""
    if source.kind == "hf":
        return f"hf:{source.locator}"
    if source.kind == "civitai":
        return f"civitai:{source.locator}"
    if source.kind in ("url", "mega"):
        return source.locator
    return f"{SOURCE_PREFIX}{source.id}"


def source_id(spec: str) -> int | None:
    """The id in a ``source:ID`` spec, or None for any other spec."""
    if not spec.startswith(SOURCE_PREFIX) or not spec[len(SOURCE_PREFIX) :].isdigit():
        return None
    return int(spec[len(SOURCE_PREFIX) :])


def search(session: Session, text: str, *, limit: int = 20) -> list[AvailableEntry]:
    """Sources with nothing downloaded (``available``) where every word of ``text`` is in the
    title, locator, trigger, description or base model; case-insensitive, wildcards literal."""
    words = text.split()
    if not words:
        return []
    nothing_fetched = ~exists(
        select(ProvenanceRow.id).where(ProvenanceRow.source_id == SourceRow.id)
    )
    every_word = and_(
        *(or_(*(column.contains(word, autoescape=True) for column in _SEARCHED)) for word in words)
    )
    found = (
        select(SourceRow)
        .where(SourceRow.status == "available", nothing_fetched, every_word)
        .order_by(SourceRow.kind, SourceRow.title, SourceRow.id)
        .limit(limit)
    )
    return [
        AvailableEntry(
            ref=install_spec(s),
            kind=s.kind,
            title=s.title,
            trigger=s.trigger,
            base_model=s.base_model_hint,
            description=s.description,
        )
        for s in session.scalars(found)
    ]
