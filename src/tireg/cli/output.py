"""Shared terminal output: one rich console for results, one for errors, and JSON printing.

Every listing command offers ``--json``; they all print through :func:`print_json` so the shape
(a JSON array or object, UTF-8, no colour codes) is the same everywhere.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    """Print a JSON document to stdout, bypassing rich (no wrapping, no markup)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def item_progress(*, disable: bool = False) -> Progress:
    """The progress bar for work counted in items (files, repos, sources), drawn on stderr."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )


def byte_progress(*, disable: bool = False) -> Progress:
    """The progress bar for work counted in bytes (downloads, hashing), drawn on stderr."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )
