"""The ``<...>`` folding rule, once: every place that drops a trigger's brackets agrees."""

from __future__ import annotations

import pytest

from tireg.converters.writing import safe_stem
from tireg.db.schema import name_key
from tireg.prompt_words import unbracketed
from tireg.registry.uis import file_stem


@pytest.mark.parametrize(
    ("word", "folded"),
    [
        ("<cat-toy>", "cat-toy"),
        ("  <cat-toy>  ", "cat-toy"),
        ("cat-toy", "cat-toy"),
        ("<>", "<>"),  # no name inside: kept whole
        ("<x", "<x"),  # half a pair is part of the name
        ("a<b>", "a<b>"),
        ("<gasai yuno>", "gasai yuno"),
    ],
)
def test_unbracketed_drops_only_a_whole_pair(word: str, folded: str) -> None:
    assert unbracketed(word) == folded


def test_a_word_being_typed_loses_an_opening_bracket() -> None:
    assert unbracketed("<ca", partial=True) == "ca"
    assert unbracketed("<", partial=True) == ""
    assert unbracketed("<cat-toy>", partial=True) == "cat-toy"
    assert unbracketed("ca", partial=True) == "ca"


@pytest.mark.parametrize("trigger", ["<Cat-Toy>", " <birb-style> ", "plain", "<x"])
def test_lookups_stems_and_files_fold_alike(trigger: str) -> None:
    """The catalogue's lookup key, an installed file's stem and a converted file's stem all
    start from the same folded word (a stray ``<`` is then a character no file name takes)."""
    folded = unbracketed(trigger)
    assert name_key(trigger) == folded.casefold()
    assert file_stem("a1111", trigger) == safe_stem(trigger) == folded.replace("<", "_")
