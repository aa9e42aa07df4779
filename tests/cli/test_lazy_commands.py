"""The ``tireg`` command builds only the command that runs, and shows the same help as the app
declared in full (``typer.main.get_command(app)`` builds every command, as the other tests do)."""

from __future__ import annotations

import pytest
import typer

from tireg.cli.app import app, command
from tireg.cli.help import polish


def _help(root: typer.core.TyperGroup, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        root.main(args=argv, prog_name="tireg")
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["model", "--help"], ["list", "--help"]])
def test_help_is_what_the_full_app_shows(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    full = typer.main.get_command(app)
    polish(full)
    assert isinstance(full, typer.core.TyperGroup)
    assert _help(command(), argv, capsys) == _help(full, argv, capsys)


def test_only_the_command_that_runs_is_built(capsys: pytest.CaptureFixture[str]) -> None:
    root = command()
    assert all(not c.params for c in root.commands.values())  # summaries: nothing resolved yet
    _help(root, ["show", "--help"], capsys)
    built = {name for name, c in root.commands.items() if c.params}
    assert built == {"show"}
    assert list(root.commands) == [c.name for c in typer.main.get_command(app).commands.values()]  # type: ignore[attr-defined]


def test_a_mistyped_command_is_still_matched_against_every_command(tireg_cli) -> None:  # type: ignore[no-untyped-def]
    wrong = tireg_cli("lst")
    assert wrong.code == 2
    assert "Did you mean 'list'?" in wrong.stderr
