"""Listings as users read them: versions told apart, typos in filters named, empty results said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_versions_are_told_apart_by_step_and_trained_on(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus).code == 0
    rows = json.loads(tireg_cli("list", "--json").stdout)
    yuno = sorted((r for r in rows if r["trained_as"] == "gasai yuno"), key=lambda r: r["step"])
    assert [r["step"] for r in yuno] == [1000, 10000, 16600]
    assert yuno[-1]["trained_on"] == "model [e6e8e1fc]"  # the name A1111 wrote, and its hash
    table = tireg_cli("list").stdout
    for row in yuno:
        line = next(line for line in table.splitlines() if row["ref"] in line)
        assert str(row["step"]) in line, "each version's row shows its step"


def test_search_and_list_show_each_version_s_step_and_model(
    tireg_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Three versions of one trigger, told apart by step and trained-on model, in every view:
    the search table, search --json, and the list table (not only its --json)."""
    import numpy as np

    from tests.registry.make_files import random_embedding, write_one

    rng = np.random.default_rng(9)
    versions = [(500, "anything-v3", "1a2b3c4d"), (1500, "novelai-final", "e6e8e1fc")]
    versions.append((3000, "waifudiffusion", "0badc0de"))
    for step, model, model_hash in versions:
        embedding = random_embedding(rng, "zebrastyle").with_meta(
            step=step, trained_on_name=model, trained_on_hash=model_hash
        )
        write_one(embedding, tmp_path / "in", f"zebrastyle-{step}", "a1111-pt")
    assert tireg_cli("add", tmp_path / "in").code == 0

    rows = json.loads(tireg_cli("search", "zebrastyle", "--json").stdout)
    got = sorted((r["step"], r["trained_on"]) for r in rows)
    assert got == [(s, f"{m} [{h}]") for s, m, h in versions]
    listed = json.loads(tireg_cli("list", "--json").stdout)
    assert sorted((r["step"], r["trained_on"]) for r in listed) == got

    monkeypatch.setenv("COLUMNS", "200")  # a table wide enough that no cell is cut
    tables = {"search": tireg_cli("search", "zebrastyle").stdout, "list": tireg_cli("list").stdout}
    for view, table in tables.items():
        assert "trained on" in table and "step" in table, view
        for row in rows:
            line = next(line for line in table.splitlines() if f" {row['ref']} " in line)
            assert str(row["step"]) in line, f"{view}: {row['ref']} shows its step"
            assert row["trained_on"] in line, f"{view}: {row['ref']} shows its trained-on model"


def test_an_unknown_tag_or_source_is_an_error_not_an_empty_table(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus).code == 0
    assert tireg_cli("tag", "birb-style", "bird").code == 0
    tag = tireg_cli("list", "--tag", "brid")
    assert tag.code == 1
    assert "no embedding is tagged 'brid'" in tag.stderr and "bird" in tag.stderr
    source = tireg_cli("search", "gasai", "--source", "civitai")
    assert source.code == 1 and "source kinds here: local" in source.stderr
    assert tireg_cli("list", "--tag", "BIRD").code == 0, "tags still match case-insensitively"


def test_an_empty_result_says_no_matches(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus).code == 0
    found = tireg_cli("search", "zebra")
    assert found.code == 0 and found.stdout.strip() == "no matches"
    assert json.loads(tireg_cli("search", "zebra", "--json").stdout) == []


def test_search_finds_the_trained_on_model_by_name(tireg_cli, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus).code == 0
    found = json.loads(tireg_cli("search", "novelai", "--json").stdout)
    # only the 16600-step file records sd_checkpoint e6e8e1fc: NovelAI's model in the shipped table
    assert [(r["trained_as"], r["step"]) for r in found] == [("gasai yuno", 16600)]


def test_search_finds_infix_and_cjk_substrings(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from tests.registry.make_files import random_embedding, write_one

    rng = np.random.default_rng(5)
    for stem in ("大猫板蓝根-100000", "gasaiyuno", "板蓝"):
        write_one(random_embedding(rng, stem), tmp_path / "in", stem, "safetensors")
    assert tireg_cli("add", tmp_path / "in").code == 0

    def names(*words: str) -> list[str]:
        return [r["name"] for r in json.loads(tireg_cli("search", *words, "--json").stdout)]

    assert names("板蓝根") == ["大猫板蓝根-100000"]  # inside one CJK token
    assert names("yuno") == ["gasaiyuno"]  # inside one Latin word
    assert sorted(names("板蓝")) == ["大猫板蓝根-100000", "板蓝"]  # two characters: LIKE
    assert names("%蓝") == []  # LIKE wildcards in what users type are literal


@pytest.mark.sqlite_only
def test_a_catalogue_from_0002_gets_its_trigram_index(tmp_path: Path) -> None:
    from tests.registry.old_catalogue import catalogue_at
    from tireg.db import open_catalogue
    from tireg.registry import query

    with catalogue_at(tmp_path / "old.sqlite", "0002", "大猫板蓝根") as raw:
        raw.execute(
            "INSERT INTO embedding_search (rowid, name, triggers, description, tags, sources)"
            " VALUES (1, '大猫板蓝根', '大猫板蓝根', '', '', '')"
        )
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    with open_catalogue(url) as cat, cat.reading() as session:  # upgrades to head
        assert [r.name for r in query.search(session, "板蓝根")] == ["大猫板蓝根"]
