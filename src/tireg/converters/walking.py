"""Which files under a folder may be embeddings: one rule for ``tireg add`` and ``tireg convert``.

Readers decide by content, so a file named on the command line is always tried; a walked folder
holds pictures, notes and caches too, so only these extensions are tried there.
"""

from __future__ import annotations

import os
from pathlib import Path

#: extensions tried when walking a folder
WALK_EXTENSIONS = frozenset(
    {".pt", ".pth", ".bin", ".safetensors", ".png", ".webp", ".jxl", ".avif"}
)
#: the folder of a Hub concept's sample pictures: previews, never embeddings
CONCEPT_IMAGES = "concept_images"


def walk(root: Path) -> tuple[list[Path], int]:
    """Candidate files under ``root`` (sorted), and how many other files were skipped.

    Hidden folders (``.git``, ``.cache``) and ``concept_images`` (pictures, recorded as previews)
    are not entered.
    """
    found: list[Path] = []
    skipped = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != CONCEPT_IMAGES)
        for name in sorted(files):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in WALK_EXTENSIONS:
                found.append(Path(folder) / name)
            else:
                skipped += 1
    return found, skipped
