"""Changing what the catalogue holds by hand: tags on an embedding, and removing embeddings.

Both keep the search index in step inside the same transaction (:mod:`tireg.registry.search_index`),
so a search never finds a removed embedding or misses a new tag.

Removing an embedding deletes its row (tags, provenance, previews, compatibility facts and install
records go with it) and its content-store file, which belongs to it alone: the store is keyed by
the vectors, and the vectors are unique per row. Files installed into UIs are left where they are
(a UI may be using them) unless ``uninstall`` is asked for; then the ones still exactly as tireg
wrote them are deleted first, and modified ones are kept and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tireg.db.schema import EmbeddingRow, TagRow
from tireg.db.session import Catalogue, retried
from tireg.errors import TiregError
from tireg.registry import install, naming, search_index
from tireg.registry.importer import add_tags
from tireg.registry.store import ContentStore


class TagError(TiregError):
    """A tag that cannot be stored (empty, or with a comma, which separates tags on input)."""


def clean_tags(tags: Sequence[str]) -> list[str]:
    """Tags as stored: trimmed, in order, each once; a comma or an empty tag is refused."""
    cleaned: dict[str, None] = {}
    for tag in tags:
        value = tag.strip()
        if not value or "," in value:
            raise TagError(f"invalid tag {tag!r}", hint="tags are non-empty and hold no comma")
        cleaned.setdefault(value, None)
    return list(cleaned)


def _tags_of(session: Session, embedding_id: int) -> list[str]:
    return sorted(session.scalars(select(TagRow.tag).where(TagRow.embedding_id == embedding_id)))


@retried
def tag(
    catalogue: Catalogue,
    spec: str,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    *,
    source: str | None = None,
) -> list[str]:
    """Add and remove tags on the embedding ``spec`` names; return its tags afterwards.

    Removal compares without regard to case, as the ``--tag`` filter does.
    """
    adding, removing = clean_tags(add), {t.casefold() for t in clean_tags(remove)}
    with catalogue.transaction() as session:
        row = naming.resolve(session, spec, source=source)
        for found in session.scalars(select(TagRow).where(TagRow.embedding_id == row.id)):
            if found.tag.casefold() in removing:
                session.delete(found)
        session.flush()
        add_tags(session, row.id, adding)
        search_index.reindex(session, row.id)
        return _tags_of(session, row.id)


@dataclass
class Removal:
    """What :func:`remove` did to one embedding."""

    ref: str
    vectors_sha256: str
    uninstalled: list[install.UninstallOutcome] = field(default_factory=list)
    left_installed: list[str] = field(default_factory=list)  # existing files, no longer tracked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def remove(
    catalogue: Catalogue,
    specs: Sequence[str],
    *,
    uninstall: bool = False,
    force: bool = False,
    source: str | None = None,
    store: ContentStore | None = None,
) -> list[Removal]:
    """Remove the embeddings ``specs`` name (all resolved before anything changes).

    With ``uninstall``, their installed files are removed first (``force`` also removes files
    modified since install); otherwise installed files stay, untracked, and are reported.
    """
    store = store if store is not None else ContentStore()
    with catalogue.reading() as session:
        rows = naming.resolve_many(session, specs, source=source)
        shown = naming.refs(session, rows)
        installs = {row.id: list(row.installs) for row in rows}
    removals = []
    for row in rows:
        removal = Removal(shown[row.id], row.vectors_sha256)
        if uninstall:
            removal.uninstalled = install.uninstall_rows(
                catalogue, installs[row.id], force=force, refs=shown
            )
        kept = {u.path for u in removal.uninstalled if u.status == "kept"}
        removal.left_installed = [  # a file deleted by hand is not left anywhere
            i.path
            for i in installs[row.id]
            if (not uninstall or i.path in kept) and Path(i.path).is_file()
        ]
        with catalogue.transaction() as session:
            found = session.get(EmbeddingRow, row.id)
            if found is not None:
                session.delete(found)
                search_index.remove(session, row.id)
        # after the commit: a crash before this line leaves an orphan file, never a dangling row
        store.path(row.vectors_sha256).unlink(missing_ok=True)
        removals.append(removal)
    return removals
