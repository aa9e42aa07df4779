"""DVAR early stopping: the rule itself, and on tiny runs that converge or keep moving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.generator.tiny import build
from tests.train.conftest import settings
from tireg.train.dvar import VarianceStopper
from tireg.train.loop import Hooks, RunResult, StepRecord, train
from tireg.train.model import from_pipeline


def test_the_rule_stops_on_a_plateau_not_on_a_slope() -> None:
    plateau = VarianceStopper(eps=0.15, window=20)
    losses = 1.0 + np.exp(-np.arange(200) / 10)  # falls, then flat
    stopped_at = next(i for i, loss in enumerate(losses) if plateau.update(float(loss)))
    assert 20 <= stopped_at < 60
    assert plateau.ratio is not None and plateau.ratio < 0.15

    slope = VarianceStopper(eps=0.15, window=20)
    # a steady fall: var(last 20) / var(all n) = (20 / n)^2 stays above 0.15 while n < 51
    assert not any(slope.update(1.0 - 0.01 * i) for i in range(50))
    assert VarianceStopper().window == 200 and VarianceStopper().eps == 0.15  # DVAR's defaults


def _run(images: Path, tmp_path: Path, **options: object) -> tuple[RunResult, list[StepRecord]]:
    pipe = build("sd1", tmp_path / "parts")
    records: list[StepRecord] = []
    run = settings(images, early_stop=True, early_stop_window=20, **options)
    result = train(run, from_pipeline(pipe), tmp_path / "run", hooks=Hooks(on_step=records.append))
    return result, records


def test_stops_a_converging_run_well_before_its_steps(concept: Path, tmp_path: Path) -> None:
    # the learning rate drops to almost nothing at step 15: the fixed-batch loss flattens
    result, records = _run(concept, tmp_path, steps=400, lr="0.05:15, 1e-6")
    assert result.step < 60, result.stop_reason
    assert result.stop_reason.startswith("DVAR early stop")
    assert f"at step {result.step}" in result.stop_reason
    assert len(records) == result.step


def test_does_not_stop_a_run_still_moving(concept: Path, tmp_path: Path) -> None:
    result, records = _run(concept, tmp_path, steps=45, lr="0.05")
    fixed = [r.fixed_batch_loss for r in records]
    assert result.stop_reason == "reached --steps 45"
    assert fixed[-1] < fixed[20]  # it was indeed still falling
