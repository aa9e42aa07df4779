"""Data-parallel training under ``accelerate launch``: two CPU processes (gloo) give the vectors
of one process with the same effective batch, within float tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import run_tireg_process
from tests.train.conftest import ONE_THREAD, train_args
from tireg.train.checkpointing import checkpoint_path


def _args(images: Path, model: Path, out: Path, batch: int) -> list[str]:
    return train_args(
        images, model, out, steps="6", flip="0.5", batch_size=str(batch), grad_accum="2",
        save_every="3", preview_every="0", json=True,
    )  # fmt: skip


def test_two_processes_equal_one_with_the_same_effective_batch(
    concept: Path, model_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    model = model_folder("sd1")
    one = run_tireg_process(*_args(concept, model, tmp_path / "one", 2), env=ONE_THREAD)
    assert one.code == 0, one.stderr

    # effective batch 1 x 2 processes x 2 accumulation = 2 x 1 process x 2 accumulation.
    # accelerate's --cpu starts one process (MPI aside); --multi_gpu starts two through torchrun,
    # and tireg joins them as accelerate's MULTI_CPU (gloo) where there is no CUDA
    two = subprocess.run(
        [
            sys.executable, "-m", "accelerate.commands.launch",
            "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
            "-m", "tireg", *_args(concept, model, tmp_path / "two", 1),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD, "CUDA_VISIBLE_DEVICES": ""},
        timeout=600,
        check=False,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    reports = [line for line in two.stdout.splitlines() if line.startswith('  "run_id"')]
    assert len(reports) == 1  # only the main process reports (and records)

    single = load_file(str(checkpoint_path(tmp_path / "one", 6)))["vectors.clip_l"]
    parallel = load_file(str(checkpoint_path(tmp_path / "two", 6)))["vectors.clip_l"]
    assert not torch.equal(
        single, load_file(str(checkpoint_path(tmp_path / "one", 3)))["vectors.clip_l"]
    )
    torch.testing.assert_close(parallel, single, rtol=1e-4, atol=1e-4)
    losses = [
        [
            json.loads(line)["loss"]
            for line in (tmp_path / run / "log.jsonl").read_text().splitlines()
        ]
        for run in ("one", "two")
    ]
    assert len(losses[1]) == 6  # one log line per step, from the main process only
    torch.testing.assert_close(
        torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=1e-5
    )
