"""A content store shared by several machines (``TIREG_STORE``): writers of the same content,
in separate processes at once, leave exactly one good file per embedding and no temporaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry.test_query import make
from tireg.files import TMP_SUFFIX
from tireg.registry.store import ContentStore

pytestmark = pytest.mark.slow

WRITERS = 4
EMBEDDINGS = 12
ROUNDS = 5

#: each writer stores the same embeddings, several rounds over, into TIREG_STORE
_WRITER = f"""
from tests.registry.test_query import make
from tireg.registry.store import ContentStore

for _ in range({ROUNDS}):
    for seed in range({EMBEDDINGS}):
        ContentStore().put(make(f"e{{seed}}", seed, n=4))
"""


def test_writers_of_the_same_content_never_corrupt_a_shared_store(tmp_path: Path) -> None:
    shared = tmp_path / "mnt" / "team-store"
    env = {**os.environ, "TIREG_STORE": str(shared)}
    procs = []
    for m in range(WRITERS):
        env_m = {**env, "TIREG_HOME": str(tmp_path / f"machine{m}")}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WRITER],
                env=env_m,
                stderr=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parents[2],
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    store = ContentStore(shared)
    check = store.verify()
    assert check.ok, check.bad
    expected = {make(f"e{seed}", seed, n=4).vectors_sha256() for seed in range(EMBEDDINGS)}
    assert {f.name.removesuffix(".safetensors") for f in store.files()} == expected
    assert not list(shared.rglob(f"*{TMP_SUFFIX}"))
    assert not any((tmp_path / f"machine{m}" / "store").exists() for m in range(WRITERS))
