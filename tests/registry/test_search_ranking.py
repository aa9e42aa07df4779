"""Search ranking on both backends: a whole name first, then BM25; words in more rows than
``search_index.COMMON`` rank their newest matches by length instead of scoring every match."""

from __future__ import annotations

import pytest

from tests.registry.test_query import add, make
from tireg.db import Catalogue, open_catalogue
from tireg.registry import query, search_index

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def catalogue(backend: str) -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def _search(catalogue: Catalogue, words: str, limit: int = 20) -> list[str]:
    with catalogue.reading() as session:
        return [r.name for r in query.search(session, words, limit=limit)]


def test_a_whole_name_comes_before_better_scored_word_matches(catalogue: Catalogue) -> None:
    """``lantern`` typed whole finds the embedding named so first, though a short name that
    holds the word twice scores higher by BM25."""
    add(catalogue, make("Lantern", 1), hints={"description": "a glowing paper style"})
    add(catalogue, make("lantern-lantern", 2))
    add(catalogue, make("old-lantern", 3), hints={"description": "lantern lantern lantern"})
    found = _search(catalogue, "lantern")
    assert found[0] == "Lantern"
    assert set(found) == {"Lantern", "lantern-lantern", "old-lantern"}
    assert _search(catalogue, "<LANTERN>")[0] == "Lantern"  # the naming rule's folding


def test_common_words_rank_their_newest_matches_shorter_first(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_index, "COMMON", 3)
    lengths = [40, 5, 25, 10, 1]  # oldest first
    for k, extra in enumerate(lengths):
        add(catalogue, make(f"e{k}", 10 + k), hints={"description": "ink " + "x" * extra})
    # "ink" is in 5 rows, more than COMMON: the 3 newest (e2, e3, e4) by length, shorter first
    assert _search(catalogue, "ink") == ["e4", "e3", "e2"]
    # fewer matches than COMMON: exact BM25 over every match
    monkeypatch.setattr(search_index, "COMMON", 10)
    assert set(_search(catalogue, "ink")) == {f"e{k}" for k in range(5)}


def test_a_common_prefix_is_bounded_too(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inkw`` matches no word as typed but five as a prefix: counted, then bounded."""
    monkeypatch.setattr(search_index, "COMMON", 3)
    for k in range(5):
        add(catalogue, make(f"p{k}", 20 + k), hints={"description": f"inkwell{k} " + "y" * k})
    assert _search(catalogue, "inkw") == ["p2", "p3", "p4"]
