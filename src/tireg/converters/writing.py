"""Write an embedding in any supported format, atomically, never overwriting without ``force``.

(Initial version: the internal format. The other writers plug in here.)
"""

from __future__ import annotations

import os
from pathlib import Path

from tireg.converters import internal
from tireg.converters.embedding import Embedding
from tireg.converters.errors import UnsupportedConversionError
from tireg.files import atomic_write_bytes

WRITE_FORMATS = ("tireg",)


def write_file(
    embedding: Embedding, path: str | os.PathLike[str], fmt: str, *, force: bool = False
) -> list[Path]:
    """Write ``embedding`` to ``path`` in ``fmt``; return every file written."""
    if fmt != "tireg":
        raise UnsupportedConversionError(f"unknown output format {fmt!r}")
    try:
        return [atomic_write_bytes(path, internal.dumps(embedding), overwrite=force)]
    except FileExistsError as exc:
        raise UnsupportedConversionError(
            "file exists", path=path, hint="pass --force to overwrite"
        ) from exc
