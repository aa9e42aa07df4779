"""Fixtures for the trainer: a synthetic concept (images) and tiny random pipelines (the
generator tests' builder, :func:`tests.generator.tiny.build`: real CLIP vocabulary size).

torch runs on one thread here: the tiny models are far too small to gain from two, and on a
shared two-core machine a second thread mostly waits (ten times slower in measurements).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.generator.tiny import build
from tireg.train.settings import TrainSettings

#: the subprocess environment of kill and disk tests (one thread, as in-process)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: a resolution the tiny models take (their VAE does not downsample; the UNet halves once)
SIZE = 16


def train_args(images: Path, model: Path | str, out: Path, **flags: str | bool) -> list[str]:
    """``tireg train`` on a concept folder with what every trainer test shares (name ``redsq``,
    init text, 2 vectors, a fast LR, :data:`SIZE`); ``flags`` add or override options:
    ``batch_size="2"`` is ``--batch-size 2`` and ``json=True`` a bare ``--json``."""
    options: dict[str, str | bool] = {
        "name": "redsq",
        "init_text": "cat",
        "vectors": "2",
        "lr": "0.05",
        "resolution": str(SIZE),
        **flags,
    }
    args = ["train", "--images", str(images), "--model", str(model), "--out", str(out)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


@pytest.fixture(autouse=True)
def _one_thread_quiet_libraries() -> None:
    """One torch thread; diffusers and transformers log errors only. (Their log handlers
    keep the stderr of the test that first used them, so a later in-process CLI test would
    see a logging error in place of their warnings.)"""
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(1)
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def write_concept(folder: Path, count: int = 4) -> Path:
    """A synthetic concept: a red square on blue, shifted a little in each image; the file
    names carry the caption (``0-red square.png``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
        pixels[..., 2] = 200
        pixels[4:12, 3 + i % 3 : 11 + i % 3, 0] = 255
        Image.fromarray(pixels).save(folder / f"{i}-red square.png")
    return folder


@pytest.fixture
def concept(tmp_path: Path) -> Path:
    return write_concept(tmp_path / "images")


def settings(images: Path, **changes: Any) -> TrainSettings:
    """Settings for a tiny run: small size, no previews, a learning rate that moves fast."""
    base: dict[str, Any] = {
        "images": images,
        "name": "redsq",
        "init_text": "cat",
        "vectors": 2,
        "steps": 10,
        "lr": "0.05",
        "resolution": SIZE,
        "template": "subject",
        "save_every": 1000,
        "preview_every": 0,
    }
    return TrainSettings(**{**base, **changes})


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``model_folder("sd1")``: a tiny random pipeline saved as a diffusers folder (once)."""
    root = tmp_path_factory.mktemp("train-models")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            folder = root / family
            build(family, root / f"parts-{family}").save_pretrained(folder)
            built[family] = folder
        return built[family]

    return get
