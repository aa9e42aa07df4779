"""Fixtures shared by every test: an isolated TIREG_HOME, the shared corpus, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT.parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def tireg_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own TIREG_HOME, and never talks to anything but 127.0.0.1."""
    home = tmp_path_factory.mktemp("tireg-home")
    monkeypatch.setenv("TIREG_HOME", str(home))
    for var in ("TIREG_DATABASE_URL", "TIREG_OFFLINE", "HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HOME", str(home / "hf-home"))
    return home


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
