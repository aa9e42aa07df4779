"""Never lose a run: a SIGKILLed run continues bit for bit; a full disk and memory running out
keep the last checkpoint, which the same command continues."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import run_tireg_process
from tests.train.conftest import ONE_THREAD, train_args
from tireg.train.checkpointing import checkpoint_path, read_checkpoint

STEPS = 40


def _args(images: Path, model: Path, out: Path, steps: int = STEPS) -> list[str]:
    return train_args(
        images, model, out, steps=str(steps), lr="0.05:20, 0.01", template="subject",
        flip="0.5", latent_sampling="random", early_stop=True, early_stop_window="1000",
        save_every="4", preview_every="0", seed="7", json=True,
    )  # fmt: skip


def _vectors(run: Path, step: int) -> torch.Tensor:
    return load_file(str(checkpoint_path(run, step)))["vectors.clip_l"]


def test_sigkill_then_resume_is_bit_identical(
    concept: Path, model_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    model = model_folder("sd1")
    whole = run_tireg_process(*_args(concept, model, tmp_path / "whole"), env=ONE_THREAD)
    assert whole.code == 0, whole.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tireg", *_args(concept, model, killed)],
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not checkpoint_path(killed, 8).exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not checkpoint_path(killed, STEPS).exists()  # it really died mid-way

    again = run_tireg_process(*_args(concept, model, killed), env=ONE_THREAD)
    assert again.code == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["resumed_from"] is not None and report["step"] == STEPS
    assert torch.equal(_vectors(killed, STEPS), _vectors(tmp_path / "whole", STEPS))
    # the log has every step once, and the fixed-batch losses agree too
    log = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    whole_log = [
        json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()
    ]
    assert [e["step"] for e in log] == list(range(1, STEPS + 1))
    assert [e["fixed_batch_loss"] for e in log] == [e["fixed_batch_loss"] for e in whole_log]


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from tireg.cli.app import main
main(sys.argv[2:])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(
    concept: Path, model_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    model = model_folder("sd1")
    run = tmp_path / "run"
    first = run_tireg_process(*_args(concept, model, run, steps=8), env=ONE_THREAD)
    assert first.code == 0, first.stderr
    good = checkpoint_path(run, 8)
    kept = good.read_bytes()

    # the run continues, but no file may now grow as large as a checkpoint
    limit = str(len(kept) - 1)
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, limit, *_args(concept, model, run, steps=16)],
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1
    # (the libraries' own loading chatter comes first; tireg's answer is one line, the last)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert "cannot write the checkpoint" in errors[0] and "step-0000012" in errors[0]
    assert good.read_bytes() == kept  # the last good checkpoint is intact
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-0000004.safetensors",
        "step-0000008.safetensors",
    ]  # and nothing half-written beside it


def _logged_steps(log: Path) -> int:
    return log.read_text().count("\n") if log.exists() else 0


def _mapped_bytes(pid: int) -> int:
    """The address space a process has mapped (``/proc/PID/statm``: its size in pages)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    not hasattr(resource, "prlimit") or not Path("/proc/self/statm").exists(),
    reason="needs Linux's prlimit and /proc",
)
def test_out_of_memory_mid_run_is_one_line_and_the_last_checkpoint_continues(
    concept: Path, model_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    """Memory runs out for real: once the run has saved and gone on, the test caps the running
    process's address space at what it has mapped, so its next allocation that needs fresh
    memory fails. In the steps after that is a CPU tensor (torch's ``DefaultCPUAllocator``
    error, a plain RuntimeError); now and then Python's own MemoryError first. Either is the
    same one line."""
    model = model_folder("sd1")
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tireg", *_args(concept, model, run, steps=400)],
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while _logged_steps(run / "log.jsonl") < 5 and proc.poll() is None:  # saved at step 4
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    resource.prlimit(
        proc.pid, resource.RLIMIT_AS, (_mapped_bytes(proc.pid), resource.RLIM_INFINITY)
    )
    _, stderr = proc.communicate(timeout=300)

    assert proc.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == errors[0]
    assert "out of memory after step" in errors[0]
    assert "lower --batch-size" in errors[0] and "--resolution" in errors[0]  # what to lower
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert all(re.fullmatch(r"step-\d{7}\.safetensors", name) for name in names), names
    last = run / "checkpoints" / names[-1]
    assert errors[0].startswith(f"error: {last}: ")  # the line names the last good checkpoint

    _, state = read_checkpoint(last)  # it reads back whole
    step = int(state["step"])
    assert step >= 4 and step < 400
    again = run_tireg_process(*_args(concept, model, run, steps=step + 4), env=ONE_THREAD)
    assert again.code == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["resumed_from"] == str(last) and report["step"] == step + 4
