"""Git sources through the catalogue: add, sync, re-sync only what changed, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.sources.git_server import GitHost, serving
from tireg.converters import safetensors_file
from tireg.db import open_catalogue
from tireg.db.schema import EmbeddingRow, ProvenanceRow
from tireg.registry import source_sync

README = b"""# viper1 embeddings

## Bunyip (Monster Girl Encyclopedia)

Trained on Waifu Diffusion v1.2 for 30000 steps.

## Shishiro Botan (Hololive)

Botan, 50000 steps.
"""


def emb(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_file.dumps({"emb_params": rng.standard_normal((2, 768), dtype=np.float32)})


@pytest.fixture
def host(tmp_path: Path) -> Iterator[GitHost]:
    with serving(GitHost(tmp_path / "served")) as h:
        project = h.project("viper1/stable-diffusion-embeddings", branch="master")
        project.commit(
            {
                "README.md": README,
                "embeddings/bunyip-30000.safetensors": emb(1),
                "embeddings/botan-50000.safetensors": emb(2),
                "embeddings/broken.pt": b"PK\x03\x04 not really a zip",
            }
        )
        yield h


def test_git_source_end_to_end(host: GitHost) -> None:
    url = host.repo_url("viper1/stable-diffusion-embeddings")
    catalogue = open_catalogue()
    (source_id,) = source_sync.add_source(catalogue, "git", url, ref="master", path="embeddings")
    report = source_sync.sync_sources(catalogue)
    (outcome,) = report.sources
    assert outcome.status == "synced" and len(outcome.imported) == 2
    assert [p[0].endswith("broken.pt") for p in outcome.problems] == [True]
    with catalogue.reading() as session:
        rows = {r.name: r for r in session.scalars(select(EmbeddingRow))}
        assert set(rows) == {"bunyip-30000", "botan-50000"}
        assert "30000 steps" in rows["bunyip-30000"].description
        prov = session.scalars(
            select(ProvenanceRow).where(ProvenanceRow.source_id == source_id)
        ).all()
        assert all("/-/raw/" in p.location and p.revision and len(p.revision) == 40 for p in prov)

    project = host.projects["viper1/stable-diffusion-embeddings"]
    project.commit({"embeddings/botan-50000.safetensors": emb(3)})
    (again,) = source_sync.sync_sources(catalogue).sources
    assert len(again.imported) == 1 and again.imported[0].endswith("botan-50000.safetensors")
    assert again.problems == []  # broken.pt did not change: not read again
    (third,) = source_sync.sync_sources(catalogue).sources
    assert third.status == "unchanged"
    (listed,) = source_sync.list_sources(catalogue)
    assert listed.embeddings == 3 and listed.status == "fetched"
    catalogue.close()


def test_cli_git_add_and_sync(host: GitHost, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    url = host.repo_url("viper1/stable-diffusion-embeddings")
    added = tireg_cli(
        "source", "add", "git", url, "--ref", "master", "--path", "embeddings", "--json"
    )
    assert added.code == 0, added.stderr
    assert json.loads(added.stdout)[0]["kind"] == "git"
    synced = tireg_cli("source", "sync")
    assert synced.code == 0, synced.stderr
    assert "synced" in synced.stdout and "broken.pt" in synced.stdout
    wrong = tireg_cli("source", "add", "rentry", url, "--ref", "x")
    assert wrong.code == 1 and "git sources only" in wrong.stderr
