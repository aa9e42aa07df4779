"""Tags on an embedding, in one place: how tags are written, attached and changed by hand.

Tags reach the catalogue two ways: as a comma-separated hint from a source or ``tireg add
--tag`` (the importer calls :func:`split_tags` and :func:`add_tags`), and by hand with
``tireg tag`` (:func:`tag`). Both keep the same rule: a tag is trimmed, non-empty, holds no
comma (commas separate tags on input), and is attached once. :func:`tag` keeps the search index
in step inside the same transaction (:mod:`tireg.registry.search_index`), so a search never
misses a new tag; the importer reindexes once for everything it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from tireg.db.schema import TagRow
from tireg.db.session import Catalogue, retried
from tireg.errors import TiregError
from tireg.registry import naming, search_index

_TAGS = select(TagRow.tag).where(TagRow.embedding_id == bindparam("id"))


class TagError(TiregError):
    """A tag that cannot be stored (empty, or with a comma, which separates tags on input)."""


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags as stored: trimmed, in order, each once; a comma or an empty tag is refused."""
    cleaned: dict[str, None] = {}
    for tag in tags:
        value = tag.strip()
        if not value or "," in value:
            raise TagError(f"invalid tag {tag!r}", hint="tags are non-empty and hold no comma")
        cleaned.setdefault(value, None)
    return list(cleaned)


def split_tags(text: str) -> list[str]:
    """Tags from a comma-separated hint, as stored: ``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return clean_tags(part for part in text.split(",") if part.strip())


def add_tags(session: Session, embedding_ids: Iterable[int], tags: Iterable[str]) -> set[int]:
    """Attach each of ``tags`` to each embedding that lacks it (one lookup, one INSERT); return
    the ids that got a tag. The caller reindexes."""
    wanted = list(dict.fromkeys(tags))
    ids = sorted(set(embedding_ids))
    if not wanted or not ids:
        return set()
    query = select(TagRow.embedding_id, TagRow.tag).where(
        TagRow.embedding_id.in_(ids), TagRow.tag.in_(wanted)
    )
    have = {tuple(row) for row in session.execute(query)}
    missing = [(i, tag) for i in ids for tag in wanted if (i, tag) not in have]
    if missing:
        session.execute(insert(TagRow), [{"embedding_id": i, "tag": t} for i, t in missing])
    return {i for i, _ in missing}


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
        add_tags(session, [row.id], adding)
        search_index.reindex(session, row.id)
        return sorted(session.scalars(_TAGS, {"id": row.id}))
