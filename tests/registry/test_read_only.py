"""A catalogue tireg cannot write (a read-only mount, a shared drive) still answers queries.

The catalogue is made read-only the way users meet it: the whole ``TIREG_HOME`` bind-mounted
read-only (``unshare -m`` gives the test its own mount namespace, so nothing outside it sees
the mount). Permission bits would not do: the tests may run as root, who ignores them, while a
read-only mount binds root too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.registry.make_files import random_embedding, write_one
from tests.sources.servers.civitai_server import CivitaiModel, CivitaiServer, CivitaiVersion
from tests.sources.servers.http_server import FileServer, Served, running
from tests.sources.servers.hub_server import HubServer, concept_repo, embedding_bytes
from tireg.converters import safetensors_file
from tireg.registry.doctor import ORPHAN_MIN_AGE_S
from tireg.registry.store import ContentStore

EXAMPLES = REPO_ROOT / "examples" / "embeddings"


def _can_mount_read_only(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{tmp}' '{tmp}'"],
        capture_output=True,
    )
    return probe.returncode == 0


def _run_read_only(
    home: Path, *args: str, mount: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``tireg ARGS`` with ``home`` (or ``mount``, a folder above it) mounted read-only for that
    process alone."""
    mount = mount or home
    command = " ".join(["'" + sys.executable + "'", "-m", "tireg", *(f"'{a}'" for a in args)])
    script = f"mount --bind -o ro '{mount}' '{mount}' && exec {command}"
    env = {**os.environ, "TIREG_HOME": str(home)}
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def read_only_home(tmp_path: Path) -> Path:
    if not _can_mount_read_only(tmp_path):
        pytest.skip("no mount namespace here (unshare -m with a read-only bind mount)")
    home = tmp_path / "home"
    env = {**os.environ, "TIREG_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "tireg", "add", str(EXAMPLES)], check=True, env=env, timeout=120
    )
    return home


