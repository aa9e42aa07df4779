"""The search index on SQLite: FTS5 tables (migrations 0001 and 0005).

``embedding_search`` is the word index (``unicode61``, diacritics removed, prefix indexes) over
the five texts, ranked by FTS5's BM25 (``rank``); ``embedding_search_trigram`` indexes every
three-character window of name, triggers and tags, so any substring of three or more characters
matches, in any script. Both are keyed by ``rowid = embeddings.id``.
"""

from __future__ import annotations

import re
from functools import cache

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from tireg.db.session import FTS_TABLE, TRIGRAM_TABLE
from tireg.registry.search_text import COLUMNS, TYPED_COLUMNS, Document, like_pattern

_WORD = re.compile(r"\w", re.UNICODE)
_TABLES = {FTS_TABLE: COLUMNS, TRIGRAM_TABLE: TYPED_COLUMNS}
_DELETES = [
    text(f"DELETE FROM {table} WHERE rowid IN :ids").bindparams(  # noqa: S608
        bindparam("ids", expanding=True)
    )
    for table in _TABLES
]
_INSERTS = [
    text(
        f"INSERT INTO {table} (rowid, {', '.join(columns)}) "  # noqa: S608
        f"VALUES (:id, {', '.join(':' + c for c in columns)})"
    )
    for table, columns in _TABLES.items()
]


_WORD_MATCHES = text(f"SELECT rowid AS id, rank FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q")  # noqa: S608
_COUNT = text(
    f"SELECT count(*) FROM (SELECT rowid FROM {FTS_TABLE} "  # noqa: S608
    f"WHERE {FTS_TABLE} MATCH :q LIMIT :cap)"
)


@cache
def _newest(columns: tuple[str, ...]) -> TextClause:
    """The ``:cap`` newest matches (FTS5 walks its doclists backwards by rowid, no sort), ranked
    by the searched texts' length: what BM25 falls back to for a word in nearly every row, whose
    inverse document frequency is near zero, leaving only length normalisation."""
    length = " + ".join(f"length({c})" for c in columns)
    return text(
        f"SELECT rowid AS id, -1.0 / (1 + {length}) AS rank FROM {FTS_TABLE} "  # noqa: S608
        f"WHERE {FTS_TABLE} MATCH :q ORDER BY rowid DESC LIMIT :cap"
    )


def _phrase(word: str) -> str | None:
    """``word`` as an FTS5 string (tokenised like the index, so ``cat-toy`` is a phrase), or
    ``None`` when it holds no letters or digits to match."""
    if not _WORD.search(word):
        return None
    return '"' + word.replace('"', '""') + '"'


def fts_query(query: str, *, prefix: bool = True) -> str | None:
    """The FTS5 MATCH expression for what a user typed: every word must match, the last one as a
    prefix unless ``prefix`` is false (so ``gasai yu`` finds ``gasai yuno``). User input never
    reaches FTS5 syntax."""
    phrases = [p for p in (_phrase(w) for w in query.split()) if p is not None]
    if not phrases:
        return None
    if prefix:
        phrases[-1] += "*"
    return " ".join(phrases)


def _match(query: str, columns: tuple[str, ...] | None, prefix: bool) -> str | None:
    match = fts_query(query, prefix=prefix)
    if match is None or columns is None:
        return match
    return f"{{{' '.join(columns)}}} : ({match})"


class SqliteSearch:
    """:class:`~tireg.registry.search_text.SearchBackend` over the two FTS5 tables."""

    def delete(self, session: Session, ids: list[int]) -> None:
        for delete in _DELETES:
            session.execute(delete, {"ids": ids})

    def insert(self, session: Session, docs: dict[int, Document]) -> None:
        for insert in _INSERTS:
            session.execute(insert, [{"id": i, **doc} for i, doc in docs.items()])

    def clear(self, session: Session) -> None:
        for table in _TABLES:
            session.execute(text(f"DELETE FROM {table}"))  # noqa: S608

    def stored(self, session: Session) -> list[tuple[tuple[str, ...], dict[int, Document]]]:
        found = []
        for table, columns in _TABLES.items():
            rows = session.execute(text(f"SELECT rowid, {', '.join(columns)} FROM {table}"))  # noqa: S608
            found.append((columns, {r[0]: dict(zip(columns, r[1:], strict=True)) for r in rows}))
        return found

    def word_matches(
        self, query: str, *, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None:
        match = _match(query, columns, prefix)
        return None if match is None else _WORD_MATCHES.bindparams(q=match)

    def newest_word_matches(
        self, query: str, *, cap: int, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None:
        match = _match(query, columns, prefix)
        if match is None:
            return None
        return _newest(columns or COLUMNS).bindparams(q=match, cap=cap)

    def count_word_matches(
        self, query: str, *, cap: int, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None:
        match = _match(query, columns, prefix)
        return None if match is None else _COUNT.bindparams(q=match, cap=cap)

    def infix_matches(self, query: str) -> TextClause | None:
        """FTS5's trigram tokenizer matches a phrase of three or more characters anywhere in a
        column; shorter words cannot be looked up that way and use ``LIKE`` (a scan of the small
        columns)."""
        words = query.split()
        long_words = [w for w in words if len(w) >= 3]
        conditions: list[str] = []
        params: dict[str, str] = {}
        if long_words:
            conditions.append(f"{TRIGRAM_TABLE} MATCH :infix")
            params["infix"] = " ".join('"' + w.replace('"', '""') + '"' for w in long_words)
        for k, word in enumerate(w for w in words if len(w) < 3):
            params[f"short{k}"] = like_pattern(word)
            conditions.append(
                "(" + " OR ".join(f"{c} LIKE :short{k} ESCAPE '\\'" for c in TYPED_COLUMNS) + ")"
            )
        if not conditions:
            return None
        rank = "rank" if long_words else "0.0"
        return text(
            f"SELECT rowid AS id, {rank} AS rank FROM {TRIGRAM_TABLE} "  # noqa: S608
            f"WHERE {' AND '.join(conditions)}"
        ).bindparams(**params)


SQLITE = SqliteSearch()
