"""One facts builder: what the importer records and what ``check`` judges by are the same rule
(:func:`tireg.registry.compat.implied_facts`), on real imports into a real catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tireg.converters import CLIP_L, Embedding, write_file
from tireg.db import Catalogue, open_catalogue
from tireg.db.schema import CompatRow, SourceRow
from tireg.registry.compat import (
    BASE_MODEL_HINT,
    FAMILY,
    SAME_FAMILY,
    TRAINED_ON,
    Fact,
    check,
    compatible_embedding_ids,
    embedding_facts,
    implied_facts,
)
from tireg.registry.importer import add_paths, local_source
from tireg.registry.naming import resolve


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def _file(folder: Path, name: str, trained_on: str | None = None) -> Path:
    rng = np.random.default_rng(len(name))
    vectors = {CLIP_L: rng.standard_normal((2, 768)).astype(np.float32)}
    emb = Embedding(name=name, vectors=vectors, trained_on_hash=trained_on)
    folder.mkdir(parents=True, exist_ok=True)
    return write_file(emb, folder / f"{name}.pt", "a1111-pt")[0]


def _recorded(catalogue: Catalogue, spec: str) -> list[Fact]:
    with catalogue.reading() as session:
        row = resolve(session, spec)
        rows = session.scalars(
            select(CompatRow).where(CompatRow.embedding_id == row.id).order_by(CompatRow.id)
        )
        return [Fact(c.relation, c.model_ref, c.evidence) for c in rows]


def test_the_builder_states_each_rule() -> None:
    assert implied_facts("sd1") == [Fact(FAMILY, "sd1", "vector widths")]
    assert implied_facts("sd1", "E6E8E1FC", [("SD 1.5", "civitai baseModel"), ("", "x")]) == [
        Fact(FAMILY, "sd1", "vector widths"),
        Fact(TRAINED_ON, "e6e8e1fc", "a1111 sd_checkpoint"),  # hashes compare lower-cased
        Fact(BASE_MODEL_HINT, "SD 1.5", "civitai baseModel"),  # an empty hint is no fact
    ]


def test_the_importer_records_exactly_what_the_builder_says(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    report = add_paths(
        catalogue,
        [_file(tmp_path, "yuno", trained_on="E6E8E1FC")],
        hints={"base_model_hint": "SD 1.5", "base_model_evidence": "civitai baseModel"},
    )
    assert not report.errors
    expected = implied_facts("sd1", "E6E8E1FC", [("SD 1.5", "civitai baseModel")])
    assert _recorded(catalogue, "yuno") == expected
    # importing the same vectors again adds no second copy of a fact
    add_paths(catalogue, [_file(tmp_path / "again", "yuno", trained_on="E6E8E1FC")])
    assert _recorded(catalogue, "yuno") == expected
    # a hint without its own evidence says where it came from in general
    add_paths(catalogue, [_file(tmp_path, "plain")], hints={"base_model_hint": "SD 1.4"})
    assert _recorded(catalogue, "plain")[-1] == Fact(BASE_MODEL_HINT, "SD 1.4", "source hint")


def test_check_adds_a_base_model_a_source_learnt_after_the_import(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    """``check`` and ``search --compatible-with`` build the same facts from the columns, so a
    source's base model recorded later (a rentry row, a Civitai lookup) counts as evidence."""
    add_paths(catalogue, [_file(tmp_path, "late")])
    with catalogue.transaction() as session:
        source = session.get_one(SourceRow, local_source(session, tmp_path))
        source.base_model_hint = "Stable Diffusion 1.4"
    with catalogue.transaction() as session:
        row = resolve(session, "late")
        facts = embedding_facts(row)
        model, [result] = check(session, "Stable Diffusion 1.4", ["late"])
        ids = compatible_embedding_ids(session, model)
    hint = Fact(BASE_MODEL_HINT, "Stable Diffusion 1.4", "local source")
    assert facts == [*_recorded(catalogue, "late"), hint]
    assert result.verdict.relation == SAME_FAMILY and row.id in ids
    assert "base model hint 'Stable Diffusion 1.4' (local source)" in result.verdict.evidence
