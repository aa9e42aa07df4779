"""Regenerate ``examples/embeddings/``: small demo files in every format tireg reads.

The vectors are seeded random numbers: they teach a model nothing, and exist so that the README's
first command has a folder to import on any machine. Run from the repository root:

    .venv/bin/python examples/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tireg.converters import Embedding, write_file

OUT = Path(__file__).resolve().parent / "embeddings"


def _vectors(seed: int, rows: int, width: int) -> np.ndarray:
    # about the norm of a trained CLIP token row (~0.4 per vector)
    return np.random.default_rng(seed).normal(0.0, 0.015, size=(rows, width)).astype(np.float32)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    demos = [
        (Embedding("demo-style", {"clip_l": _vectors(1, 4, 768)}, step=3000), "a1111-pt"),
        (Embedding("<demo-object>", {"clip_l": _vectors(2, 1, 768)}), "diffusers-bin"),
        (Embedding("demo-sd2", {"clip_h": _vectors(3, 2, 1024)}), "safetensors"),
        (
            Embedding("demo-xl", {"clip_l": _vectors(4, 2, 768), "clip_g": _vectors(5, 2, 1280)}),
            "safetensors",
        ),
        (Embedding("demo-card", {"clip_l": _vectors(6, 2, 768)}, step=1500), "png"),
    ]
    suffix = {
        "a1111-pt": ".pt",
        "diffusers-bin": ".bin",
        "safetensors": ".safetensors",
        "png": ".png",
    }
    for embedding, fmt in demos:
        stem = embedding.name.strip("<>")
        write_file(embedding, OUT / f"{stem}{suffix[fmt]}", fmt, force=True)


if __name__ == "__main__":
    main()
