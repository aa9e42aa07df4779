"""A catalogue tireg cannot write (a read-only mount, a shared drive) still answers queries.

The catalogue is made read-only the way users meet it: the whole ``TIREG_HOME`` bind-mounted
read-only (``unshare -m`` gives the test its own mount namespace, so nothing outside it sees
the mount). Permission bits would not do: the tests may run as root, who ignores them, while a
read-only mount binds root too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "embeddings"


def _can_mount_read_only(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{tmp}' '{tmp}'"],
        capture_output=True,
    )
    return probe.returncode == 0


def _run_read_only(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tireg ARGS`` with ``home`` mounted read-only for that process alone."""
    command = " ".join(["'" + sys.executable + "'", "-m", "tireg", *(f"'{a}'" for a in args)])
    script = f"mount --bind -o ro '{home}' '{home}' && exec {command}"
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
