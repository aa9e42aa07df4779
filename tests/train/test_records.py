"""What a save records: the trained-on model's hashes (AutoV2 as A1111's ``sd_checkpoint``, and
the old hash), the run's lineage, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from tests.train.conftest import settings
from tireg.converters import read_file
from tireg.db import open_catalogue
from tireg.db.schema import CompatRow, EmbeddingRow, LineageRow
from tireg.train.records import Recorder, RunInfo, draw_loss_curve, smoothed

HASHES = {"sha256": "ab" * 32, "autov2": "abababab12", "old_hash": "1234abcd"}


def test_saves_carry_the_model_hashes_and_link_as_versions(tmp_path: Path) -> None:
    run = settings(tmp_path / "images")
    with open_catalogue() as catalogue:
        recorder = Recorder(tmp_path / "run", run, RunInfo("", "model-x", HASHES, "sd1"), catalogue)
        recorder.on_start(0)
        rng = np.random.default_rng(0)
        for step in (3, 6):
            vectors = {"clip_l": rng.standard_normal((2, 768)).astype(np.float32)}
            recorder.on_save(step, 0.5 / step, vectors, tmp_path / "ck")
        with catalogue.reading() as session:
            rows = session.scalars(select(EmbeddingRow).order_by(EmbeddingRow.id)).all()
            assert [r.step for r in rows] == [3, 6]
            assert {r.trained_on_hash for r in rows} == {"abababab12"}
            assert {r.trained_on_name for r in rows} == {"model-x"}
            facts = {
                (c.relation, c.model_ref)
                for c in session.scalars(
                    select(CompatRow).where(CompatRow.embedding_id == rows[1].id)
                )
            }
            assert ("trained_on", "abababab12") in facts and ("trained_on", "1234abcd") in facts
            lineage = session.scalars(select(LineageRow).order_by(LineageRow.step)).all()
            assert [v.parent_id for v in lineage] == [None, rows[0].id]
            assert len({v.run_id for v in lineage}) == 1 and lineage[0].operation == "train"
    card = read_file(recorder.saved[-1]["card"])
    assert card.trained_on_hash == "abababab12" and card.trained_on_name == "model-x"


def test_loss_curve_draws_raw_smoothed_and_fixed_batch_loss(tmp_path: Path) -> None:
    losses = [1.0 / (1 + i) + 0.05 * (-1) ** i for i in range(50)]
    entries = [
        {"step": i + 1, "loss": loss, "fixed_batch_loss": 1.0 / (1 + i)}
        for i, loss in enumerate(losses)
    ]
    draw_loss_curve(entries, tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as image:
        colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 16)}
    assert (190, 190, 190) in colours  # raw
    assert (31, 119, 180) in colours  # smoothed
    assert (255, 127, 14) in colours  # DVAR's fixed-batch loss
    assert smoothed([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]  # debiased from the first value


def test_resume_picks_a_run_folder_or_a_checkpoint(tmp_path: Path) -> None:
    from tireg.train.checkpointing import checkpoint_path
    from tireg.train.errors import TrainError
    from tireg.train.run import DEFAULT_LOG_DIR, run_dir_and_checkpoint

    run = settings(tmp_path / "images")
    # a new run: A1111's log directory by default, nothing to continue
    assert run_dir_and_checkpoint(run, None, None) == (DEFAULT_LOG_DIR / "redsq", None)
    folder = tmp_path / "run"
    assert run_dir_and_checkpoint(run, folder, None) == (folder, None)
    for step in (4, 8):
        checkpoint_path(folder, step).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_path(folder, step).write_bytes(b"")
    # the same --out continues from its latest checkpoint; --resume names a folder or a file
    assert run_dir_and_checkpoint(run, folder, None) == (folder, checkpoint_path(folder, 8))
    assert run_dir_and_checkpoint(run, None, folder) == (folder, checkpoint_path(folder, 8))
    four = checkpoint_path(folder, 4)
    assert run_dir_and_checkpoint(run, None, four) == (folder, four)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainError, match="no checkpoint"):
        run_dir_and_checkpoint(run, None, empty)
