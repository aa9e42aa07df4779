"""Four machines' worth of writers on one PostgreSQL catalogue and one shared store.

Each "machine" is its own TIREG_HOME (caches, hash cache) pointing at the same server
(``TIREG_DATABASE_URL``) and the same store folder (``TIREG_STORE``), and runs a ``tireg add``
of its folder and a ``tireg install`` of two URLs and a catalogued name, all eight processes at
once. The folders share files and the installs share URLs, so they race on the same embedding,
source and provenance rows and on the same store files. Every command must succeed (no
serialization failure, deadlock or lock error), nothing may be lost or doubled, and the
store and search index must agree with the catalogue.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from tests.postgres.server import Server
from tests.registry.make_files import write_mixed
from tests.registry.test_holds_up import tireg_popen
from tests.registry.test_install import ui_root
from tests.registry.test_query import add, make
from tests.sources.servers.http_server import FileServer, Served, running
from tests.sources.servers.hub_server import embedding_bytes
from tireg.db import head_revision, open_catalogue
from tireg.db.schema import EmbeddingRow, InstallRow, ProvenanceRow, SourceRow
from tireg.files import TMP_SUFFIX
from tireg.registry import doctor
from tireg.registry.store import ContentStore

pytestmark = [pytest.mark.postgresql_only, pytest.mark.slow]

MACHINES = 4
PER_FOLDER = 15
SHARED = 4  # files of machine 0's folder that every other machine adds too


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    with running(FileServer()) as server:
        yield server


def test_four_machines_add_and_install_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_server: FileServer
) -> None:
    store = tmp_path / "shared-store"
    monkeypatch.setenv("TIREG_STORE", str(store))
    with open_catalogue() as catalogue:
        add(catalogue, make("local-one", 1))
    folders = [tmp_path / f"folder{m}" for m in range(MACHINES)]
    for m, folder in enumerate(folders):
        write_mixed(folder, PER_FOLDER, seed=400 + m, per_folder=PER_FOLDER)
    for file in sorted((folders[0] / "part000").iterdir())[:SHARED]:
        for folder in folders[1:]:
            shutil.copy(file, folder / "part000" / f"copy-{file.name}")
    blobs = [embedding_bytes(f"<remote{i}>", "safetensors", seed=500 + i) for i in range(2)]
    urls = [file_server.add(f"/r{i}.safetensors", Served(b)) for i, b in enumerate(blobs)]
    roots = [ui_root(tmp_path / f"uis{m}", "a1111") for m in range(MACHINES)]

    procs = {}
    for m in range(MACHINES):
        home = tmp_path / f"machine{m}"
        ordered = urls if m % 2 else urls[::-1]
        procs[f"add {m}"] = tireg_popen("add", folders[m], home=home)
        procs[f"install {m}"] = tireg_popen(
            "install", *ordered, "local-one", "--ui", "a1111", "--ui-root", roots[m], home=home
        )
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, out, err)
        for word in ("Traceback", "locked", "serializ", "deadlock"):
            assert word not in err, (name, err)

    embeddings = 1 + MACHINES * PER_FOLDER + 2
    with open_catalogue() as catalogue, catalogue.reading() as session:
        assert session.scalar(select(func.count()).select_from(EmbeddingRow)) == embeddings
        provenance = 1 + MACHINES * PER_FOLDER + SHARED * (MACHINES - 1) + 2
        assert session.scalar(select(func.count()).select_from(ProvenanceRow)) == provenance
        for table, columns in (
            ("sources", "kind, locator"),
            ("provenance", "embedding_id, original_sha256, location"),
            ("installs", "path"),
        ):
            dupes = session.execute(
                text(f"SELECT {columns} FROM {table} GROUP BY {columns} HAVING count(*) > 1")
            ).all()
            assert dupes == [], (table, dupes)
        locators = set(session.scalars(select(SourceRow.locator)))
        assert {str(f) for f in folders} | set(urls) <= locators
        installs = session.scalars(select(InstallRow)).all()
        assert sorted((Path(i.path).parent.parent, i.embedding.name) for i in installs) == sorted(
            (root, name) for root in roots for name in ("<remote0>", "<remote1>", "local-one")
        )
        for row in installs:
            assert row.sha256 == hashlib.sha256(Path(row.path).read_bytes()).hexdigest()
    with open_catalogue() as catalogue:
        report = doctor.examine(catalogue, store=ContentStore(store))
    assert report.embeddings == report.store_files == embeddings
    assert (report.missing, report.damaged, report.orphans) == ([], [], [])
    assert report.index_drift == 0  # every writer's search rows are there and exact
    assert not [p for p in tmp_path.rglob(f"*{TMP_SUFFIX}") if p.is_file()]
    assert os.listdir(store)  # the machines wrote the shared store, not their homes
    assert not any((tmp_path / f"machine{m}" / "store").exists() for m in range(MACHINES))


def test_four_machines_opening_an_empty_database_migrate_it_once(
    postgres_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migration runs under the writer lock: the first machine migrates, the rest wait and
    find it done (no "relation already exists")."""
    postgres_server.admin("CREATE DATABASE empty_team")
    url = postgres_server.url("empty_team")
    monkeypatch.setenv("TIREG_DATABASE_URL", url)
    procs = [tireg_popen("list", home=tmp_path / f"machine{m}") for m in range(MACHINES)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with open_catalogue(url) as catalogue, catalogue.reading() as session:
        assert session.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()
    postgres_server.drop_database("empty_team")
