"""``tireg list`` reads a SQLite catalogue through sqlite3 alone (``registry/listing.py``): the
same rows as the SQLAlchemy path gives, and the same handling of every catalogue it cannot read
that way (one to migrate, one from a newer tireg, another URL form)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tireg.db import open_catalogue
from tireg.registry import listing, query
from tireg.registry.listing import Filters

#: filters whose listings are compared (every one ``tireg list`` takes but --compatible-with,
#: which goes through the compatibility rules and so through SQLAlchemy)
FILTERS = [
    Filters(),
    Filters(family="sd1"),
    Filters(family="sdxl", concept_type="style"),
    Filters(vectors=1),
    Filters(tag="BIRD"),
    Filters(source="local"),
    Filters(source="corpus"),
    Filters(family="sd2", tag="bird"),
]


def _slow(filters: Filters, limit: int | None) -> list[listing.EmbeddingSummary]:
    """What the SQLAlchemy path lists."""
    with open_catalogue() as catalogue:
        return query.list_catalogue(catalogue, filters, limit=limit)


def test_the_sqlite_path_lists_what_the_sqlalchemy_path_lists(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus).code == 0
    assert tireg_cli("tag", "birb-style", "bird").code == 0
    for filters in FILTERS:
        for limit in (None, 100, 3):
            fast = listing.list_sqlite_file(None, filters, limit=limit)
            assert fast is not None, "a SQLite file at head is read without SQLAlchemy"
            assert fast == _slow(filters, limit), (filters, limit)
    everything = listing.list_sqlite_file(None, limit=None)
    assert everything is not None and len(everything) > 3
    assert any("@" in row.ref for row in everything), "colliding names get NAME@HEX refs"
    cli = json.loads(tireg_cli("list", "--json", "--limit", "0").stdout)
    assert cli == [row.to_dict() for row in _slow(Filters(), None)]


def test_an_unknown_filter_is_the_same_error_on_both_paths(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus).code == 0
    for filters in (Filters(tag="brid"), Filters(source="civitai")):
        with pytest.raises(listing.UnknownFilterError) as fast:
            listing.list_sqlite_file(None, filters)
        with pytest.raises(listing.UnknownFilterError) as slow:
            _slow(filters, 100)
        assert str(fast.value) == str(slow.value)


def test_catalogues_it_cannot_read_go_through_the_session(tireg_cli, tireg_home: Path) -> None:  # type: ignore[no-untyped-def]
    assert listing.list_sqlite_file(None) is None, "no catalogue yet: the session creates it"
    assert tireg_cli("list").stdout.strip() == "no matches"
    assert (tireg_home / "catalogue.sqlite").is_file()
    assert listing.list_sqlite_file(None) == []
    # URL forms with options, and a filter judged by the compatibility rules
    url = f"sqlite:///{tireg_home / 'catalogue.sqlite'}?timeout=5"
    assert listing.list_sqlite_file(url) is None
    assert tireg_cli("list", "--db", url).stdout.strip() == "no matches"
    assert listing.list_sqlite_file(None, Filters(compatible_with="sd1")) is None


def test_list_migrates_an_old_catalogue_and_refuses_a_newer_one(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.registry.old_catalogue import catalogue_at

    path = tmp_path / "old.sqlite"
    with catalogue_at(path, "0002", "old-name"):
        pass
    url = f"sqlite:///{path}"
    assert listing.list_sqlite_file(url) is None, "an old catalogue is migrated by the session"
    listed = tireg_cli("list", "--db", url, "--json")
    assert listed.code == 0 and [r["name"] for r in json.loads(listed.stdout)] == ["old-name"]
    assert [r.name for r in listing.list_sqlite_file(url) or []] == ["old-name"]

    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    raw.close()
    refused = tireg_cli("list", "--db", url)
    assert refused.code == 1
    assert "newer tireg (revision 9999)" in refused.stderr and "Traceback" not in refused.stderr
