"""``--compile``: a compiled run gives the vectors of an uncompiled one (float tolerance), and
where torch.compile cannot build, the run goes on uncompiled after one warning line."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import CliResult, run_tireg_process
from tests.train.conftest import ONE_THREAD, train_args, write_concept
from tireg.train.checkpointing import checkpoint_path

STEPS = 4
#: a cold inductor compile of the tiny UNet's forward and backward takes minutes of CPU
COMPILE_TIMEOUT = 1800


def _train(images: Path, model: Path, out: Path, *extra: str, env: dict[str, str]) -> CliResult:
    args = train_args(
        images, model, out, steps=str(STEPS), save_every="1000", preview_every="0", json=True
    )
    return run_tireg_process(*args, *extra, env={**ONE_THREAD, **env}, timeout=COMPILE_TIMEOUT)


def _vectors(run: Path) -> torch.Tensor:
    return load_file(str(checkpoint_path(run, STEPS)))["vectors.clip_l"]


def _warnings(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


@pytest.fixture(scope="module")
def plain(
    model_folder: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """(images, model, run folder) of one uncompiled run, for both tests to compare with."""
    root = tmp_path_factory.mktemp("compile")
    images = write_concept(root / "images")
    result = _train(images, model_folder("sd1"), root / "plain", env={})
    assert result.code == 0, result.stderr
    return images, model_folder("sd1"), root / "plain"


def test_compiled_run_gives_the_uncompiled_vectors(
    plain: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, model, plain_run = plain
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        pytest.skip(f"torch.compile's inductor needs a C++ compiler; {compiler} is not here")
    result = _train(images, model, tmp_path / "compiled", "--compile", env={})
    assert result.code == 0, result.stderr
    if _warnings(result):  # the product fell back: compiling cannot work on this machine
        pytest.skip(_warnings(result)[0])
    assert json.loads(result.stdout)["step"] == STEPS
    compiled = _vectors(tmp_path / "compiled")
    # inductor's fused kernels round differently; AdamW's first steps (about lr each, whatever
    # the gradient's size) carry that into the vectors at ~1e-3 of lr 0.05
    torch.testing.assert_close(compiled, _vectors(plain_run), rtol=0, atol=5e-3)
    losses = [
        [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
        for run in (plain_run, tmp_path / "compiled")
    ]
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=0)


def test_compile_falls_back_with_one_warning_where_it_cannot_build(
    plain: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A machine without a C++ compiler, for real: inductor finds none at ``CXX`` (an empty
    cache folder, so nothing compiled before is reused)."""
    images, model, plain_run = plain
    no_compiler = {
        "CXX": str(tmp_path / "no-such-compiler"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-cache"),
    }
    result = _train(images, model, tmp_path / "fallback", "--compile", env=no_compiler)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    (warning,) = _warnings(result)
    assert warning.startswith("warning: --compile: torch.compile cannot build here")
    assert "no-such-compiler" in warning and warning.endswith("training uncompiled")
    assert json.loads(result.stdout)["step"] == STEPS
    # the failed build ran nothing: the run is the uncompiled one, bit for bit
    assert torch.equal(_vectors(tmp_path / "fallback"), _vectors(plain_run))
