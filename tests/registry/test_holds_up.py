"""The catalogue holds up: concurrent writers, SIGKILL at random moments, permission errors, a full
disk, and a catalogue written by a newer tireg. Everything runs real ``python -m tireg``
processes against real SQLite files and a real content store.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import run_tireg_process
from tests.registry.make_files import write_mixed
from tireg.db import open_catalogue
from tireg.db.schema import EmbeddingRow, ProvenanceRow, SourceRow
from tireg.registry.store import ContentStore

pytestmark = pytest.mark.slow


def tireg_popen(*args: object, home: Path | None = None, **kwargs: object) -> subprocess.Popen[str]:
    env = os.environ.copy()
    if home is not None:
        env["TIREG_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "tireg", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,  # type: ignore[call-overload]
    )


def assert_consistent(home: Path) -> int:
    """Integrity check, every row's store file present and matching, store verified; row count.

    A process killed before it opened the catalogue leaves nothing at all: that is consistent."""
    if not (home / "catalogue.sqlite").exists():
        assert not (home / "store").exists() or not any((home / "store").rglob("*.safetensors"))
        return 0
    raw = sqlite3.connect(home / "catalogue.sqlite")
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        raw.close()
    store = ContentStore()
    check = store.verify()
    assert check.ok, check.bad
    with open_catalogue() as cat, cat.reading() as session:
        rows = session.scalars(select(EmbeddingRow)).all()
        for row in rows:
            assert (store.root / row.store_path).is_file(), row.store_path
        assert {r.vectors_sha256 for r in rows} <= {p.stem for p in store.files()}
        searchable = session.execute(select(func.count()).select_from(EmbeddingRow)).scalar()
        from sqlalchemy import text

        assert session.execute(text("SELECT count(*) FROM embedding_search")).scalar() == searchable
        return len(rows)


def test_four_concurrent_writers_on_a_fresh_catalogue(tmp_path: Path, tireg_home: Path) -> None:
    folders = [tmp_path / name for name in ("a", "b", "c")]
    for i, folder in enumerate(folders):
        write_mixed(folder, 40, seed=100 + i, per_folder=40)
    # the same vectors under other names, so writers race on one embedding row
    for file in sorted((folders[0] / "part000").iterdir())[:10]:
        shutil.copy(file, folders[2] / "part000" / f"copy-{file.name}")
    plans = [folders[:2], folders[1:], [folders[2], folders[0]], folders]
    procs = [tireg_popen("add", *plan) for plan in plans]
    results = [(p.wait(timeout=180), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for code, out, err in results:
        assert code == 0, (out, err)
        assert "locked" not in err
    assert assert_consistent(tireg_home) == 120
    with open_catalogue() as cat, cat.reading() as session:
        assert session.scalar(select(func.count()).select_from(ProvenanceRow)) == 130
        sources = session.scalars(select(SourceRow.locator)).all()
        assert sorted(sources) == sorted(str(f) for f in folders)


def test_sigkill_at_random_moments_never_corrupts(
    tmp_path: Path, tireg_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "big"
    write_mixed(folder, 160, seed=7, per_folder=40)
    # how long one whole import takes here, so the kills land inside imports on any machine
    started = time.perf_counter()
    timing = tireg_popen("add", folder, home=tmp_path / "timing-home")
    timing.communicate(timeout=300)
    whole = time.perf_counter() - started
    rng = random.Random(20240607)  # seeded: the same kill moments (as fractions) every run
    home, killed = tireg_home, 0
    for round_ in range(20):
        proc = tireg_popen("add", folder)
        time.sleep(whole * rng.uniform(0.1, 0.6))
        finished_first = proc.poll() is not None
        if not finished_first:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        assert_consistent(home)
        if finished_first:
            # each kill leaves less to import, so later imports finish sooner; once one finishes
            # before its kill, go on with an empty catalogue so the kills keep landing mid-import
            home = tmp_path / f"home-{round_}"
            monkeypatch.setenv("TIREG_HOME", str(home))
    assert killed >= 10, killed  # the loop really did interrupt imports
    final = run_tireg_process("add", folder)
    assert final.code == 0, final.stderr
    assert assert_consistent(home) == 160
    with open_catalogue() as cat, cat.reading() as session:
        assert session.scalar(select(func.count()).select_from(ProvenanceRow)) == 160


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_is_one_clear_line(tmp_path: Path, tireg_home: Path) -> None:
    write_mixed(tmp_path / "e", 30, seed=8, per_folder=30)
    with open_catalogue():
        pass  # the catalogue exists; what fails is growing it and the store
    proc = tireg_popen("add", tmp_path / "e", preexec_fn=lambda: _limit_file_size(12_000))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "disk full or file too large" in lines[0]
    assert_consistent(tireg_home)


def test_newer_catalogue_is_one_clear_line(tmp_path: Path, tireg_home: Path) -> None:
    with open_catalogue():
        pass
    raw = sqlite3.connect(tireg_home / "catalogue.sqlite")
    raw.execute("UPDATE alembic_version SET version_num = '0999'")
    raw.commit()
    raw.close()
    write_mixed(tmp_path, 1, seed=9)
    result = run_tireg_process("add", tmp_path)
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tireg_home / 'catalogue.sqlite'}: catalogue was written by a newer tireg "
        "(revision 0999); upgrade tireg"
    ]


def test_unwritable_places_are_one_clear_line(tmp_path: Path, tireg_home: Path) -> None:
    write_mixed(tmp_path / "e", 2, seed=10)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    result = run_tireg_process("add", tmp_path / "e", "--db", f"sqlite:///{blocker}/c.sqlite")
    assert result.code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot create the catalogue's folder" in result.stderr
    # the content store's place is taken by a file
    (tireg_home / "store").write_text("not a folder")
    result = run_tireg_process("add", tmp_path / "e")
    assert result.code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot write the content store" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_and_read_only_store(tmp_path: Path, tireg_home: Path) -> None:
    files = write_mixed(tmp_path / "e", 3, seed=11)
    files[0].chmod(0)
    try:
        result = run_tireg_process("add", tmp_path / "e")
    finally:
        files[0].chmod(0o644)
    assert result.code == 1
    assert "Permission denied" in result.stdout and str(files[0]) in result.stdout
    write_mixed(tmp_path / "more", 2, seed=12)
    store = tireg_home / "store"
    store.chmod(0o500)
    try:
        result = run_tireg_process("add", tmp_path / "more")
    finally:
        store.chmod(0o755)
    assert result.code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Permission denied" in result.stderr
