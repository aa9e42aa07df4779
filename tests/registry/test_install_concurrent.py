"""Four real processes installing into one UI folder at once: one winner per file, no lost or
duplicate rows, no lock errors, no temporaries left behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.registry.test_install import ui_root
from tests.registry.test_query import add, make
from tireg.converters import read_file
from tireg.db.schema import InstallRow
from tireg.db.session import open_catalogue
from tireg.files import TMP_SUFFIX

pytestmark = pytest.mark.slow


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tireg", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def test_four_processes_install_into_one_folder(tmp_path: Path) -> None:
    catalogue = open_catalogue()
    a, c, other = make("same", 1), make("same", 2), make("other", 3)
    for embedding in (a, c, other):
        add(catalogue, embedding)
    spec_a, spec_c = f"same@{a.vectors_sha256()[:8]}", f"same@{c.vectors_sha256()[:8]}"
    for round_ in range(3):
        root = ui_root(tmp_path / f"round{round_}", "a1111")
        where = ("--ui", "a1111", "--ui-root", str(root))
        procs = {
            "a1": _start("install", spec_a, *where),
            "a2": _start("install", spec_a, *where),
            "c": _start("install", spec_c, *where),
            "other": _start("install", "other", *where),
        }
        done = {key: (p.wait(timeout=120), *p.communicate()) for key, p in procs.items()}
        for key, (code, _out, err) in done.items():
            assert "locked" not in err and "Traceback" not in err, (key, err)
            assert code == 0 or "--as NEWNAME" in err, (key, code, err)
        assert done["other"][0] == 0
        folder = root / "embeddings"
        same = folder / "same.safetensors"
        winner = a if read_file(same).vectors_sha256() == a.vectors_sha256() else c
        assert read_file(same).vectors_sha256() == winner.vectors_sha256()
        if winner is a:
            assert (done["a1"][0], done["a2"][0], done["c"][0]) == (0, 0, 1)
        else:
            assert (done["a1"][0], done["a2"][0], done["c"][0]) == (1, 1, 0)
        assert sorted(p.name for p in folder.iterdir()) == ["other.safetensors", "same.safetensors"]
        assert not list(folder.rglob(f"*{TMP_SUFFIX}"))
        with catalogue.reading() as session:
            rows = session.scalars(
                select(InstallRow).where(InstallRow.path.like(f"{root.resolve()}%"))
            ).all()
            assert sorted(Path(r.path).name for r in rows) == [
                "other.safetensors",
                "same.safetensors",
            ]
            for row in rows:
                assert row.sha256 == hashlib.sha256(Path(row.path).read_bytes()).hexdigest()
                assert row.embedding.vectors_sha256 == read_file(row.path).vectors_sha256()
    catalogue.close()
