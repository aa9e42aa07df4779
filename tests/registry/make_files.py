"""Generated embedding files in every format tireg writes, for import tests and bench/import.py.

Files are written through tireg's own writers (``tireg.converters.write_file``), which the
converter tests check against real consumers; the catalogue tests then only need variety.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tireg.converters import CLIP_G, CLIP_H, CLIP_L, Embedding, write_file
from tireg.converters.writing import EXTENSIONS

#: every output format, rotated through by :func:`write_mixed`
FORMATS = ("tireg", "a1111-pt", "diffusers-bin", "diffusers-safetensors", "safetensors", "png")


def random_embedding(rng: np.random.Generator, name: str, family: str = "sd1") -> Embedding:
    """A random embedding of 1-8 vectors for ``family`` (sd1, sd2 or sdxl)."""
    n = int(rng.integers(1, 9))
    widths = {"sd1": {CLIP_L: 768}, "sd2": {CLIP_H: 1024}, "sdxl": {CLIP_L: 768, CLIP_G: 1280}}
    vectors = {k: rng.standard_normal((n, w)).astype(np.float32) for k, w in widths[family].items()}
    return Embedding(name=name, vectors=vectors)


def write_one(embedding: Embedding, folder: Path, stem: str, fmt: str) -> Path:
    """Write ``embedding`` as ``folder/stem<ext>`` in ``fmt``; return the (first) file."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_file(embedding, folder / f"{stem}{EXTENSIONS[fmt]}", fmt)[0]


def write_mixed(folder: Path, count: int, *, seed: int, per_folder: int = 50) -> list[Path]:
    """Write ``count`` distinct embeddings, rotating formats and families, in sub-folders.

    SDXL goes only to formats that hold it in one file; every tenth A1111 file names a
    training checkpoint (in upper case, as some trainers wrote it).
    """
    rng = np.random.default_rng(seed)
    written = []
    for i in range(count):
        fmt = FORMATS[i % len(FORMATS)]
        family = ("sd1", "sd2", "sdxl")[(i // len(FORMATS)) % 3]
        if family == "sdxl" and fmt not in ("tireg", "a1111-pt", "safetensors"):
            family = "sd1"
        embedding = random_embedding(rng, f"emb-{seed}-{i}", family)
        if fmt == "a1111-pt" and i % 10 == 1:
            embedding = embedding.with_meta(step=1000 + i, trained_on_hash="E6E8E1FC")
        sub = folder / f"part{i // per_folder:03d}"
        written.append(write_one(embedding, sub, f"emb-{seed}-{i}", fmt))
    return written
