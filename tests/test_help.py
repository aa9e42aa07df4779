"""Every command's help as a person reads it: no Python type placeholders, paragraphs reflowed,
choices matched case-insensitively (``--ui A1111``)."""

from __future__ import annotations

import re

import pytest
import typer

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
