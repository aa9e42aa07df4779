"""What reaches the terminal: control characters from names are escaped in every human-readable
output (tables, error lines, progress bars), and ``--json`` is strict JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tireg.converters import safetensors_file

#: retitles the terminal, clears the screen, reverses what follows
HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\u202egnp\x9b31m\x7f"
RAW = ("\x1b", "\x07", "\u202e", "\x9b", "\x7f")


def _clean(text: str) -> None:
    for char in RAW:
        assert char not in text, f"{char!r} reached the terminal: {text!r}"


def _emb_file(folder: Path, stem: str, seed: int = 0, values: list[float] | None = None) -> Path:
    vectors = np.random.default_rng(seed).standard_normal((2, 768)).astype(np.float32)
    for i, value in enumerate(values or []):
        vectors[i, i] = value
    path = folder / f"{stem}.safetensors"
    path.write_bytes(safetensors_file.dumps({"emb_params": vectors}))
    return path


def test_printable_escapes_controls_visibly() -> None:
    from tireg.cli.output import printable

    assert printable(HOSTILE) == "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202egnp\\x9b31m\\x7f"
    assert printable("a\tb\nc") == "a\tb\nc"
    assert printable("a\tb\nc", one_line=True) == "a\\x09b\\x0ac"
    assert printable("naïve 名前 🙂") == "naïve 名前 🙂"


def test_inspect_table_escapes_a_hostile_file_name(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _emb_file(tmp_path, HOSTILE)
    result = tireg_cli("inspect", path)
    assert result.code == 0, result.stderr
    _clean(result.stdout + result.stderr)
    assert "\\x1b]0;pwned" in "".join(result.stdout.split())


def test_list_and_show_escape_a_hostile_name(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _emb_file(tmp_path, HOSTILE)
    added = tireg_cli("add", path)
    assert added.code == 0, added.stderr
    _clean(added.stdout + added.stderr)
    listed = tireg_cli("list")
    assert listed.code == 0, listed.stderr
    _clean(listed.stdout)
    assert "pwned" in listed.stdout  # the name is there, escaped (wrapped in its column)


def test_error_line_escapes_a_hostile_path(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / f"{HOSTILE}\nerror: forged second line.pt"
    bad.write_bytes(b"not an embedding at all")
    result = tireg_cli("convert", bad, "--to", "tireg", "--out-dir", tmp_path / "out")
    assert result.code == 1
    _clean(result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "\\x0aerror: forged" in lines[0]


def test_progress_descriptions_are_escaped_and_not_markup() -> None:
    from tireg.cli.output import EscapingConsole, item_progress

    out = io.StringIO()
    console = EscapingConsole(file=out, force_terminal=True, width=200)
    progress = item_progress()
    progress.live.console = console  # draw where the test can read it
    with progress:
        task = progress.add_task("\x1b]0;pwned\x07\u202e[/oops]", total=2)
        progress.update(task, advance=1)
        progress.refresh()
    drawn = out.getvalue()
    for raw in ("\x1b]0;pwned", "\x07", "\u202e"):
        assert raw not in drawn
    assert "\\x1b]0;pwned" in drawn and "[/oops]" in drawn


@pytest.mark.parametrize("values", [[float("inf")], [float("nan")], [float("-inf"), 1e38]])
def test_inspect_json_is_strict_json(tireg_cli, tmp_path: Path, values: list[float]) -> None:  # type: ignore[no-untyped-def]
    path = _emb_file(tmp_path, HOSTILE, values=values)
    result = tireg_cli("inspect", "--json", path)
    assert result.code == 0, result.stderr

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    (record,) = json.loads(result.stdout, parse_constant=refuse)
    assert record["norms"]["clip_l"] is None  # not finite: null, as documented
    assert record["path"] == str(path)  # escaped in the text, the same string once parsed
    _clean(result.stdout)


def test_refused_global_names_are_escaped(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A pickle asking for a global whose name holds controls (refused, never executed)."""
    path = tmp_path / "evil.pt"
    path.write_bytes(
        b"\x80\x02cos\x1b[2J\nsys\xe2\x80\xaetem\x1b]0;pwned\x07\n"
        b"q\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    )
    shown = tireg_cli("inspect", path)
    assert shown.code == 1 and "REFUSED" in shown.stdout
    _clean(shown.stdout + shown.stderr)
    added = tireg_cli("add", path)
    _clean(added.stdout + added.stderr)
    assert "pwned" in added.stdout + added.stderr
