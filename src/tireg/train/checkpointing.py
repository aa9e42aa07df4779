"""A run's checkpoint: everything needed to continue it bit for bit, in one safetensors file.

Tensors (the vectors, the optimizer's moments, the RNG states, the data order, DVAR's history)
are safetensors tensors; everything else (step, optimizer hyper-parameters, grad scaler, Python's
RNG, settings) is JSON in the file's metadata. Nothing is pickled, so reading a checkpoint can
never run code. Each checkpoint is written through :func:`tireg.files.atomic_writer`: a run
killed mid-write, or stopped by a full disk, keeps every earlier checkpoint intact.
"""

from __future__ import annotations

import errno
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from tireg.files import atomic_writer
from tireg.train.errors import RunStateError

STATE_KEY = "tireg.run_state"
FORMAT_VERSION = 1


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:07d}.safetensors"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of the run in ``run_dir``, if it has one."""
    found = sorted((run_dir / "checkpoints").glob("step-*.safetensors"))
    return found[-1] if found else None


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write one checkpoint atomically; a full disk is one :class:`RunStateError` line."""
    meta = {STATE_KEY: json.dumps({"version": FORMAT_VERSION, **state}, sort_keys=True)}
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)
    try:
        with atomic_writer(path) as stream:
            stream.write(data)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        raise RunStateError(
            f"cannot write the checkpoint: {exc.strerror or exc}",
            path=path,
            hint="free some disk space and run the same command again: it continues from the "
            "last checkpoint"
            if full
            else "check the folder's permissions",
        ) from None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON state of a checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        state = json.loads(meta[STATE_KEY])
    except (OSError, KeyError, ValueError) as exc:
        raise RunStateError(f"not a tireg training checkpoint: {exc}", path=path) from None
    if state.get("version") != FORMAT_VERSION:
        raise RunStateError(f"checkpoint format {state.get('version')} is unknown", path=path)
    return tensors, state


# -- pieces of a run's state, as (tensors, JSON) ---------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python's, NumPy's, torch's CPU and every CUDA device's global RNG states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "rng.python": torch.tensor(internal, dtype=torch.int64),
    }
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    meta = {
        "python": [version, gauss],
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    version, gauss = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng.python"].tolist()), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """The optimizer's per-parameter tensors as safetensors, the rest as JSON."""
    full = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in full["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": full["param_groups"], "scalars": scalars}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
