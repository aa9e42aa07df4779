"""Two `tireg add` and two `tireg install` processes on one catalogue at once: every command
succeeds (no "database is locked"), nothing is duplicated or lost, and SQLite stays intact."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.registry.make_files import write_mixed
from tests.registry.test_holds_up import assert_consistent, tireg_popen
from tests.registry.test_install import ui_root
from tests.registry.test_query import add, make
from tests.sources.servers.http_server import FileServer, Served, running
from tests.sources.servers.hub_server import embedding_bytes
from tireg.db import open_catalogue
from tireg.db.schema import EmbeddingRow, InstallRow, ProvenanceRow, SourceRow
from tireg.files import TMP_SUFFIX

pytestmark = pytest.mark.slow


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    with running(FileServer()) as server:
        yield server


def test_two_adds_and_two_installs_at_once(
    tmp_path: Path, tireg_home: Path, file_server: FileServer
) -> None:
    with open_catalogue() as catalogue:
        add(catalogue, make("local-one", 1))
    folders = [tmp_path / "a", tmp_path / "b"]
    for i, folder in enumerate(folders):
        write_mixed(folder, 30, seed=200 + i, per_folder=30)
    for file in sorted((folders[0] / "part000").iterdir())[:4]:  # both adds race on these rows
        shutil.copy(file, folders[1] / "part000" / f"copy-{file.name}")
    blobs = [embedding_bytes(f"<remote{i}>", "safetensors", seed=300 + i) for i in range(2)]
    urls = [file_server.add(f"/r{i}.safetensors", Served(b)) for i, b in enumerate(blobs)]
    roots = {ui: ui_root(tmp_path / "uis", ui) for ui in ("a1111", "comfyui")}

    procs = {
        "add a": tireg_popen("add", folders[0]),
        "add b": tireg_popen("add", folders[1]),
        # both installs fetch the same two URLs: they race on the same source and embedding rows
        "install a1111": tireg_popen(
            "install", *urls, "local-one", "--ui", "a1111", "--ui-root", roots["a1111"]
        ),
        "install comfyui": tireg_popen(
            "install",
            urls[1],
            urls[0],
            "local-one",
            "--ui",
            "comfyui",
            "--ui-root",
            roots["comfyui"],
        ),
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (name, out, err)
        assert "locked" not in err and "Traceback" not in err, (name, err)

    assert assert_consistent(tireg_home) == 1 + 60 + 2  # PRAGMA integrity_check is "ok" in there
    raw = sqlite3.connect(tireg_home / "catalogue.sqlite")
    try:
        for table, columns in (
            ("sources", "kind, locator"),
            ("provenance", "embedding_id, original_sha256, location"),
            ("installs", "path"),
        ):
            dupes = raw.execute(
                f"SELECT {columns}, count(*) FROM {table} GROUP BY {columns} HAVING count(*) > 1"
            ).fetchall()
            assert dupes == [], (table, dupes)
    finally:
        raw.close()
    with open_catalogue() as catalogue, catalogue.reading() as session:
        assert session.scalar(select(func.count()).select_from(ProvenanceRow)) == 1 + 64 + 2
        locators = set(session.scalars(select(SourceRow.locator)))
        assert {str(f) for f in folders} | set(urls) <= locators
        installs = session.scalars(select(InstallRow)).all()
        assert sorted((i.target, i.embedding.name) for i in installs) == sorted(
            (ui, name) for ui in roots for name in ("<remote0>", "<remote1>", "local-one")
        )
        for row in installs:
            assert row.sha256 == hashlib.sha256(Path(row.path).read_bytes()).hexdigest()
        remote_rows = session.scalars(
            select(EmbeddingRow).where(EmbeddingRow.name.in_(["<remote0>", "<remote1>"]))
        ).all()
        assert len(remote_rows) == 2
    assert not list(tmp_path.rglob(f"*{TMP_SUFFIX}"))
    assert not list(tireg_home.rglob(f"*{TMP_SUFFIX}"))
