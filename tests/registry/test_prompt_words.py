"""The prompt word is the file name: A1111 types ``NAME.pt`` as ``NAME``, whatever name it holds.

(``modules/textual_inversion/textual_inversion.py``, ``EmbeddingDatabase.load_from_file``.) So a
file's stem names its embedding in ``show``/``install``/``search``, listings show it first, and
the name inside is kept as "trained as".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.registry.make_files import random_embedding, write_one


def _catalogue(tireg_cli, folder: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(9)
    write_one(random_embedding(rng, "bad_prompt"), folder, "bad_prompt_version2", "a1111-pt")
    write_one(random_embedding(rng, "<cat-toy>"), folder / "hub", "learned_embeds", "diffusers-bin")
    assert tireg_cli("add", folder).code == 0


def test_the_file_stem_names_the_embedding(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _catalogue(tireg_cli, tmp_path / "in")
    shown = tireg_cli("show", "bad_prompt_version2", "--json")
    assert shown.code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["name"] == "bad_prompt_version2" and data["trained_as"] == "bad_prompt"
    assert "trained_as" in tireg_cli("show", "bad_prompt_version2").stdout
    assert tireg_cli("show", "bad_prompt").code == 0, "the trained-as name still names it"
    found = json.loads(tireg_cli("search", "bad_prompt_version2", "--json").stdout)
    assert [r["ref"] for r in found] == ["bad_prompt_version2"]


def test_listings_show_what_to_type(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _catalogue(tireg_cli, tmp_path / "in")
    rows = json.loads(tireg_cli("list", "--json").stdout)
    # a generic diffusers file is known by its token; A1111's file by its stem
    assert sorted(r["ref"] for r in rows) == ["<cat-toy>", "bad_prompt_version2"]
    cells = [line.strip("│ ").split(" │")[0] for line in tireg_cli("list").stdout.splitlines()]
    assert "bad_prompt_version2" in cells


def test_install_lands_under_the_word_users_type(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _catalogue(tireg_cli, tmp_path / "in")
    ui = tmp_path / "webui"
    (ui / "embeddings").mkdir(parents=True)
    done = tireg_cli("install", "bad_prompt_version2", "--to", ui / "embeddings", "--json")
    assert done.code == 0, done.stderr
    (record,) = json.loads(done.stdout)["installed"]
    assert Path(record["path"]).stem == "bad_prompt_version2" and Path(record["path"]).is_file()


def test_a_catalogue_from_0006_learns_its_file_stems(tmp_path: Path) -> None:
    from tests.registry.old_catalogue import catalogue_at
    from tireg.db import open_catalogue
    from tireg.registry import naming

    with catalogue_at(tmp_path / "old.sqlite", "0006", "bad_prompt") as raw:
        raw.executemany(
            "INSERT INTO provenance (embedding_id, location, original_format, original_sha256,"
            " name_in_file, imported_at) VALUES (1, ?, 'a1111-pt', ?, 'bad_prompt', '2024-01-01')",
            [("/e/bad_prompt_version2.pt", "cd"), ("/hub/learned_embeds.bin", "ef")],
        )
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    with open_catalogue(url) as cat, cat.reading() as session:  # upgrades to head
        row = naming.resolve(session, "BAD_PROMPT_VERSION2")
        assert [w.word for w in row.prompt_words] == ["bad_prompt_version2"]
        assert naming.refs(session, [row]) == {1: "bad_prompt_version2"}
