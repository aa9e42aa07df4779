"""Shell completion: embedding refs and model names come from the catalogue, as listings show
them, through the same protocol bash uses (typer's ``_TIREG_COMPLETE`` environment variable)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _complete(words: str, home: Path) -> list[str]:
    env = {
        **os.environ,
        "TIREG_HOME": str(home),
        "_TIREG_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tireg"], env=env, capture_output=True, text=True, timeout=60
    )
    return [line for line in done.stdout.splitlines() if line]


def test_names_complete_as_listings_show_them(tireg_cli, corpus: Path, tireg_home: Path) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", corpus).code == 0
    assert _complete("tireg show gas", tireg_home) == [
        "gasai yuno@0650fd6c",
        "gasai yuno@7bfbf1a2",
        "gasai yuno@9c4bd9a4",
    ]
    assert _complete("tireg install <birb", tireg_home) == ["<birb-style>"]
    assert _complete("tireg rm zz", tireg_home) == []


def test_model_names_complete(tireg_cli, tireg_home: Path) -> None:  # type: ignore[no-untyped-def]
    hashed = tireg_cli("model", "add", "--hash", "a" * 64, "--name", "MyMix v2", "--family", "sd1")
    assert hashed.code == 0, hashed.stderr
    assert _complete("tireg check --model MyM", tireg_home) == ["MyMix v2"]


def test_completion_without_a_catalogue_offers_nothing(tmp_path: Path) -> None:
    assert _complete("tireg show a", tmp_path / "no-such-home" / "x") == []
