"""The naming rule: which catalogued embedding a NAME typed by a user means, and the ref that
names each one in every listing.

Trigger names collide: two ``cat-toy`` from different sources, three ``gasai yuno`` steps of one
training run. A spec names exactly one embedding or the command refuses it:

* ``NAME`` matches embeddings whose trigger is NAME, or one of whose files is named NAME (the
  stem of ``NAME.pt``: A1111 types a file by its stem, whatever name it holds; see
  :mod:`tireg.prompt_words`), ignoring case and ``<...>`` brackets (``birb-style``
  finds ``<birb-style>``); spaces are part of the name (quote it in the shell);
* a bare hex string of 6 or more digits also matches embeddings whose vectors sha256 starts
  with it (the union of both is taken, so a name that happens to be hex is never shadowed);
* ``NAME@HEX`` matches only NAME's embeddings whose vectors sha256 starts with HEX;
* ``--source S`` keeps only candidates with a file from source kind S (``hf``, ``local``...)
  or whose source locator or file location contains S.

One candidate: that is the one. None: an error. Several: an error listing every candidate as the
exact ``NAME@HEX`` to type. Every listing shows that ``ref`` too, so what you see is what you type;
its NAME is the :func:`prompt_word` (the first file stem recorded, else the trained-as name).

It lives apart from :mod:`tireg.registry.query` (listings, search, show) because compatibility
verdicts and validation runs name embeddings too, and ``show`` shows both: one module each way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import Any

from sqlalchemy import insert, or_, select, text
from sqlalchemy.orm import Session

from tireg.db.schema import EmbeddingRow, PromptWordRow, name_key
from tireg.db.session import executor
from tireg.errors import TiregError
from tireg.prompt_words import file_prompt_word
from tireg.registry import listing
from tireg.registry.listing import REF_HEX

#: hex digits a bare spec needs before it is also tried as a vectors-sha256 prefix
MIN_HASH_PREFIX = 6


_HEX = re.compile(r"[0-9a-fA-F]+")


class NotFoundError(TiregError):
    """No catalogued embedding answers to a spec."""


class AmbiguousNameError(TiregError):
    """A spec answers to several embeddings; the message lists the exact spec for each."""

    def __init__(self, spec: str, candidates: Sequence[str]) -> None:
        self.refs = [c.split(" (", 1)[0] for c in candidates]
        super().__init__(
            f"{spec!r} names {len(candidates)} embeddings: {'; '.join(candidates)}",
            hint="type one of the NAME@HEX exactly",
        )


def prompt_word(row: EmbeddingRow) -> str:
    """What users type for ``row`` (:func:`tireg.registry.listing.shown_word`)."""
    return listing.shown_word([w.word for w in row.prompt_words], row.name)


def ref_of(row: EmbeddingRow, hex_digits: int = REF_HEX) -> str:
    """The ``NAME@HEX`` spec that names ``row``."""
    return listing.ref(prompt_word(row), row.vectors_sha256, hex_digits)


def refs_of(rows: Sequence[EmbeddingRow]) -> list[str]:
    """Refs long enough to tell ``rows`` apart from each other."""
    digits = REF_HEX
    while len({r.vectors_sha256[:digits] for r in rows}) < len(rows) and digits < 64:
        digits += 4
    return [ref_of(r, digits) for r in rows]


def _named(wanted: set[str]) -> Any:
    """A WHERE clause for embeddings whose :func:`~tireg.db.schema.name_key` or one of whose
    prompt words' keys is in ``wanted`` (lookups on the indexed key columns)."""
    keys = sorted(wanted)
    by_word = select(PromptWordRow.embedding_id).where(PromptWordRow.word_key.in_(keys))
    return or_(EmbeddingRow.name_key.in_(keys), EmbeddingRow.id.in_(by_word))


def _rows_named(session: Session, names: Iterable[str]) -> list[EmbeddingRow]:
    """Embeddings whose trigger is one of ``names`` (see the naming rule)."""
    wanted = {name_key(n) for n in names}
    return list(session.scalars(select(EmbeddingRow).where(_named(wanted))))


def _rows_with_hash_prefix(session: Session, prefix: str) -> list[EmbeddingRow]:
    """Embeddings whose vectors sha256 starts with ``prefix`` (a range on the unique index)."""
    low = prefix.lower()
    query = select(EmbeddingRow).where(
        EmbeddingRow.vectors_sha256 >= low, EmbeddingRow.vectors_sha256 < low + "g"
    )
    return list(session.scalars(query.limit(50)))


