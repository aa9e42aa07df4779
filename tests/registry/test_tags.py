"""tag add/remove and rm, with the search index and the content store kept in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.registry.test_install import ui_root
from tests.registry.test_query import add, make
from tireg.db.schema import CompatRow, EmbeddingRow, InstallRow, ProvenanceRow
from tireg.db.session import Catalogue, open_catalogue
from tireg.registry import install, naming, query, tags
from tireg.registry.naming import AmbiguousNameError, NotFoundError
from tireg.registry.query import Filters
from tireg.registry.removal import remove
from tireg.registry.store import ContentStore


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def count(catalogue: Catalogue, table: type) -> int:
    with catalogue.reading() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_tags_added_removed_and_searchable(catalogue: Catalogue) -> None:
    add(catalogue, make("yuno", 1), hints={"tags": "anime"})
    assert tags.tag(catalogue, "yuno", add=["Portrait", "girl", "girl"]) == [
        "Portrait",
        "anime",
        "girl",
    ]
    with catalogue.reading() as session:
        assert [h.name for h in query.search(session, "portrait")] == ["yuno"]
        assert [s.name for s in query.list_embeddings(session, Filters(tag="portrait"))] == ["yuno"]
    assert tags.tag(catalogue, "yuno", remove=["PORTRAIT", "absent"]) == ["anime", "girl"]
    with catalogue.reading() as session:
        assert query.search(session, "portrait") == []


@pytest.mark.parametrize("bad", ["", "  ", "a,b"])
def test_bad_tags_refused_before_anything_changes(catalogue: Catalogue, bad: str) -> None:
    add(catalogue, make("yuno", 2))
    with pytest.raises(tags.TagError, match="invalid tag"):
        tags.tag(catalogue, "yuno", add=["fine", bad])
    assert tags.tag(catalogue, "yuno") == []


def test_tag_follows_the_naming_rule(catalogue: Catalogue) -> None:
    add(catalogue, make("cat-toy", 3))
    add(catalogue, make("cat-toy", 4), source=("hf", "x/cat-toy"))
    with pytest.raises(AmbiguousNameError):
        tags.tag(catalogue, "cat-toy", add=["x"])
    assert tags.tag(catalogue, "cat-toy", add=["x"], source="hf") == ["x"]


def test_rm_deletes_row_index_and_store_file_but_not_installs(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    kept = make("other", 5)
    add(catalogue, kept)
    gone = make("gone", 6)
    add(catalogue, gone, hints={"tags": "t", "base_model_hint": "SD 1.5"})
    root = ui_root(tmp_path, "a1111")
    (out,) = install.install(catalogue, ["gone"], install.Destination.ui("a1111", root))
    store = ContentStore()
    assert gone.vectors_sha256() in store
    (removal,) = remove(catalogue, ["gone"])
    assert removal.left_installed == [out.path] and Path(out.path).is_file()
    assert gone.vectors_sha256() not in store and kept.vectors_sha256() in store
    assert count(catalogue, EmbeddingRow) == 1
    assert count(catalogue, ProvenanceRow) == 1
    assert count(catalogue, InstallRow) == 0
    with catalogue.reading() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(CompatRow).where(CompatRow.embedding_id != 1)
            )
            == 0
        )
        assert query.search(session, "gone") == []
        with pytest.raises(NotFoundError):
            naming.resolve(session, "gone")


def test_rm_with_uninstall_keeps_modified_files(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("a", 7))
    add(catalogue, make("b", 8))
    root = ui_root(tmp_path, "comfyui")
    outs = {
        o.ref: Path(o.path)
        for o in install.install(catalogue, ["a", "b"], install.Destination.ui("comfyui", root))
    }
    outs["b"].write_bytes(b"edited by hand")
    removals = {r.ref: r for r in remove(catalogue, ["a", "b"], uninstall=True)}
    assert [u.status for u in removals["a"].uninstalled] == ["removed"] and not outs["a"].exists()
    assert [u.status for u in removals["b"].uninstalled] == ["kept"] and outs["b"].exists()
    assert removals["b"].left_installed == [str(outs["b"])]
    assert count(catalogue, EmbeddingRow) == 0


def test_rm_lists_only_installed_files_that_still_exist(
    tmp_path: Path, catalogue: Catalogue, tireg_cli
) -> None:  # type: ignore[no-untyped-def]
    add(catalogue, make("c", 10))
    outs = [
        Path(o.path)
        for ui in ("a1111", "comfyui")
        for o in install.install(
            catalogue, ["c"], install.Destination.ui(ui, ui_root(tmp_path, ui))
        )
    ]
    outs[0].unlink()  # deleted by hand
    result = tireg_cli("rm", "c", "--json")
    assert result.code == 0, result.stderr
    [removal] = json.loads(result.stdout)
    assert removal["left_installed"] == [str(outs[1])]


def test_rm_resolves_every_spec_first(catalogue: Catalogue) -> None:
    add(catalogue, make("a", 9))
    with pytest.raises(NotFoundError):
        remove(catalogue, ["a", "missing"])
    assert count(catalogue, EmbeddingRow) == 1
