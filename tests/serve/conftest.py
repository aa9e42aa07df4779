"""A catalogue made through the CLI, a fake A1111 install, and ``tireg serve`` as a real process.

Everything here is real: embeddings written by tireg's own writers and imported with
``tireg add`` (their ``.preview.png`` pictures become previews), a model named with
``tireg model add --hash``, and the server started with ``python -m tireg serve --port 0`` on
127.0.0.1, which prints the address it got.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select

from tests.registry.make_files import random_embedding, write_one
from tireg.db.schema import EmbeddingRow
from tireg.db.session import open_catalogue
from tireg.files import sha256_file
from tireg.registry.lineage import TRAIN, record_version
from tireg.registry.validations import ImageMade, ModelUsed, RunRecord, record_run

#: (trigger, family, step, tags, colour of its preview or None for no picture)
EMBEDDINGS = [
    ("cat-toy", "sd1", None, ["toy", "cute"], (222, 120, 60)),
    ("birb-style", "sd1", None, ["style", "bird"], (60, 140, 220)),
    ("gasai yuno", "sd1", 1000, ["anime"], (200, 60, 150)),
    ("gasai yuno", "sd1", 2000, ["anime"], (150, 60, 200)),
    ("midjourney-xl", "sdxl", None, ["style"], (40, 170, 110)),
    ("sd2-painting", "sd2", None, ["style", "paint"], None),
]


def picture(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    """A 512x512 preview: a gradient with a few discs, so thumbnails differ visibly."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.35, 1.0, 512)[None, :, None]
    pixels = (np.array(colour)[None, None, :] * ramp * np.ones((512, 1, 1))).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x, y, r = (int(v) for v in rng.integers(40, 470, 3) // (1, 1, 4))
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    image.save(path)


def record_training_run(name: str) -> None:
    """Link the same-named entries as saves of one training run, as ``tireg train`` does
    (:func:`tireg.registry.lineage.record_version`), in step order."""
    with open_catalogue() as catalogue, catalogue.transaction() as session:
        rows = session.scalars(select(EmbeddingRow).where(EmbeddingRow.name == name)).all()
        parent = None
        for row in sorted(rows, key=lambda r: r.step or 0):
            record_version(
                session,
                row.id,
                run_id="run-yuno",
                operation=TRAIN,
                parent_id=parent,
                step=row.step,
                loss=0.25,
            )
            parent = row.id


def record_validation(out_dir: Path, name: str) -> int:
    """Record a validation run of ``name`` the way ``tireg validate`` does once it has rendered
    (:func:`tireg.registry.validations.record_run`), with a grid PNG of two labelled rows."""
    out_dir.mkdir(parents=True)
    grid = out_dir / "grid.png"
    image = Image.new("RGB", (768, 512), "white")
    draw = ImageDraw.Draw(image)
    for k, colour in enumerate([(90, 90, 90), (230, 160, 40)]):
        draw.rectangle((40 + 360 * k, 60, 360 + 360 * k, 480), fill=colour)
        draw.text((40 + 360 * k, 20), "without" if k == 0 else name, fill="black")
    image.save(grid)
    with open_catalogue() as catalogue:
        with catalogue.reading() as session:
            vectors = session.scalars(
                select(EmbeddingRow.vectors_sha256).where(EmbeddingRow.name == name)
            ).one()
        model = ModelUsed("sd2 test model", None, "sd2", "ab" * 32, "abababab", None, 3.0)
        images = [
            ImageMade(
                0, sha, word, f"a painting {word or ''}", 1, str(grid), sha256_file(grid), False
            )
            for sha, word in ((None, None), (vectors, name))
        ]
        record = RunRecord(
            started_at=datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc),
            seconds=6.0,
            settings={"steps": 20},
            seeds=[1],
            out_dir=str(out_dir),
            grid_path=str(grid),
            grid_sha256=sha256_file(grid),
            models=[model],
            images=images,
            evidence=[(vectors, 0)],
        )
        return record_run(catalogue, record)


@dataclass
class Setup:
    """The catalogue's home, the embeddings folder, and the fake A1111 root."""

    home: Path
    files: Path
    a1111: Path
    model: str  # the user checkpoint's name ("works on this model")


@pytest.fixture
def gallery_setup(tmp_path: Path, tireg_home: Path, tireg_cli) -> Setup:  # type: ignore[no-untyped-def]
    files = tmp_path / "embeddings"
    rng = np.random.default_rng(13)
    for i, (name, family, step, _tags, colour) in enumerate(EMBEDDINGS):
        embedding = random_embedding(rng, name, family)
        if step is not None:
            embedding = embedding.with_meta(step=step, trained_on_hash="7460A6FA")
        stem = f"{name}-{step}" if step else name
        fmt = "a1111-pt" if step else "safetensors"
        write_one(embedding, files / f"part{i}", stem, fmt)
        if colour is not None:
            picture(files / f"part{i}" / f"{stem}.preview.png", colour, i)
    assert tireg_cli("add", files).code == 0
    for i, (name, _family, _step, tags, _colour) in enumerate(EMBEDDINGS):
        # the two "gasai yuno" share a name: each is named by its folder (the naming rule)
        assert tireg_cli("tag", name, *tags, "--source", f"part{i}").code == 0
    model = "my sdxl merge"
    result = tireg_cli("model", "add", "--hash", "0badf00d", "--name", model, "--family", "sdxl")
    assert result.code == 0, result.stderr
    record_validation(tmp_path / "validate", "sd2-painting")
    record_training_run("gasai yuno")
    a1111 = tmp_path / "stable-diffusion-webui"
    (a1111 / "embeddings").mkdir(parents=True)
    (a1111 / "webui.py").write_text("# a fake A1111 install: the folder layout is what counts\n")
    return Setup(tireg_home, files, a1111, model)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]


def start_server(setup: Setup, tmp_path: Path, *extra: str) -> Server:
    """``tireg serve --port 0`` in a fresh process whose home and cwd hold no UI but ours."""
    env = {
        **os.environ,
        "TIREG_HOME": str(setup.home),
        "HOME": str(tmp_path / "user-home"),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    (tmp_path / "user-home").mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "tireg", "serve", "--port", "0"]
    argv += ["--ui-root", f"a1111={setup.a1111}", *extra]
    process = subprocess.Popen(
        argv,
        cwd=tmp_path / "user-home",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "serving the gallery on " not in line:
        process.kill()
        raise AssertionError(f"tireg serve did not start: {line}{process.stdout.read()}")
    url = line.split("serving the gallery on ", 1)[1].split()[0]
    return Server(url.rstrip("/"), process)


@pytest.fixture
def server(gallery_setup: Setup, tmp_path: Path) -> Iterator[Server]:
    """The gallery over :func:`gallery_setup`, stopped after the test."""
    running = start_server(gallery_setup, tmp_path)
    yield running
    running.process.terminate()
    running.process.wait(timeout=20)