def _from_source(session: Session, ids: Iterable[int], source: str) -> set[int]:
    """Which of ``ids`` have a file from ``source`` (the ``--source`` filter of listings)."""
    where, params = listing.condition(listing.Filters(source=source, ids=frozenset(ids)))
    assert where is not None  # a source is always a condition
    return set(session.scalars(select(EmbeddingRow.id).where(text(where).bindparams(**params))))


def candidates(session: Session, spec: str, *, source: str | None = None) -> list[EmbeddingRow]:
    """Every embedding ``spec`` could mean under the naming rule, oldest first."""
    name, at, suffix = spec.rpartition("@")
    found: dict[int, EmbeddingRow] = {}
    if at and name and _HEX.fullmatch(suffix):
        prefix = suffix.lower()
        named = _rows_named(session, [name])
        found = {r.id: r for r in named if r.vectors_sha256.startswith(prefix)}
    else:
        found = {r.id: r for r in _rows_named(session, [spec])}
        if len(spec) >= MIN_HASH_PREFIX and _HEX.fullmatch(spec):
            found.update((r.id, r) for r in _rows_with_hash_prefix(session, spec))
    if source is not None and found:
        keep = _from_source(session, found, source)
        found = {i: r for i, r in found.items() if i in keep}
    return [found[i] for i in sorted(found)]


def refs(session: Session, rows: Iterable[EmbeddingRow]) -> dict[int, str]:
    """The shortest spec naming each row: its :func:`prompt_word` where no other embedding
    answers to that word, else ``WORD@HEX``. Listings show these, so what a user sees is what
    they can type."""
    shown = [(r.id, prompt_word(r), r.vectors_sha256) for r in rows]
    return listing.refs(executor(session), shown)


def add_prompt_words(session: Session, files: Iterable[tuple[int, str]]) -> set[int]:
    """Record the word A1111 types for each file, ``(embedding_id, location)``, as a name of
    its embedding (nothing for image cards and generic ``learned_embeds``); return the ids that
    got a new word. One lookup and one INSERT for a whole batch of files, in the given order
    (the first word recorded is the one listings show)."""
    wanted: dict[tuple[int, str], str] = {}
    for embedding_id, location in files:
        word = file_prompt_word(location)
        if word is not None:
            wanted.setdefault((embedding_id, name_key(word)), word)
    if not wanted:
        return set()
    known = select(PromptWordRow.embedding_id, PromptWordRow.word_key).where(
        PromptWordRow.embedding_id.in_(sorted({i for i, _ in wanted}))
    )
    for embedding_id, key in session.execute(known):
        wanted.pop((embedding_id, key), None)
    if wanted:
        rows = [{"embedding_id": i, "word": w, "word_key": k} for (i, k), w in wanted.items()]
        session.execute(insert(PromptWordRow), rows)
    return {i for i, _ in wanted}


def resolve(session: Session, spec: str, *, source: str | None = None) -> EmbeddingRow:
    """The one embedding ``spec`` names; raises :class:`NotFoundError` or
    :class:`AmbiguousNameError` (whose message lists the exact spec for each candidate)."""
    rows = candidates(session, spec, source=source)
    if not rows:
        where = f" from source {source!r}" if source else ""
        raise NotFoundError(
            f"no embedding named {spec!r}{where}", hint="find it with: tireg search WORDS"
        )
    if len(rows) > 1:
        described = zip(refs_of(rows), rows, strict=True)
        raise AmbiguousNameError(spec, [f"{ref} ({_hint(row)})" for ref, row in described])
    return rows[0]


def _hint(row: EmbeddingRow) -> str:
    """What tells same-named embeddings apart at a glance: family, size, step, first file."""
    parts = [row.family, f"{row.num_vectors}v"]
    if row.step is not None:
        parts.append(f"step {row.step}")
    if row.provenance:
        first = min(row.provenance, key=lambda p: p.id)
        parts.append(PurePath(first.location.rsplit("?", 1)[0]).name or first.location)
    return ", ".join(parts)


def resolve_many(
    session: Session, specs: Sequence[str], *, source: str | None = None
) -> list[EmbeddingRow]:
    """:func:`resolve` for each spec, in order, each embedding once; all specs are checked first
    so one bad spec fails the command before anything changes."""
    rows: dict[int, EmbeddingRow] = {}
    for spec in specs:
        row = resolve(session, spec, source=source)
        rows.setdefault(row.id, row)
    return list(rows.values())
