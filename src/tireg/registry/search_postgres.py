"""The search index on PostgreSQL: one table with a ``tsvector`` and a ``pg_trgm`` column
(migration 0006), the twin of SQLite's two FTS5 tables.

* ``words``: every token of the five texts with a position and a weight per column (name A,
  triggers B, tags C, description and sources D; PostgreSQL has four weights), under a GIN
  index. A query is every word of what the user typed (a word of several tokens, ``cat-toy``, as
  a phrase), the last one also as a prefix, ranked by ``ts_rank_cd`` with those weights and
  normalised by document length, which is what BM25 rewards too: rare matches in short, important
  columns first. The vector is built here from :func:`~tireg.registry.search_text.tokens`, the
  same splitting the query uses, rather than by PostgreSQL's text parser, whose idea of a word
  (file names, URLs, version numbers, and letters per the database's locale) differs from
  FTS5's; so both backends find the same words.
* ``infix``: name, triggers and tags, one per line, under a trigram GIN index: ``ILIKE``
  ``%word%`` for every word finds any substring, in any script, ranked by trigram
  ``similarity`` to what was typed (shorter texts first, as BM25 prefers).
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from tireg.db.session import FTS_TABLE
from tireg.registry.search_text import COLUMNS, TYPED_COLUMNS, Document, like_pattern, tokens

#: each column's weight label in ``words`` (A counts most)
WEIGHTS = {"name": "A", "triggers": "B", "tags": "C", "description": "D", "sources": "D"}
#: ``ts_rank_cd`` multipliers for the labels D, C, B, A
RANK_WEIGHTS = "{0.1, 0.2, 0.4, 1.0}"
#: ``ts_rank_cd`` normalisation 1: divide by 1 + log(the document's length)
RANK_NORMALISATION = 1
#: PostgreSQL keeps positions up to this and lexemes shorter than 2 KiB
_MAX_POSITION = 16383
_MAX_LEXEME_BYTES = 2046

_DELETE = text(f"DELETE FROM {FTS_TABLE} WHERE id IN :ids").bindparams(  # noqa: S608
    bindparam("ids", expanding=True)
)
_INSERT = text(
    f"INSERT INTO {FTS_TABLE} ({', '.join(COLUMNS)}, id, words, infix) "  # noqa: S608
    f"VALUES ({', '.join(':' + c for c in COLUMNS)}, :id, CAST(:words AS tsvector), :infix)"
)
_WORDS = text(
    f"SELECT id, -ts_rank_cd('{RANK_WEIGHTS}', words, CAST(:q AS tsquery), "  # noqa: S608
    f"{RANK_NORMALISATION}) AS rank FROM {FTS_TABLE} WHERE words @@ CAST(:q AS tsquery)"
)
_COUNT = text(
    f"SELECT count(*) FROM (SELECT 1 FROM {FTS_TABLE} "  # noqa: S608
    "WHERE words @@ CAST(:q AS tsquery) LIMIT :cap) AS found"
)


@cache
def _newest(columns: tuple[str, ...]) -> TextClause:
    """The ``:cap`` newest matches, ranked by the searched texts' length (see
    :mod:`tireg.registry.search_sqlite`): the primary key walked backwards, each row tested
    against its vector, which stops after ``:cap`` matches when the words are common."""
    length = " + ".join(f"length({c})" for c in columns)
    return text(
        f"SELECT id, -1.0 / (1 + {length}) AS rank FROM {FTS_TABLE} "  # noqa: S608
        "WHERE words @@ CAST(:q AS tsquery) ORDER BY id DESC LIMIT :cap"
    )


def vector(doc: Document) -> str:
    """``words`` for one document, as ``tsvector`` input: ``'cat':1A 'toy':2A ...``.

    Columns are a position apart, so a phrase never spans two of them (as in FTS5). Tokens are
    letters and digits only, so none needs quoting beyond the quotes around it.
    """
    lexemes: list[str] = []
    position = 0
    for column in COLUMNS:
        for token in tokens(doc[column]):
            position = min(position + 1, _MAX_POSITION)
            if len(token.encode()) <= _MAX_LEXEME_BYTES:
                lexemes.append(f"'{token}':{position}{WEIGHTS[column]}")
        position += 1
    return " ".join(lexemes)


def ts_query(
    query: str, columns: tuple[str, ...] | None = None, *, prefix: bool = True
) -> str | None:
    """The ``tsquery`` for what a user typed: every word must match (a word of several tokens as
    a phrase), the last token also as a prefix unless ``prefix`` is false, each only in
    ``columns`` when given (by their weight labels); ``None`` when no letters or digits are
    left."""
    words = [found for found in (tokens(w) for w in query.split()) if found]
    if not words:
        return None
    labels = "" if columns is None else "".join(sorted({WEIGHTS[c] for c in columns}))
    lexemes = [[f"'{t}':{labels}" if labels else f"'{t}'" for t in found] for found in words]
    if prefix:
        last = lexemes[-1][-1]
        lexemes[-1][-1] = f"{last}*" if labels else f"{last}:*"
    return " & ".join("(" + " <-> ".join(found) + ")" for found in lexemes)


class PostgresSearch:
    """:class:`~tireg.registry.search_text.SearchBackend` over ``embedding_search``."""

    def delete(self, session: Session, ids: list[int]) -> None:
        session.execute(_DELETE, {"ids": ids})

    def insert(self, session: Session, docs: dict[int, Document]) -> None:
        session.execute(
            _INSERT,
            [
                {
                    **doc,
                    "id": i,
                    "words": vector(doc),
                    "infix": "\n".join(doc[c] for c in TYPED_COLUMNS),
                }
                for i, doc in docs.items()
            ],
        )

    def clear(self, session: Session) -> None:
        session.execute(text(f"DELETE FROM {FTS_TABLE}"))  # noqa: S608

    def stored(self, session: Session) -> list[tuple[tuple[str, ...], dict[int, Document]]]:
        rows = session.execute(text(f"SELECT id, {', '.join(COLUMNS)} FROM {FTS_TABLE}"))  # noqa: S608
        return [(COLUMNS, {r[0]: dict(zip(COLUMNS, r[1:], strict=True)) for r in rows})]

    def word_matches(
        self, query: str, *, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None:
        match = ts_query(query, columns, prefix=prefix)
        return None if match is None else _WORDS.bindparams(q=match)

    def newest_word_matches(
        self, query: str, *, cap: int, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None:
        match = ts_query(query, columns, prefix=prefix)
        return None if match is None else _newest(columns or COLUMNS).bindparams(q=match, cap=cap)

    def count_word_matches(
        self, query: str, *, cap: int, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None:
        match = ts_query(query, columns, prefix=prefix)
        return None if match is None else _COUNT.bindparams(q=match, cap=cap)

    def infix_matches(self, query: str) -> TextClause | None:
        """Every word as a substring of the infix text; words under three characters have no
        trigram to look up and are checked on the rows the others found (or on every row)."""
        words = query.split()
        if not words:
            return None
        params = {f"w{k}": like_pattern(word) for k, word in enumerate(words)}
        conditions = " AND ".join(f"infix ILIKE :{name} ESCAPE '\\'" for name in params)
        return text(
            f"SELECT id, -similarity(infix, :typed) AS rank FROM {FTS_TABLE} "  # noqa: S608
            f"WHERE {conditions}"
        ).bindparams(typed=query, **params)


POSTGRES = PostgresSearch()