def test_queries_work_on_a_read_only_catalogue(read_only_home: Path) -> None:
    listing = _run_read_only(read_only_home, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert "demo-style" in listing.stdout
    found = _run_read_only(read_only_home, "search", "demo")
    assert found.returncode == 0, found.stderr
    shown = _run_read_only(read_only_home, "show", "demo-style")
    assert shown.returncode == 0, shown.stderr
    assert "demo-style" in shown.stdout


def test_a_change_on_a_read_only_catalogue_is_one_line(read_only_home: Path) -> None:
    before = (read_only_home / "catalogue.sqlite").read_bytes()
    for args in (("tag", "demo-style", "new-tag"), ("rm", "demo-style")):
        result = _run_read_only(read_only_home, *args)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "read-only" in lines[0]
        assert "Traceback" not in result.stderr
    assert (read_only_home / "catalogue.sqlite").read_bytes() == before


def test_an_old_catalogue_on_a_read_only_mount_is_refused_in_one_line(
    read_only_home: Path,
) -> None:
    import sqlite3

    db = read_only_home / "catalogue.sqlite"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    conn.close()
    result = _run_read_only(read_only_home, "list")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "read-only" in result.stderr and "0001" in result.stderr


def test_hash_works_where_its_cache_cannot_be_written(read_only_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"weights" * 1000)
    on_read_only = _run_read_only(read_only_home, "hash", str(target), "--json")
    assert on_read_only.returncode == 0, on_read_only.stderr
    assert '"sha256"' in on_read_only.stdout
    nowhere = subprocess.run(
        [sys.executable, "-m", "tireg", "hash", str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "TIREG_HOME": "/proc/no-such-home"},
        timeout=120,
    )
    assert nowhere.returncode == 0, nowhere.stderr
    assert "Traceback" not in nowhere.stderr


def _sweep(
    commands: list[tuple[str, ...]], home: Path, *, mount: Path | None = None
) -> dict[str, str]:
    """Run each command with ``mount`` (default ``home``) read-only; each must exit 1 with one
    line on stderr (blank lines a progress bar leaves aside), no traceback. Returns the lines;
    every command that broke the rule is named in one failure."""
    lines, broken = {}, []
    for args in commands:
        result = _run_read_only(home, *args, mount=mount)
        said = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode != 1 or len(said) != 1 or "Traceback" in result.stderr:
            broken.append(f"{' '.join(args)}: exit {result.returncode}\n{result.stderr[-600:]}")
        else:
            lines[" ".join(args)] = said[0]
    assert not broken, "\n\n".join(broken)
    return lines


@pytest.fixture
def civitai(monkeypatch: pytest.MonkeyPatch) -> Iterator[CivitaiServer]:
    """The loopback Civitai, knowing ``demo-style.pt``; the child processes inherit its URL."""
    server = CivitaiServer()
    data = (EXAMPLES / "demo-style.pt").read_bytes()
    server.add(CivitaiModel(3, "Demo Style", [CivitaiVersion(33, {"demo-style.pt": data})]))
    monkeypatch.setenv("TIREG_CIVITAI_API", server.api)
    with running(server.http):
        yield server


def test_every_read_only_command_works_on_a_read_only_catalogue(
    read_only_home: Path, civitai: CivitaiServer
) -> None:
    before = (read_only_home / "catalogue.sqlite").read_bytes()
    for args in (
        ("installed",),
        ("similar", "demo-style"),
        ("source", "list"),
        ("doctor",),
        ("inspect", str(EXAMPLES / "demo-style.pt"), str(EXAMPLES / "demo-xl.safetensors")),
        ("lookup", str(EXAMPLES / "demo-style.pt"), "--json"),
    ):
        result = _run_read_only(read_only_home, *args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        assert result.stdout.strip(), args
    (found,) = json.loads(_run_read_only(read_only_home, "lookup", "demo-style", "--json").stdout)
    assert found["found"] and found["spec"] == "civitai:3@33"
    assert (read_only_home / "catalogue.sqlite").read_bytes() == before


def _writing_commands(out: Path, url: str, hub: str) -> list[tuple[str, ...]]:
    """Every command that changes the catalogue, the store or TIREG_HOME, with real work to do."""
    return [
        ("add", str(EXAMPLES)),
        ("add", str(out / "new")),
        ("install", "demo-sd2", "--to", str(out / "again")),
        ("uninstall", "demo-style"),
        ("tag", "demo-style", "new-tag"),
        ("rm", "demo-card"),
        ("sync", "hf", "--hf-endpoint", hub),
        ("sync", "hf", "--hf-endpoint", hub, "--download"),
        ("source", "add", "url", url.replace("walrus", "other")),
        ("source", "sync"),
        ("doctor", "--repair"),
        ("model", "add", str(out / "model.safetensors")),
        ("model", "add", "--hash", "0badc0de", "--name", "zebra-v1", "--family", "sd1"),
        ("mix", "0.7*demo-style + 0.3*demo-style", "--name", "mixed"),
        ("merge", "demo-style", "demo-card", "--name", "merged"),
        ("trim", "demo-style", "--vectors", "0:1", "--name", "trimmed"),
        ("scale", "demo-style", "0.5", "--name", "scaled"),
    ]


@pytest.fixture
def servers() -> Iterator[tuple[FileServer, HubServer]]:
    """A plain HTTP server with one embedding, and a Hub with one concept repo."""
    hub = HubServer([concept_repo("sd-concepts-library/walrus-tusk", "<walrus-tusk>", "object")])
    with running(FileServer()) as files, running(hub.http):
        yield files, hub


def _files_to_bring(out: Path) -> None:
    """A new embedding for ``add`` and a checkpoint for ``model add``, outside TIREG_HOME."""
    write_one(
        random_embedding(np.random.default_rng(5), "fresh"), out / "new", "fresh", "safetensors"
    )
    model = {"model.diffusion_model.input_blocks.0.0.weight": np.zeros((4, 4, 3, 3), np.float32)}
    (out / "model.safetensors").write_bytes(safetensors_file.dumps(model))


def _with_work_to_do(home: Path, out: Path, url: str) -> None:
    """Give every writing command something real to change in ``home``: an install to undo, a
    source to fetch, an old orphan in the store, a new embedding and a checkpoint to register."""
    env = {**os.environ, "TIREG_HOME": str(home)}
    for args in (
        ("install", "demo-style", "--to", str(out / "installed")),
        ("source", "add", "url", url),
    ):
        subprocess.run([sys.executable, "-m", "tireg", *args], check=True, env=env, timeout=120)
    store = ContentStore(home / "store")
    orphan = store.root / store.put(random_embedding(np.random.default_rng(4), "orphan"))
    past = time.time() - ORPHAN_MIN_AGE_S - 60
    os.utime(orphan, (past, past))
    _files_to_bring(out)


def test_every_writing_command_fails_in_one_line_on_a_read_only_catalogue(
    read_only_home: Path, tmp_path: Path, servers: tuple[FileServer, HubServer]
) -> None:
    files, hub = servers
    url = files.add("/walrus.safetensors", Served(embedding_bytes("emb_params", "safetensors")))
    files.add("/other.safetensors", Served(embedding_bytes("emb_params", "safetensors", seed=1)))
    _with_work_to_do(read_only_home, tmp_path / "out", url)
    before = {p: p.read_bytes() for p in read_only_home.rglob("*") if p.is_file()}
    lines = _sweep(_writing_commands(tmp_path / "out", url, hub.url), read_only_home)
    for args, line in lines.items():
        assert "read-only" in line.lower(), f"{args}: {line}"
    after = {p: p.read_bytes() for p in read_only_home.rglob("*") if p.is_file()}
    assert after == before, "nothing under TIREG_HOME changed"


def test_every_writing_command_fails_in_one_line_where_tireg_home_cannot_be_made(
    tmp_path: Path, servers: tuple[FileServer, HubServer]
) -> None:
    if not _can_mount_read_only(tmp_path):
        pytest.skip("no mount namespace here (unshare -m with a read-only bind mount)")
    files, hub = servers
    url = files.add("/walrus.safetensors", Served(embedding_bytes("emb_params", "safetensors")))
    files.add("/other.safetensors", Served(embedding_bytes("emb_params", "safetensors", seed=1)))
    _files_to_bring(tmp_path / "out")
    locked = tmp_path / "locked"
    locked.mkdir()
    home = locked / "home"  # TIREG_HOME in a read-only folder: it cannot even be created
    lines = _sweep(_writing_commands(tmp_path / "out", url, hub.url), home, mount=locked)
    for args, line in lines.items():
        assert str(locked) in line, f"{args}: the line names the place ({line})"
    assert list(locked.iterdir()) == []
