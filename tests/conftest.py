"""Fixtures shared by every test: an isolated TIREG_HOME, the shared corpus, a CLI runner, and
the catalogue backend (SQLite, plus a throwaway PostgreSQL server for the catalogue suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.postgres.server import TEMPLATE, Server, find_binaries, running_server

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT.parent / "shared" / "corpus"

#: modules whose tests run once per catalogue backend (the rest use SQLite only)
CATALOGUE_SUITE = {
    "test_db.py",
    "test_query.py",
    "test_tags.py",
    "test_import.py",
    "test_install.py",
    "test_listing.py",
}
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: a catalogue-suite test about SQLite itself (pragmas, files)"
    )
    config.addinivalue_line("markers", "postgresql_only: runs against PostgreSQL only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the catalogue suite once per backend: ``test_x[sqlite]`` and ``test_x[postgresql]``."""
    path = metafunc.definition.path
    if path.name not in CATALOGUE_SUITE and path.parent.name != "postgres":
        return
    backends = list(BACKENDS)
    if metafunc.definition.get_closest_marker("sqlite_only"):
        backends.remove("postgresql")
    if metafunc.definition.get_closest_marker("postgresql_only"):
        backends.remove("sqlite")
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture(autouse=True)
def tireg_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own TIREG_HOME, and never talks to anything but 127.0.0.1."""
    home = tmp_path_factory.mktemp("tireg-home")
    monkeypatch.setenv("TIREG_HOME", str(home))
    for var in ("TIREG_DATABASE_URL", "TIREG_STORE", "TIREG_OFFLINE", "HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HOME", str(home / "hf-home"))
    return home


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """One throwaway PostgreSQL server for the whole run, with a migrated template database."""
    bin_dir = find_binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binary (initdb) here; apt-get install postgresql")
    from tireg.db import open_catalogue

    with running_server(bin_dir) as server:
        server.admin(f"CREATE DATABASE {TEMPLATE}")
        open_catalogue(server.url(TEMPLATE)).close()
        yield server


@pytest.fixture(autouse=True)
def backend(
    request: pytest.FixtureRequest, tireg_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The catalogue backend of this test; for PostgreSQL, a fresh database in
    ``TIREG_DATABASE_URL`` (what every command and ``open_catalogue()`` use), dropped after."""
    name = getattr(request, "param", "sqlite")
    if name != "postgresql":
        yield name
        return
    server: Server = request.getfixturevalue("postgres_server")
    database = server.fresh_database()
    monkeypatch.setenv("TIREG_DATABASE_URL", server.url(database))
    try:
        yield name
    finally:
        server.drop_database(database)


@pytest.fixture
def corpus() -> Path:
    """../shared/corpus (real files other tools wrote); skipped where it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def tireg_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``tireg ARGS...`` in-process (fast); returns exit code, stdout and stderr."""
    from tireg.cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


def run_tireg_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """Run ``python -m tireg ARGS...`` as a real process (for kill and concurrency tests)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tireg", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
