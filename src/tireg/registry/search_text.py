"""What a search index holds and how a backend matches it: the shared vocabulary of the
upkeep (:mod:`tireg.registry.search_index`) and the backends
(:mod:`tireg.registry.search_sqlite`, :mod:`tireg.registry.search_postgres`), apart from both so
that neither imports the other.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol

from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

#: the texts of one embedding, by column
Document = dict[str, str]


COLUMNS = ("name", "triggers", "description", "tags", "sources")


#: the columns people type from: searched first, and the ones infix (substring) matching covers
TYPED_COLUMNS = ("name", "triggers", "tags")


class SearchBackend(Protocol):
    """How one database stores and matches the search texts.

    The ``*_matches`` methods return a statement for what a user typed, or ``None`` when nothing
    in it can match; user input only ever reaches them as bound values. Every word must match;
    the last one also as a prefix unless ``prefix`` is false; only in ``columns`` when given.

    * ``word_matches``: columns ``id`` and ``rank`` (lower first, as FTS5's), every match scored
      by the database's relevance function (BM25, ``ts_rank_cd``), whose cost grows with the
      number of matches;
    * ``newest_word_matches``: the same columns for the ``cap`` newest matches only, ranked by
      the length of the searched texts (shorter first), which costs nothing per match;
    * ``count_word_matches``: one column, how many rows match, counting no further than ``cap``;
    * ``infix_matches``: ``id`` and ``rank`` of substring matches in the typed columns.
    """

    def delete(self, session: Session, ids: list[int]) -> None: ...
    def insert(self, session: Session, docs: dict[int, Document]) -> None: ...
    def clear(self, session: Session) -> None: ...
    def stored(self, session: Session) -> list[tuple[tuple[str, ...], dict[int, Document]]]:
        """Each index table's columns and rows, for ``tireg doctor`` to compare."""
        ...

    def word_matches(
        self, query: str, *, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None: ...
    def newest_word_matches(
        self, query: str, *, cap: int, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None: ...
    def count_word_matches(
        self, query: str, *, cap: int, columns: tuple[str, ...] | None = None, prefix: bool = True
    ) -> TextClause | None: ...
    def infix_matches(self, query: str) -> TextClause | None: ...


def like_pattern(word: str) -> str:
    """A ``LIKE ... ESCAPE '\\'`` pattern matching ``word`` anywhere, literally."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """The words of ``text`` as the word index sees them: runs of letters and digits,
    case-folded, diacritics removed (FTS5's ``unicode61 remove_diacritics 2``)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _TOKEN.findall(unicodedata.normalize("NFC", bare))
