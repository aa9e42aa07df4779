"""list / search / show and the naming rule, on a real SQLite catalogue with its FTS5 index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tireg.converters import Embedding
from tireg.db.schema import PreviewRow, SourceRow
from tireg.db.session import Catalogue, open_catalogue
from tireg.registry import naming, query
from tireg.registry.importer import import_embedding
from tireg.registry.naming import AmbiguousNameError, NotFoundError
from tireg.registry.query import Filters
from tireg.registry.search_sqlite import fts_query


def make(name: str, seed: int, *, sdxl: bool = False, n: int = 1, width: int = 768) -> Embedding:
    rng = np.random.default_rng(seed)
    if sdxl:
        vectors = {
            "clip_l": rng.standard_normal((n, 768)),
            "clip_g": rng.standard_normal((n, 1280)),
        }
    else:
        vectors = {"clip_l" if width == 768 else "clip_h": rng.standard_normal((n, width))}
    return Embedding(name=name, vectors=vectors)


def add(
    catalogue: Catalogue,
    embedding: Embedding,
    *,
    source: tuple[str, str] = ("local", "/data/embeddings"),
    hints: dict[str, str] | None = None,
) -> int:
    with catalogue.transaction() as session:
        src = session.query(SourceRow).filter_by(kind=source[0], locator=source[1]).one_or_none()
        if src is None:
            src = SourceRow(
                kind=source[0], locator=source[1], title=Path(source[1]).name, status="fetched"
            )
            session.add(src)
            session.flush()
        row, _ = import_embedding(
            session,
            embedding,
            location=f"{source[1]}/{embedding.name}.safetensors",
            source_id=src.id,
            hints=hints,
        )
        return row.id


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


@pytest.fixture
def filled(catalogue: Catalogue) -> dict[str, int]:
    ids = {
        "cat-hf": add(
            catalogue,
            make("<cat-toy>", 1),
            source=("hf", "sd-concepts-library/cat-toy"),
            hints={"concept_type": "object", "description": "a small toy cat", "tags": "toy,cat"},
        ),
        "cat-local": add(catalogue, make("cat-toy", 2), hints={"concept_type": "object"}),
        "yuno": add(
            catalogue,
            make("gasai yuno", 3, n=8),
            hints={"description": "anime character", "tags": "anime"},
        ),
        "birb": add(
            catalogue,
            make("<birb-style>", 4),
            source=("hf", "sd-concepts-library/birb-style"),
            hints={"concept_type": "style", "description": "birds drawn in a style"},
        ),
        "xl": add(
            catalogue,
            make("xl-cat", 5, sdxl=True, n=2),
            source=("civitai", "12345@678"),
            hints={"description": "cat for SDXL", "tags": "cat"},
        ),
        "sd2": add(catalogue, make("deep-cat", 6, width=1024), hints={"description": "sd2 cat"}),
    }
    return ids


def _sha(catalogue: Catalogue, embedding_id: int) -> str:
    with catalogue.reading() as session:
        return session.get(query.EmbeddingRow, embedding_id).vectors_sha256


def test_unique_name_resolves(catalogue: Catalogue, filled: dict[str, int]) -> None:
    with catalogue.reading() as session:
        assert naming.resolve(session, "gasai yuno").id == filled["yuno"]
        assert naming.resolve(session, "GASAI YUNO").id == filled["yuno"]
        assert naming.resolve(session, "birb-style").id == filled["birb"]
        assert naming.resolve(session, "<birb-style>").id == filled["birb"]


def test_colliding_name_lists_exact_specs(catalogue: Catalogue, filled: dict[str, int]) -> None:
    with catalogue.reading() as session, pytest.raises(AmbiguousNameError) as err:
        naming.resolve(session, "cat-toy")
    refs = err.value.refs
    assert len(refs) == 2
    assert "type one of the NAME@HEX exactly" in str(err.value)
    with catalogue.reading() as session:
        resolved = {naming.resolve(session, ref).id for ref in refs}
    assert resolved == {filled["cat-hf"], filled["cat-local"]}


def test_hash_prefix_and_source_narrow(catalogue: Catalogue, filled: dict[str, int]) -> None:
    sha = _sha(catalogue, filled["cat-local"])
    with catalogue.reading() as session:
        assert naming.resolve(session, sha[:6]).id == filled["cat-local"]
        assert naming.resolve(session, sha.upper()).id == filled["cat-local"]
        assert naming.resolve(session, f"cat-toy@{sha[:4]}").id == filled["cat-local"]
        assert naming.resolve(session, "cat-toy", source="hf").id == filled["cat-hf"]
        assert (
            naming.resolve(session, "cat-toy", source="/data/embeddings").id == filled["cat-local"]
        )
        with pytest.raises(NotFoundError, match="tireg search"):
            naming.resolve(session, sha[:5])  # too short to be a hash prefix
        with pytest.raises(NotFoundError):
            naming.resolve(session, f"gasai yuno@{sha[:8]}")
        with pytest.raises(NotFoundError, match="from source 'civitai'"):
            naming.resolve(session, "cat-toy", source="civitai")


def test_resolve_many_dedupes_and_fails_before_changing_anything(
    catalogue: Catalogue, filled: dict[str, int]
) -> None:
    with catalogue.reading() as session:
        rows = naming.resolve_many(session, ["gasai yuno", "birb-style", "gasai yuno"])
        assert [r.id for r in rows] == [filled["yuno"], filled["birb"]]
        with pytest.raises(NotFoundError):
            naming.resolve_many(session, ["gasai yuno", "nope"])


def test_search_ranks_and_filters(catalogue: Catalogue, filled: dict[str, int]) -> None:
    with catalogue.reading() as session:
        hits = query.search(session, "cat")
        assert {h.id for h in hits} >= {
            filled["cat-hf"],
            filled["cat-local"],
            filled["xl"],
            filled["sd2"],
        }
        assert filled["yuno"] not in {h.id for h in hits}
        assert all(h.rank is not None for h in hits)
        assert [h.rank for h in hits] == sorted(h.rank for h in hits)  # type: ignore[type-var]
        # the name column counts: "cat-toy" as a phrase
        assert {h.id for h in query.search(session, "cat-toy")} == {
            filled["cat-hf"],
            filled["cat-local"],
        }
        assert [h.id for h in query.search(session, "cat", Filters(family="sdxl"))] == [
            filled["xl"]
        ]
        assert [h.id for h in query.search(session, "cat", Filters(family="sd2"))] == [
            filled["sd2"]
        ]
        assert [h.id for h in query.search(session, "cat", Filters(source="hf"))] == [
            filled["cat-hf"]
        ]
        assert [h.id for h in query.search(session, "cat", Filters(tag="TOY"))] == [
            filled["cat-hf"]
        ]
        assert [h.id for h in query.search(session, "cat", Filters(vectors=2))] == [filled["xl"]]
        assert query.search(session, "cat", Filters(concept_type="style")) == []
        assert [h.id for h in query.search(session, "birds", Filters(concept_type="style"))] == [
            filled["birb"]
        ]
        assert [h.id for h in query.search(session, "gasai yu")] == [
            filled["yuno"]
        ]  # last word is a prefix
        assert [
            h.id for h in query.search(session, "cat", Filters(ids=frozenset({filled["sd2"]})))
        ] == [filled["sd2"]]
        assert len(query.search(session, "cat", limit=2)) == 2


@pytest.mark.parametrize("typed", ['"', "()", "AND", "cat OR", "NEAR(", "*", "name:x", "-cat", "'"])
def test_search_never_passes_user_syntax_to_fts(
    catalogue: Catalogue, filled: dict[str, int], typed: str
) -> None:
    with catalogue.reading() as session:
        query.search(session, typed)  # no FTS5 syntax error, whatever was typed


def test_search_refs_tell_collisions_apart(catalogue: Catalogue, filled: dict[str, int]) -> None:
    with catalogue.reading() as session:
        refs = {h.id: h.ref for h in query.search(session, "cat")}
    assert refs[filled["xl"]] == "xl-cat"
    assert refs[filled["cat-local"]].startswith("cat-toy@")
    assert refs[filled["cat-hf"]].startswith("<cat-toy>@")


def test_list_filters_and_order(catalogue: Catalogue, filled: dict[str, int]) -> None:
    with catalogue.reading() as session:
        names = [s.name for s in query.list_embeddings(session)]
        assert names == sorted(names, key=str.lower)
        assert len(names) == 6
        assert [s.id for s in query.list_embeddings(session, Filters(family="sdxl"))] == [
            filled["xl"]
        ]
        assert [s.id for s in query.list_embeddings(session, Filters(tag="anime"))] == [
            filled["yuno"]
        ]
        assert len(query.list_embeddings(session, limit=2)) == 2
        assert len(query.list_embeddings(session, limit=None, offset=4)) == 2


def test_show_has_every_record(catalogue: Catalogue, filled: dict[str, int]) -> None:
    with catalogue.transaction() as session:
        session.add_all(
            [
                PreviewRow(embedding_id=filled["cat-hf"], location="/pics/b.png", sha256="ab" * 32),
                PreviewRow(embedding_id=filled["cat-hf"], location="https://img.example/1.jpeg"),
            ]
        )
    with catalogue.reading() as session:
        info = query.show(session, "cat-toy", source="hf")
    data = info.to_dict()
    assert data["name"] == "<cat-toy>"
    assert data["concept_type"] == "object"
    assert data["tags"] == ["cat", "toy"]
    assert data["store_file_present"] is True
    assert Path(data["store_file"]).is_file()
    assert data["sources"][0]["source"]["kind"] == "hf"
    assert data["sources"][0]["source"]["locator"] == "sd-concepts-library/cat-toy"
    assert {"relation": "family", "model_ref": "sd1", "evidence": "vector widths"} in data["compat"]
    assert data["installs"] == []
    assert len(data["same_name"]) == 1 and data["same_name"][0].startswith("cat-toy@")
    assert data["previews"] == [
        {"location": "/pics/b.png", "sha256": "ab" * 32},
        {"location": "https://img.example/1.jpeg", "sha256": None},
    ]
    with catalogue.reading() as session:
        assert query.show(session, "gasai yuno").to_dict()["previews"] == []


@pytest.mark.sqlite_only
def test_fts_query_quotes_words() -> None:
    assert fts_query('cat-toy "x') == '"cat-toy" """x"*'
    assert fts_query("  ") is None
    assert fts_query("<> ()") is None
