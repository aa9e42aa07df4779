"""The ``tireg`` entry point itself: version, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

from tireg import __version__


def test_version(tireg_cli) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli("--version")
    assert (result.code, result.stdout.strip()) == (0, f"tireg {__version__}")


def test_bad_usage_exits_2(tireg_cli) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("no-such-command").code == 2
    assert tireg_cli("list", "--family", "sd9").code == 2


def test_a_data_error_is_one_line_and_exit_1(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli("show", "nothing-by-this-name")
    assert result.code == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: ")
