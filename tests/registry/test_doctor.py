"""``tireg doctor``: orphans an interrupted import left, missing store files, search-index drift.

Built from real states: a real import, a real SIGINT in the middle of one, files removed from
the store and an FTS row dropped behind the catalogue's back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from tests.registry.make_files import random_embedding, write_mixed
from tireg.db import open_catalogue
from tireg.db.session import FTS_TABLE
from tireg.registry.doctor import ORPHAN_MIN_AGE_S
from tireg.registry.importer import BATCH_FILES
from tireg.registry.store import ContentStore


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_doctor_reports_and_repairs(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_mixed(tmp_path / "in", 12, seed=3)
    assert tireg_cli("add", tmp_path / "in").code == 0
    assert tireg_cli("doctor").code == 0, "a fresh catalogue is healthy"

    # an interrupted import's leftovers: one old orphan, one young (an import may be running)
    store = ContentStore()
    rng = np.random.default_rng(9)
    old = store.root / store.put(random_embedding(rng, "orphan-old"))
    young = store.root / store.put(random_embedding(rng, "orphan-young"))
    _age(old, ORPHAN_MIN_AGE_S + 60)
    # a store file deleted by hand, and an FTS row lost
    victim = sorted(store.files())[0]
    victim.unlink()
    with open_catalogue() as cat, cat.transaction() as session:
        session.execute(
            text(f"DELETE FROM {FTS_TABLE} WHERE rowid = (SELECT min(rowid) FROM {FTS_TABLE})")
        )

    found = tireg_cli("doctor", "--json")
    assert found.code == 1
    report = json.loads(found.stdout)
    assert report["orphans"] == [old.relative_to(store.root).as_posix()]
    assert report["young_orphans"] == 1
    assert len(report["missing"]) == 1 and report["index_drift"] >= 1

    fixed = tireg_cli("doctor", "--repair", "--json")
    assert json.loads(fixed.stdout)["repaired"] is True
    assert not old.exists(), "the old orphan is swept"
    assert young.exists(), "a file that may belong to a running import is never touched"

    after = json.loads(tireg_cli("doctor", "--json").stdout)
    assert after["orphans"] == [] and after["index_drift"] == 0
    assert len(after["missing"]) == 1, "a missing file can only be restored by re-adding it"


def test_ctrl_c_during_add_says_what_was_imported(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    total = 4 * BATCH_FILES
    write_mixed(folder, total, seed=11)
    env = {**os.environ, "TIREG_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tireg", "add", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    store = tmp_path / "home" / "store"
    deadline = time.monotonic() + 120
    # interrupt once a batch is committed: the store runs up to two batches ahead of the commits
    # (one being stored while the one before is recorded), so more store files than that mean
    # the first batch is in the catalogue
    while time.monotonic() < deadline and proc.poll() is None:
        if store.is_dir() and sum(1 for _ in store.glob("??/*.safetensors")) > 2 * BATCH_FILES:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted: ") and "run the same command again" in lines[-1]
    assert "Traceback" not in err
    said = re.match(r"interrupted: ([\d,]+) of ([\d,]+) files", lines[-1])
    assert said is not None, lines[-1]
    imported, of = (int(n.replace(",", "")) for n in said.groups())
    assert 0 < imported < total and of == total, lines[-1]
    rerun = subprocess.run(
        [sys.executable, "-m", "tireg", "add", str(folder), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    done = json.loads(rerun.stdout)["counts"]
    assert done["already_known"] > 0 and done["already_known"] + done["imported"] == total
    assert done["already_known"] == imported, "the interrupted line counted what was kept"
