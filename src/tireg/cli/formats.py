"""``tireg inspect`` and ``tireg convert``: the converter layer on the command line."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
