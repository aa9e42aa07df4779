"""Hostile files that run no code but crashed, hung or blew up a reader (issue 8 §2-4).

Each file of tests/converters/malicious.py:hostile_files() meets the command it was built for
(``tireg inspect``, ``add``, ``convert --to png``, ``model add``) in a real process limited to a
1 GiB address space: the command must exit 1 with the one-line refusal, without a traceback or a
MemoryError, before ``TIMEOUT`` kills it (a hang fails the test; nothing here measures time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.converters import malicious

#: seconds a command may take; the files that hung took minutes, the refusals take a second or
#: two (most of it Python starting), so a loaded machine still has ample margin
TIMEOUT = 60
#: run tireg's entry point under an address-space limit of 1 GiB
_LIMITED = (
    "import resource, runpy, sys\n"
    "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
    "sys.argv = ['tireg', *sys.argv[1:]]\n"
    "runpy.run_module('tireg', run_name='__main__')\n"
)
HOSTILE = {h.id: h for h in malicious.hostile_files()}


def run_limited(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIREG_HOME": str(home), "COLUMNS": "2000", "NO_COLOR": "1"}
    try:
        return subprocess.run(
            [sys.executable, "-c", _LIMITED, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"tireg {' '.join(args)} still ran after {TIMEOUT} s")


@pytest.mark.parametrize("hostile_id", list(HOSTILE))
def test_hostile_file_is_refused_in_one_line_within_seconds(
    hostile_id: str, tmp_path: Path
) -> None:
    hostile = HOSTILE[hostile_id]
    files = tmp_path / "files"
    files.mkdir()
    path = str(hostile.make(files))
    args = {
        "inspect": ["inspect", path],
        "add": ["add", path],
        "convert-png": ["convert", path, "--to", "png", "--out-dir", str(tmp_path / "out")],
        "model-add": ["model", "add", path],
    }[hostile.command]
    proc = run_limited(args, tmp_path / "home")
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "MemoryError" not in output, output[-3000:]
    assert proc.returncode == 1, output[-3000:]
    lines = [line for line in output.splitlines() if hostile.says in line]
    assert lines, f"no line says {hostile.says!r}:\n{output[-3000:]}"
    if hostile_id == "symlink-to-a-secret":
        assert "SECRET" not in output and "0102" not in output
    assert not list((tmp_path / "out").glob("*"))  # nothing half-written


def test_every_class_of_the_issue_is_covered() -> None:
    kinds = {h.kind for h in HOSTILE.values()}
    assert kinds == {"traceback", "validation", "hang", "blow-up"}
