"""Shared terminal output: one rich console for results, one for errors, and JSON printing.

Every listing prints through :func:`print_listing`, the one helper for a list of records: a table
for people, or with ``--json`` the records as one JSON array (as sqlite-utils' ``output_rows``
does for its commands), and one line instead of an empty table. Other documents print through
:func:`print_json`, so the shape (UTF-8, strict JSON, no colour codes) is the same everywhere.

Names come from files and servers, so they may hold terminal controls: ``ESC ] 0 ;...BEL``
retitles the window, ``ESC [ 2 J`` clears the screen, U+202E reverses what follows. Both consoles
escape them (:func:`printable`) in everything they render, tables and progress bars included, so
no command can forget to; ``--json`` output escapes them as JSON ``\\u`` sequences.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Span, Text

if TYPE_CHECKING:  # progress bars import rich.progress (and its live display) when one is drawn
    from rich.progress import Progress, ProgressColumn

#: what a terminal acts on instead of showing: C0 controls (tab and newline aside), DEL, C1
#: controls, and the bidi marks, embeddings, overrides and isolates that reorder what follows
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE = re.compile(f"[{_CONTROLS}]")
_UNPRINTABLE_OR_NEWLINE = re.compile(f"[{_CONTROLS}\t\n]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with every terminal control written as ``\\xNN`` or ``\\uNNNN``, visibly.

    ``one_line`` also escapes tabs and newlines, for lines that must stay one line (errors).
    """
    return (_UNPRINTABLE_OR_NEWLINE if one_line else _UNPRINTABLE).sub(_escape, text)


def _printable_text(text: Text) -> Text:
    """A copy of ``text`` with :func:`printable` applied, its styles moved along."""
    plain = text.plain
    if not _UNPRINTABLE.search(plain):
        return text
    ends = [0]
    for char in plain:
        ends.append(ends[-1] + len(printable(char)))
    escaped = text.copy()
    escaped.plain = printable(plain)
    last = len(plain)
    escaped.spans = [
        Span(ends[min(s.start, last)], ends[min(s.end, last)], s.style) for s in text.spans
    ]
    return escaped


class EscapingConsole(Console):
    """A rich console that renders every string and :class:`~rich.text.Text` through
    :func:`printable`, before layout, so tables stay aligned and nothing reaches the terminal
    as a control sequence. (Rich itself strips only BEL, BS, VT, FF and CR: ``rich/control.py``
    ``STRIP_CONTROL_CODES``; ESC, C1 and bidi pass through.)"""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(printable(text), **options)

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        if isinstance(renderable, Text):
            renderable = _printable_text(renderable)
        return super().render(renderable, options)


console = EscapingConsole(highlight=False)
err_console = EscapingConsole(stderr=True, highlight=False)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (inf, -inf, nan) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Print a JSON document to stdout, bypassing rich (no wrapping, no markup).

    The output is strict JSON (RFC 8259) that any parser takes: a non-finite float (an inf
    vector norm) is written as ``null``, never Python's ``Infinity``/``NaN``; control and bidi
    characters inside strings are ``\\u`` escapes (JSON escapes C0 itself; DEL, C1 and bidi
    controls are escaped here, which is valid inside any JSON string), so printing the document
    cannot drive the terminal.
    """
    text = json.dumps(_finite(value), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    sys.stdout.write(_UNPRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n")
    sys.stdout.flush()


T = TypeVar("T")


@dataclass(frozen=True)
class Column:
    """One column of a listing: its header and how rich lays it out (``Table.add_column``).

    Refs and specs, what a user copies into the next command, are ``no_wrap`` so they are never
    broken across lines; other text folds rather than being cut.
    """

    header: str
    no_wrap: bool = False
    overflow: Literal["fold", "crop", "ellipsis"] = "fold"
    justify: Literal["left", "right"] = "left"
    min_width: int | None = None
    ratio: int | None = None


def print_listing(
    records: Sequence[T],
    columns: Sequence[Column | str],
    cells: Callable[[T], Sequence[Any]],
    *,
    json_out: bool,
    title: str | Text | None = None,
    empty: str | None = "no matches",
    as_json: Callable[[T], Any] | None = None,
) -> None:
    """Print ``records``: a JSON array of each one's ``to_dict()`` (or ``as_json``) with
    ``--json``; else a table of ``cells(record)`` under ``columns``, or the line ``empty`` when
    there are none (an empty frame reads as a glitch; ``None`` prints nothing).

    Every cell is plain text (a :class:`~rich.text.Text` keeps its style): names come from files
    and servers, and ``[...]`` in one must never be read as rich markup.
    """
    if json_out:
        print_json([(as_json or _to_dict)(record) for record in records])
        return
    if not records:
        if empty is not None:
            console.print(empty, markup=False, soft_wrap=True)
        return
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        c = Column(column) if isinstance(column, str) else column
        table.add_column(
            c.header,
            no_wrap=c.no_wrap,
            overflow=c.overflow,
            justify=c.justify,
            min_width=c.min_width,
            ratio=c.ratio,
        )
    for record in records:
        table.add_row(*(_cell(value) for value in cells(record)))
    console.print(table)


def _to_dict(record: Any) -> Any:
    return record.to_dict() if hasattr(record, "to_dict") else record


def _cell(value: Any) -> Text:
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))


def item_progress(*, disable: bool = False) -> Progress:
    """The progress bar for work counted in items (files, repos, sources), drawn on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        _description_column()(),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )


def byte_progress(*, disable: bool = False) -> Progress:
    """The progress bar for work counted in bytes (downloads, hashing), drawn on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        _description_column()(),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )


@functools.cache
def _description_column() -> type[ProgressColumn]:
    """The column class for a task's description (a file or repo name), defined on first use
    so that rich.progress loads only with a bar: plain text, never parsed as rich markup,
    escaped before the column is measured (so an escaped name is not cut to its raw width)."""
    from rich.progress import ProgressColumn, Task

    class Description(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(printable(task.description), style="progress.description")

    return Description
