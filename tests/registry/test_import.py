"""Importing files and folders: identity by vectors, provenance, facts, previews, bad files."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select, text

from tests.registry.make_files import random_embedding, write_mixed, write_one
from tireg.converters import CLIP_L, Embedding
from tireg.db import Catalogue, open_catalogue
from tireg.db.schema import CompatRow, EmbeddingRow, PreviewRow, ProvenanceRow, SourceRow, TagRow
from tireg.registry import search_index
from tireg.registry.importer import add_paths, import_embedding
from tireg.registry.store import ContentStore


@pytest.fixture
def catalogue() -> Iterator[Catalogue]:
    with open_catalogue() as cat:
        yield cat


def count(cat: Catalogue, model: type) -> int:
    with cat.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def search(cat: Catalogue, query: str) -> list[int]:
    """The ids the word index itself matches (whichever backend holds it)."""
    with cat.reading() as session:
        words = search_index.backend(session).word_matches(query)  # type: ignore[union-attr]
        assert words is not None
        return sorted(row.id for row in session.execute(words))


def picture(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path)
    return path


def test_imports_a_mixed_folder(catalogue: Catalogue, tmp_path: Path) -> None:
    files = write_mixed(tmp_path / "emb", 24, seed=7, per_folder=10)
    report = add_paths(catalogue, [tmp_path / "emb"])
    assert report.counts()["imported"] == 24 and not report.errors and not report.not_embeddings
    assert count(catalogue, EmbeddingRow) == count(catalogue, ProvenanceRow) == 24
    store = ContentStore()
    assert store.verify().ok and store.verify().checked == 24
    with catalogue.reading() as session:
        rows = session.scalars(select(EmbeddingRow)).all()
        assert {r.family for r in rows} == {"sd1", "sd2", "sdxl"}
        for row in rows:
            assert (store.root / row.store_path).is_file()
            assert store.get(row.vectors_sha256).vectors_sha256() == row.vectors_sha256
        by_location = {p.location: p for p in session.scalars(select(ProvenanceRow))}
        assert set(by_location) == {str(f) for f in files}
        import hashlib

        for file in files:
            assert (
                by_location[str(file)].original_sha256
                == hashlib.sha256(file.read_bytes()).hexdigest()
            )
        assert {p.original_format for p in by_location.values()} == {
            "tireg",
            "a1111-pt",
            "diffusers-bin",
            "diffusers-safetensors",
            "kohya-safetensors",
            "a1111-png",
            "sdxl-pt",
            "sdxl-safetensors",
        }
        facts = session.scalars(select(CompatRow).where(CompatRow.relation == "family")).all()
        assert len(facts) == 24
        trained = session.scalars(select(CompatRow).where(CompatRow.relation == "trained_on")).all()
        assert {(c.model_ref, c.evidence) for c in trained} == {("e6e8e1fc", "a1111 sd_checkpoint")}
    assert len(search(catalogue, "emb-7-3")) == 1


def test_same_vectors_in_two_files_are_one_embedding(catalogue: Catalogue, tmp_path: Path) -> None:
    emb = random_embedding(np.random.default_rng(1), "first-name")
    a = write_one(emb, tmp_path / "a", "first-name", "tireg")
    b = write_one(
        emb.with_meta(name="other-name"), tmp_path / "b", "other-name", "diffusers-safetensors"
    )
    report = add_paths(catalogue, [a, b])
    assert (len(report.imported), len(report.known)) == (1, 1)
    with catalogue.reading() as session:
        (row,) = session.scalars(select(EmbeddingRow)).all()
        assert row.name == "first-name"
        prov = session.scalars(select(ProvenanceRow).order_by(ProvenanceRow.id)).all()
        assert [p.name_in_file for p in prov] == ["first-name", "other-name"]
        assert [p.original_format for p in prov] == ["tireg", "diffusers-safetensors"]
        assert {p.location for p in prov} == {str(a), str(b)}
    assert search(catalogue, "other") == [row.id]  # the second name is searchable too


def test_adding_again_changes_nothing(catalogue: Catalogue, tmp_path: Path) -> None:
    write_mixed(tmp_path, 12, seed=3)
    first = add_paths(catalogue, [tmp_path])
    tables = (EmbeddingRow, ProvenanceRow, CompatRow, SourceRow)
    before = [count(catalogue, t) for t in tables]
    again = add_paths(catalogue, [tmp_path, tmp_path / "part000"])  # overlapping arguments
    assert len(again.known) == len(first.imported) == 12 and not again.imported
    assert [count(catalogue, t) for t in tables] == before


def test_previews_are_recorded_not_counted_as_junk(catalogue: Catalogue, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    emb_file = write_one(random_embedding(rng, "cat-style"), tmp_path, "cat-style", "safetensors")
    a1111_preview = picture(tmp_path / "cat-style.preview.png")
    same_stem = picture(tmp_path / "cat-style.png")
    concept = picture(tmp_path / "concept_images" / "0.png")
    jpeg = tmp_path / "concept_images" / "1.jpeg"
    Image.new("RGB", (8, 8)).save(jpeg)
    lonely = picture(tmp_path / "holiday.png")
    report = add_paths(catalogue, [tmp_path])
    assert len(report.imported) == 1
    assert {o.path for o in report.previews} == {str(a1111_preview), str(same_stem)}
    assert [o.path for o in report.not_embeddings] == [str(lonely)]
    with catalogue.reading() as session:
        locations = set(session.scalars(select(PreviewRow.location)))
    assert locations == {str(p) for p in (a1111_preview, same_stem, concept, jpeg)}
    # naming just the embedding file still finds its pictures
    with open_catalogue(f"sqlite:///{tmp_path / 'other.sqlite'}") as other:
        add_paths(other, [emb_file])
        assert count(other, PreviewRow) == 4


def test_image_embedding_beside_an_embedding_is_not_a_preview(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    rng = np.random.default_rng(10)
    write_one(random_embedding(rng, "twin"), tmp_path, "twin", "tireg")
    write_one(random_embedding(rng, "twin"), tmp_path, "twin", "png")
    report = add_paths(catalogue, [tmp_path])
    assert len(report.imported) == 2 and not report.previews


def test_walk_skips_hidden_folders_and_other_extensions(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    write_one(random_embedding(rng, "seen"), tmp_path, "seen", "safetensors")
    write_one(
        random_embedding(rng, "in-git"), tmp_path / ".git" / "objects", "in-git", "safetensors"
    )
    odd = write_one(random_embedding(rng, "odd"), tmp_path / "elsewhere", "odd", "safetensors")
    renamed = odd.rename(odd.with_suffix(".dat"))
    (tmp_path / "README.md").write_text("# my embeddings")
    (tmp_path / "info.json").write_text("{}")
    report = add_paths(catalogue, [tmp_path])
    assert [o.name for o in report.imported] == ["seen"]
    assert report.skipped == 3  # README.md, info.json, odd.dat
    explicit = add_paths(catalogue, [renamed])  # a file named explicitly is always tried
    assert [o.name for o in explicit.imported] == ["odd"]


def test_bad_files_are_reported_and_the_rest_imported(catalogue: Catalogue, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    good = write_one(random_embedding(rng, "good"), tmp_path, "good", "safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    (tmp_path / "text.pt").write_text("hello")

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil(), protocol=2))
    later = write_one(random_embedding(rng, "later"), tmp_path, "z-later", "tireg")
    report = add_paths(catalogue, [tmp_path, tmp_path / "missing"])
    assert sorted(o.name or "" for o in report.imported) == ["good", "later"]
    assert [Path(o.path).name for o in report.unsafe] == ["evil.pt"]
    assert report.unsafe[0].reason == (
        "refused unsafe pickle: it asks for global 'posix.system', which no embedding needs "
        "(nothing was executed; delete the file or get it from a trusted source)"
    )  # the outcome names the file once; the reason does not repeat it
    assert {Path(o.path).name for o in report.errors} == {"truncated.safetensors", "missing"}
    assert all(o.reason for o in report.errors)
    assert [Path(o.path).name for o in report.not_embeddings] == ["text.pt"]
    assert not (tmp_path / "pwned").exists()
    assert later.exists()


#: a real constraint, enforced by the database itself
REFUSE_POISON = {
    "sqlite": "CREATE TRIGGER refuse BEFORE INSERT ON provenance WHEN NEW.location LIKE "
    "'%poison%' BEGIN SELECT RAISE(ABORT, 'poisoned file'); END",
    "postgresql": 'ALTER TABLE provenance ADD CONSTRAINT "poisoned file" '
    "CHECK (location NOT LIKE '%poison%')",
}


def test_a_file_the_catalogue_refuses_fails_alone(
    catalogue: Catalogue, tmp_path: Path, backend: str
) -> None:
    write_mixed(tmp_path, 10, seed=13)
    poison = write_one(
        random_embedding(np.random.default_rng(13), "p"), tmp_path, "poison", "tireg"
    )
    with catalogue.transaction() as session:
        session.execute(text(REFUSE_POISON[backend]))
    report = add_paths(catalogue, [tmp_path])
    assert len(report.imported) == 10
    ((path, reason),) = [(Path(o.path), o.reason) for o in report.errors]
    assert path == poison
    assert reason.startswith("the catalogue refused it: ") and "poisoned file" in reason
    assert "\n" not in reason
    assert count(catalogue, EmbeddingRow) == count(catalogue, ProvenanceRow) == 10
    assert len(search(catalogue, "emb")) == 10


def test_import_embedding_records_source_facts(catalogue: Catalogue) -> None:
    emb = Embedding(
        name="learned",
        vectors={CLIP_L: np.ones((2, 768), np.float32)},
        step=500,
        trained_on_hash="E6E8E1FC",
        source_format="a1111-pt",
        source_sha256="ab" * 32,
    )
    hints = {
        "trigger": "<shiny>",
        "concept_type": "style",
        "licence": "creativeml-openrail-m",
        "description": "A glossy look",
        "base_model_hint": "Waifu Diffusion v1.2",
        "nsfw": "true",
        "tags": "anime, gloss,anime",
    }
    with catalogue.transaction() as session:
        source = SourceRow(
            kind="hf", locator="sd-concepts-library/shiny", title="Shiny", status="fetched"
        )
        session.add(source)
        session.flush()
        row, created = import_embedding(
            session,
            emb,
            location="https://hf.example/shiny/learned_embeds.bin",
            source_id=source.id,
            revision="abc123",
            hints=hints,
        )
        assert created
    with catalogue.reading() as session:
        row = session.scalars(select(EmbeddingRow)).one()
        assert (row.name, row.concept_type, row.licence, row.description, row.nsfw, row.step) == (
            "<shiny>",
            "style",
            "creativeml-openrail-m",
            "A glossy look",
            True,
            500,
        )
        facts = {(c.relation, c.model_ref, c.evidence) for c in session.scalars(select(CompatRow))}
        assert facts == {
            ("family", "sd1", "vector widths"),
            ("trained_on", "e6e8e1fc", "a1111 sd_checkpoint"),
            ("base_model_hint", "Waifu Diffusion v1.2", "source hint"),
        }
        assert sorted(session.scalars(select(TagRow.tag))) == ["anime", "gloss"]
        prov = session.scalars(select(ProvenanceRow)).one()
        assert (prov.original_sha256, prov.original_format, prov.revision, prov.name_in_file) == (
            "ab" * 32,
            "a1111-pt",
            "abc123",
            "learned",
        )
    for query in ("shiny", "gloss", "glossy", '"sd-concepts-library"', "learned", "waifu"):
        assert search(catalogue, query) == [row.id], query
    assert ContentStore().verify().checked == 1


def test_known_facts_are_filled_never_overwritten(catalogue: Catalogue) -> None:
    emb = Embedding(name="x", vectors={CLIP_L: np.ones((1, 768), np.float32)})
    with catalogue.transaction() as session:
        import_embedding(session, emb, location="/a/x.pt", hints={"description": "first"})
    with catalogue.transaction() as session:
        row, created = import_embedding(
            session, emb, location="/b/x.pt", hints={"description": "second", "licence": "mit"}
        )
        assert not created
    with catalogue.reading() as session:
        row = session.scalars(select(EmbeddingRow)).one()
        assert (row.description, row.licence) == ("first", "mit")
    assert count(catalogue, ProvenanceRow) == 2


def test_corpus(catalogue: Catalogue, corpus: Path) -> None:
    report = add_paths(catalogue, [corpus])
    imported = {Path(o.path).name for o in report.imported}
    assert imported == {
        "sd-concepts-birb-style.bin",
        "a1111-gasai-yuno-1000.pt",
        "a1111-gasai-yuno-16600.pt",
        "a1111-gasai-yuno-10000.png",
    }
    assert [Path(o.path).name for o in report.previews] == ["a1111-gasai-yuno-16600.png"]
    assert not report.not_embeddings and not report.errors and not report.unsafe
    assert report.skipped == len(
        [p for p in corpus.iterdir() if p.suffix in (".md", ".txt", ".json")]
    )
    with catalogue.reading() as session:
        (preview,) = session.scalars(select(PreviewRow)).all()
        owner = session.get(EmbeddingRow, preview.embedding_id)
        assert owner is not None and owner.step == 16600
        assert owner.trained_on_hash == "e6e8e1fc"
        assert preview.sha256 == "9484d881f86777b7da7f83c9a92b510eba43dc4f9eb03f87cb88e38961a52524"
        formats = dict(
            session.execute(select(ProvenanceRow.location, ProvenanceRow.original_format)).all()
        )
        assert formats[str(corpus / "sd-concepts-birb-style.bin")] == "diffusers-bin"
        assert formats[str(corpus / "a1111-gasai-yuno-10000.png")] == "a1111-png"


def test_cli_add_summary_json_and_exit_codes(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_mixed(tmp_path / "ok", 6, seed=5)
    result = tireg_cli("add", tmp_path / "ok", "--tag", "mine", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["counts"]["imported"] == 6 and len(data["imported"]) == 6
    (tmp_path / "ok" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    result = tireg_cli("add", tmp_path / "ok")
    assert result.code == 1
    assert "already known" in result.stdout and "broken.safetensors" in result.stdout
    with open_catalogue() as cat, cat.reading() as session:
        assert set(session.scalars(select(TagRow.tag))) == {"mine"}


def test_cli_add_other_database(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_mixed(tmp_path / "e", 2, seed=6)
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    assert tireg_cli("add", tmp_path / "e", "--db", url).code == 0
    with open_catalogue(url) as cat:
        assert count(cat, EmbeddingRow) == 2
    shutil.rmtree(tmp_path / "e")
