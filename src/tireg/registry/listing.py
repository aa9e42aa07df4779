"""What a listing of embeddings is: its filters, its order, and what each row shows, written once
as SQL that runs on any connection.

``tireg list`` is the command people run most, so it must start in a blink, and importing
SQLAlchemy alone costs more than all the rest of it (see :mod:`tireg.db.reader`). So the listing
is plain SQL with named parameters (``:name``, which Python's ``sqlite3`` and SQLAlchemy's
``text()`` both take) run through an :data:`~tireg.db.reader.Execute`: on a SQLite file at head,
``sqlite3`` directly (:func:`list_sqlite_file`); anywhere else, and for every other caller (the
gallery, ``search`` and ``show`` through :mod:`tireg.registry.query`), a SQLAlchemy session's
connection. The rules below are the only copies: the order, each filter, the shown prompt word,
the ref (:func:`refs`) and the row itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

from tireg import config
from tireg.db.keys import name_key
from tireg.db.reader import Execute, connect_for_reading, executor
from tireg.errors import TiregError

#: hex digits shown in a ref (``name@1a2b3c4d``); more where candidates share them
REF_HEX = 8

#: the listing order: by name as people read it, case-insensitively, then oldest first (the
#: ``ix_embeddings_name_order`` index serves it: migration 0008)
ORDER = "lower(embeddings.name), embeddings.id"

#: ids per ``IN (...)`` when rows are fetched for a page of embeddings (SQLite's bound on
#: parameters is 32766; SQLAlchemy's selectin loads use 500 too)
_CHUNK = 500


@dataclass(frozen=True)
class Filters:
    """Narrow a listing or search. ``None`` means "any"; ``ids`` comes from another question;
    ``compatible_with`` names a model (path, hash or name) the embeddings must work on, judged
    by :mod:`tireg.registry.compat` (a model given as a file is recorded, so pass a session
    from ``Catalogue.transaction()`` then)."""

    family: str | None = None
    concept_type: str | None = None
    source: str | None = None
    tag: str | None = None
    vectors: int | None = None
    ids: frozenset[int] | None = None
    compatible_with: str | None = None


@dataclass(frozen=True)
class EmbeddingSummary:
    """One row of a listing; ``ref`` is the spec that names exactly this embedding."""

    id: int
    ref: str
    #: what users type (:func:`shown_word`); ``trained_as`` is the name inside the file
    name: str
    vectors_sha256: str
    family: str
    num_vectors: int
    concept_type: str | None
    description: str | None
    tags: list[str]
    #: the training step and trained-on model (its name, else its hash): what tells versions of
    #: one embedding apart in a listing
    step: int | None = None
    trained_on: str | None = None
    rank: float | None = None
    trained_as: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: no filter at all: every embedding
NO_FILTERS = Filters()


class Listed(NamedTuple):
    """The ``embeddings`` columns a row of a listing is made of (selected in this order)."""

    id: int
    name: str
    vectors_sha256: str
    family: str
    num_vectors: int
    concept_type: str | None
    description: str | None
    step: int | None
    trained_on_name: str | None
    trained_on_hash: str | None


class UnknownFilterError(TiregError):
    """A filter names a tag or source the catalogue has never seen (a typo, most likely)."""


# -- what a row shows ------------------------------------------------------------------------


def shown_word(words: Sequence[str], name: str) -> str:
    """What users type for an embedding: the stem of the first file it was read from (its
    prompt ``words`` in the order recorded; A1111's prompt word), else the name it was trained
    as (a Hub token, an image card's name)."""
    return words[0] if words else name


def ref(word: str, vectors_sha256: str, hex_digits: int = REF_HEX) -> str:
    """The ``NAME@HEX`` spec that names the embedding typed as ``word`` with these vectors."""
    return f"{word}@{vectors_sha256[:hex_digits]}"


def refs(execute: Execute, shown: Iterable[tuple[int, str, str]]) -> dict[int, str]:
    """The shortest spec naming each ``(id, shown word, vectors sha256)``: the word where no
    other embedding answers to it (as a trigger or a prompt word, by :func:`name_key`), else
    ``WORD@HEX``. Listings show these, so what a user sees is what they can type."""
    shown = list(shown)
    answering: dict[str, set[int]] = {}
    keys = sorted({name_key(word) for _, word, _ in shown})
    for chunk in _chunks(keys):
        marks = _marks(chunk)
        statement = (  # the keys are bound parameters; only their ":vN" names are written in
            f"SELECT name_key, id FROM embeddings WHERE name_key IN ({marks}) UNION ALL "  # noqa: S608
            f"SELECT word_key, embedding_id FROM prompt_words WHERE word_key IN ({marks})"
        )
        for key, embedding_id in execute(statement, _params(chunk)):
            answering.setdefault(key, set()).add(embedding_id)
    return {
        i: ref(word, sha) if len(answering.get(name_key(word), ())) > 1 else word
        for i, word, sha in shown
    }


def trained_on(name: str | None, model_hash: str | None) -> str | None:
    """The trained-on model as a listing shows it: its name and short hash, either alone."""
    short = model_hash[:10] if model_hash else None
    if name and short:
        return f"{name} [{short}]"
    return name or short


def summaries(
    execute: Execute,
    rows: Sequence[Listed],
    words: dict[int, str],
    tags: dict[int, list[str]],
    ranks: dict[int, float] | None = None,
) -> list[EmbeddingSummary]:
    """The listing rows of ``rows``, each with its shown word (``words``), :func:`refs` and
    ``tags``."""
    shown = refs(execute, [(r.id, words[r.id], r.vectors_sha256) for r in rows])
    return [
        EmbeddingSummary(
            id=r.id,
            ref=shown[r.id],
            name=words[r.id],
            vectors_sha256=r.vectors_sha256,
            family=r.family,
            num_vectors=r.num_vectors,
            concept_type=r.concept_type,
            description=r.description,
            tags=sorted(tags.get(r.id, [])),
            step=r.step,
            trained_on=trained_on(r.trained_on_name, r.trained_on_hash),
            rank=None if ranks is None else ranks[r.id],
            trained_as=r.name,
        )
        for r in rows
    ]


# -- which rows ------------------------------------------------------------------------------


def from_source(source: str) -> tuple[str, dict[str, Any]]:
    """Provenance rows (``SELECT provenance.id ...``) from source kind ``source``, or whose
    source locator or file location contains ``source``; and the statement's parameters."""
    statement = (
        "SELECT provenance.id FROM provenance"
        " LEFT OUTER JOIN sources ON sources.id = provenance.source_id"
        " WHERE (sources.kind = :flt_source OR sources.locator LIKE :flt_source_like"
        " OR provenance.location LIKE :flt_source_like)"
    )
    return statement, {"flt_source": source, "flt_source_like": f"%{source}%"}


def condition(filters: Filters) -> tuple[str | None, dict[str, Any]]:
    """The SQL condition on ``embeddings`` that ``filters`` ask for (``None`` for none) and its
    parameters (all named ``flt_*``, so the condition joins any statement). ``compatible_with``
    must have been turned into ``ids`` already (:func:`tireg.registry.query.list_embeddings`)."""
    if filters.compatible_with is not None:
        raise ValueError("compatible_with is judged by tireg.registry.compat, not in SQL")
    conditions: list[str] = []
    params: dict[str, Any] = {}
    for column, value in (
        ("family", filters.family),
        ("concept_type", filters.concept_type),
        ("num_vectors", filters.vectors),
    ):
        if value is not None:
            conditions.append(f"embeddings.{column} = :flt_{column}")
            params[f"flt_{column}"] = value
    if filters.tag is not None:
        # a list of ids looked up once in the lower(tag) index (migration 0008), not a probe per
        # row: with a rare tag that probe walked all 100,000 embeddings (250 ms)
        conditions.append(
            "embeddings.id IN (SELECT tags.embedding_id FROM tags WHERE lower(tags.tag) = :flt_tag)"
        )
        params["flt_tag"] = filters.tag.strip().lower()
    if filters.source is not None:
        provenance, more = from_source(filters.source)
        conditions.append(f"EXISTS ({provenance} AND provenance.embedding_id = embeddings.id)")
        params.update(more)
    if filters.ids is not None:
        # integers, written into the statement: no bound on how many (SQLite's on parameters)
        ids = ", ".join(str(int(i)) for i in sorted(filters.ids))
        conditions.append(f"embeddings.id IN ({ids})" if ids else "1 = 0")
    return (" AND ".join(conditions) or None), params


def check_known(execute: Execute, filters: Filters) -> None:
    """Refuse a ``--tag`` or ``--source`` that nothing carries: an empty table would read as
    "no such embedding" when the user mistyped the filter."""
    if filters.tag is not None:
        wanted = {"tag": filters.tag.strip().lower()}
        if not execute("SELECT tag FROM tags WHERE lower(tag) = :tag LIMIT 1", wanted):
            in_use = "SELECT DISTINCT tag FROM tags ORDER BY tag LIMIT 12"
            used = [t for (t,) in execute(in_use, {})]
            raise UnknownFilterError(
                f"no embedding is tagged {filters.tag!r}",
                hint="tags in use: " + (", ".join(used) or "none yet; add some with tireg tag"),
            )
    if filters.source is not None:
        provenance, params = from_source(filters.source)
        if not execute(f"{provenance} LIMIT 1", params):
            kinds = [k for (k,) in execute("SELECT DISTINCT kind FROM sources ORDER BY kind", {})]
            raise UnknownFilterError(
                f"no embedding comes from a source matching {filters.source!r}",
                hint="source kinds here: " + (", ".join(kinds) or "none"),
            )


def list_rows(
    execute: Execute, filters: Filters = NO_FILTERS, *, limit: int | None = 100, offset: int = 0
) -> list[EmbeddingSummary]:
    """Embeddings matching ``filters`` (checked, ``compatible_with`` resolved), in
    :data:`ORDER`, with everything their rows show; ``limit=None`` lists them all."""
    where, params = condition(filters)
    # written from constants, the integers of ids and bound parameters alone
    columns = ", ".join(f"embeddings.{c}" for c in Listed._fields)
    statement = f"SELECT {columns} FROM embeddings"  # noqa: S608
    statement += f" WHERE {where}" if where else ""
    statement += f" ORDER BY {ORDER}"
    if limit is not None:
        statement += " LIMIT :limit OFFSET :offset"
        params.update(limit=limit, offset=offset)
    rows = [Listed(*row) for row in execute(statement, params)]
    if limit is None:
        rows = rows[offset:]  # SQLite takes no OFFSET without a LIMIT
    words: dict[int, list[str]] = {}
    tags: dict[int, list[str]] = {}
    for chunk in _chunks([r.id for r in rows]):
        ids = ", ".join(str(int(i)) for i in chunk)
        worded = f"SELECT embedding_id, word FROM prompt_words WHERE embedding_id IN ({ids})"  # noqa: S608
        for embedding_id, word in execute(f"{worded} ORDER BY id", {}):
            words.setdefault(embedding_id, []).append(word)
        tagged = f"SELECT embedding_id, tag FROM tags WHERE embedding_id IN ({ids})"  # noqa: S608
        for embedding_id, tag in execute(tagged, {}):
            tags.setdefault(embedding_id, []).append(tag)
    shown = {r.id: shown_word(words.get(r.id, []), r.name) for r in rows}
    return summaries(execute, rows, shown, tags)


def list_sqlite_file(
    db: str | None, filters: Filters = NO_FILTERS, *, limit: int | None = 100
) -> list[EmbeddingSummary] | None:
    """``tireg list`` without SQLAlchemy: :func:`list_rows` of the catalogue at ``db`` (see
    :func:`tireg.config.database_url`) in one read transaction, when it is a SQLite file at
    head (:func:`tireg.db.reader.connect_for_reading`).

    ``None`` where the catalogue must be opened through SQLAlchemy and listed by
    :func:`tireg.registry.query.list_catalogue`, which runs the same statements: another
    backend, a catalogue to create or migrate, a filter that needs the compatibility rules
    (``compatible_with``), and any SQLite error, so that every failure is reported the one way
    it always was.
    """
    conn = None if filters.compatible_with else connect_for_reading(config.database_url(db))
    if conn is None:
        return None
    try:
        execute = executor(conn)
        check_known(execute, filters)
        return list_rows(execute, filters, limit=limit)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def resolved_filters(filters: Filters, ids: Iterable[int] | None) -> Filters:
    """``filters`` with ``compatible_with`` replaced by the ``ids`` of embeddings it allows
    (intersected with any ``ids`` already there)."""
    if ids is None:
        return filters
    allowed = frozenset(ids)
    if filters.ids is not None:
        allowed &= filters.ids
    return replace(filters, ids=allowed, compatible_with=None)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    return (values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK))


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(f":v{i}" for i in range(len(values)))


def _params(values: Sequence[Any]) -> dict[str, Any]:
    return {f"v{i}": v for i, v in enumerate(values)}
