"""``tireg validations`` and the help of ``validate`` never import torch, diffusers,
transformers or accelerate; ``python -m tireg`` runs the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import run_tireg_process

_PROBE = """
import sys
from tireg.cli.app import main
for argv in (["--help"], ["validate", "--help"], ["validations"], ["validations", "--json"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, (argv, exc.code)
heavy = [m for m in ("torch", "diffusers", "transformers", "accelerate") if m in sys.modules]
print("heavy=" + ",".join(heavy))
"""


def test_registry_side_imports_no_ml_library(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "heavy="


def test_python_dash_m_tireg_runs_the_cli() -> None:
    result = run_tireg_process("validate", "--help")
    assert result.code == 0 and "--batch-size" in result.stdout
