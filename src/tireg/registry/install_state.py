"""The state of an install: is the file tireg wrote into a UI's folder still what it wrote?

Apart from :mod:`tireg.registry.install`, which writes and removes installs, because ``show``
and the web page read the state too, and they must not import what installing needs (the
converters, the sources).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tireg.db.schema import InstallRow
from tireg.files import sha256_file


def install_state(row: InstallRow) -> str:
    """``ok`` (the file is what tireg wrote), ``modified`` (changed behind tireg's back) or
    ``missing``."""
    path = Path(row.path)
    if not path.is_file():
        return "missing"
    try:
        return "ok" if sha256_file(path) == row.sha256 else "modified"
    except OSError:
        return "missing"


def install_record(row: InstallRow) -> dict[str, Any]:
    """An install as plain data, with its current state (``show``, the web page)."""
    return {
        "target": row.target,
        "format": row.format,
        "path": row.path,
        "sha256": row.sha256,
        "installed_at": row.installed_at,
        "state": install_state(row),
    }
