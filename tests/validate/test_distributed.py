"""Two processes on one run, started by ``accelerate launch``, give the same images as one
process, and one grid.

On a machine without CUDA, ``accelerate launch --cpu --num_processes 2`` starts one process
(its ``simple_launcher``, unless MPI is set up); ``--multi_gpu`` starts two through torchrun,
and tireg joins them as accelerate's ``MULTI_CPU`` with gloo (see ``validate/distributed.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.validate.conftest import FAST


def _tireg(*prefix: str, args: list[str], home: Path) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "TIREG_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*prefix, "-m", "tireg", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_accelerate_launch_two_processes_give_the_same_images(
    tiny_model, catalogued, tireg_home: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    catalogued("birb-style")
    catalogued("cat-toy", seed=1)
    args = ["validate", "birb-style", "cat-toy", "--model", str(tiny_model("sd1")), *FAST]
    args += ["--seeds", "1,2,3", "--json"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no"]
    two = _tireg(*launch, args=[*args, "--out", str(tmp_path / "two")], home=tireg_home)
    shutil.rmtree(tireg_home / "cache" / "validate")  # the single process renders everything too
    one = _tireg(sys.executable, args=[*args, "--out", str(tmp_path / "one")], home=tireg_home)

    assert two["timings"]["processes"] == 2 and one["timings"]["processes"] == 1
    assert two["timings"]["joined"] == "MULTI_CPU (gloo)"
    assert two["timings"]["rendered"] == one["timings"]["rendered"] == 9
    assert len(two["images"]) == len(one["images"]) == 9
    for a, b in zip(one["images"], two["images"], strict=True):
        with Image.open(a["path"]) as x, Image.open(b["path"]) as y:
            assert x.info["parameters"] == y.info["parameters"]
            assert np.array_equal(np.asarray(x), np.asarray(y)), (a["path"], b["path"])
    assert Path(two["grid"]).is_file() and Path(one["grid"]).is_file()
    listed = subprocess.run(
        [sys.executable, "-m", "tireg", "validations", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TIREG_HOME": str(tireg_home)},
        check=True,
    )
    assert len(json.loads(listed.stdout)) == 2  # the launched run was recorded once
