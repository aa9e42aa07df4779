"""Every command's help as a person reads it: no Python type placeholders, paragraphs reflowed,
choices matched case-insensitively (``--ui A1111``)."""

from __future__ import annotations

import inspect
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer

from tests.registry.make_files import random_embedding, write_one
from tireg.cli.app import app
from tireg.cli.help import polish


def _commands() -> list[list[str]]:
    """The argv prefix of every command and sub-command."""
    root = typer.main.get_command(app)
    found: list[list[str]] = [[]]

    def walk(command: object, prefix: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            found.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return found


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv) or "tireg")
def test_help_has_no_type_placeholders(tireg_cli, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli(*argv, "--help")
    assert result.code == 0
    placeholders = re.findall(r"<(?:bool|str|int|float|path|list\[[^\]]*\]|Path)>", result.stdout)
    assert placeholders == [], f"tireg {' '.join(argv)} --help shows {placeholders}"


def test_paragraphs_are_reflowed_not_cut_at_source_line_breaks() -> None:
    command = typer.main.get_command(app)
    polish(command)
    add = command.commands["add"]  # type: ignore[attr-defined]
    second = add.help.split("\n\n")[1]
    assert "\n" not in second and "keeps one copy of each distinct embedding" in second


def test_choices_are_case_insensitive(tireg_cli) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("list", "--family", "SDXL").code == 0
    wrong = tireg_cli("list", "--family", "sd9")
    assert wrong.code == 2


def _description(help_text: str) -> list[list[str]]:
    """The paragraphs of a rendered help's description (between the usage line and the first
    panel), each as its rendered lines."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:]:
        if line.lstrip().startswith("╭"):
            break
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


@pytest.mark.parametrize("columns", [60, 120])
def test_every_help_reflows_its_paragraphs(
    tireg_cli, columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A paragraph breaks a line only where the next word would not fit (rich pads the text one
    column each side), never where the docstring's source happened to break it."""
    monkeypatch.setenv("COLUMNS", str(columns))
    width = columns - 2
    source_breaks = 0
    for argv in _commands():
        raw = typer.main.get_command(app)
        for name in argv:
            raw = raw.commands[name]  # type: ignore[attr-defined]
        paragraphs = inspect.cleandoc(raw.help or "").split("\n\n")
        source_breaks += sum(p.count("\n") for p in paragraphs)
        rendered = tireg_cli(*argv, "--help")
        assert rendered.code == 0, rendered.stderr
        for paragraph in _description(rendered.stdout):
            for line, after in itertools.pairwise(paragraph):
                next_word = after.split()[0]
                assert len(line) + 1 + len(next_word) > width, (
                    f"tireg {' '.join(argv)} --help at {columns} columns breaks after"
                    f" {line!r} though {next_word!r} fits"
                )
    assert source_breaks > 20, "the docstrings do break lines: the test looks at real cases"


def test_the_issue_s_own_example_install_ui_a1111_works(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--ui A1111`` (as the UI spells itself) installs like ``--ui a1111``."""
    write_one(
        random_embedding(np.random.default_rng(8), "cat-toy"),
        tmp_path / "in",
        "cat-toy",
        "a1111-pt",
    )
    assert tireg_cli("add", tmp_path / "in").code == 0
    root = tmp_path / "webui"
    (root / "embeddings").mkdir(parents=True)
    (root / "webui.py").write_text("")
    done = tireg_cli("install", "cat-toy", "--ui", "A1111", "--ui-root", root, "--json")
    assert done.code == 0, done.stderr
    (installed,) = json.loads(done.stdout)["installed"]
    assert (
        Path(installed["path"]).parent == root / "embeddings" and Path(installed["path"]).is_file()
    )
    assert tireg_cli("install", "cat-toy", "--ui", "Forge", "--ui-root", root, "--force").code == 0
