"""Tiny random SD 1.x, SD 2.x and SDXL pipelines saved as diffusers folders, and embeddings for
them, catalogued through the real ``tireg add``.

The pipelines come from the generator tests' shared builder (:func:`tests.generator.tiny.build`:
real diffusers classes, random weights, real encoder widths); they are built once per test
session and saved the way diffusers saves them, so ``tireg validate`` loads them through its
own offline loader like any user's folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.generator import tiny
from tests.registry.make_files import write_one
from tireg.converters import CLIP_G, CLIP_H, CLIP_L, Embedding

#: settings small enough for two shared CPU cores (the tiny VAE does not downsample)
FAST = ("--size", "32x32", "--steps", "3", "--sampler", "Euler")

_WIDTHS = {"sd1": {CLIP_L: 768}, "sd2": {CLIP_H: 1024}, "sdxl": {CLIP_L: 768, CLIP_G: 1280}}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_model("sd1")``: the folder of a tiny random pipeline of that family (built once)."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            folder = root / f"tiny-{family}"
            scratch = root / f"parts-{family}"
            tiny.build(family, scratch, clip_vocabulary=False).save_pretrained(folder)
            built[family] = folder
        return built[family]

    return get


def embedding(name: str, family: str = "sd1", *, seed: int = 0, vectors: int = 2) -> Embedding:
    """A random embedding; unit-variance vectors, far from a tiny encoder's own rows, so a
    prompt that uses it renders visibly differently."""
    rng = np.random.default_rng(seed)
    return Embedding(
        name=name,
        vectors={k: rng.standard_normal((vectors, w)) for k, w in _WIDTHS[family].items()},
    )


@pytest.fixture
def catalogued(tireg_cli, tmp_path: Path) -> Callable[..., Path]:  # type: ignore[no-untyped-def]
    """``catalogued("birb-style", "sd1")`` writes an A1111 .pt and adds it to the catalogue."""

    def add(name: str, family: str = "sd1", *, seed: int = 0) -> Path:
        path = write_one(
            embedding(name, family, seed=seed), tmp_path / "emb" / name, name, "a1111-pt"
        )
        result = tireg_cli("add", path)
        assert result.code == 0, result.stderr
        return path

    return add
