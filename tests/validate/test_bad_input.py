"""Bad input through the CLI: one line on stderr, exit 1, and no file written."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.validate.conftest import FAST

#: the address space a ``tireg validate`` process may map: about four times what loading and
#: rendering a tiny pipeline at a small size takes (VmPeak near 1 GiB), far below what the
#: noise of a 16384x16384 batch takes (8 GiB)
_ADDRESS_SPACE = 4 * 2**30


def _refused(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--model", "/no/such/model.safetensors"), ("no model named",)),
        (("--sampler", "Nonesuch"), ("unknown sampler", "Euler a")),
        (("--size", "500x512"), ("not a multiple of 8",)),
        (("--size", "big"), ("not WIDTHxHEIGHT",)),
        (("--seeds", "1,x"), ("not a list of integers",)),
        (("--steps", "0"), ("steps must be 1 or more",)),
    ],
)
def test_one_line_and_nothing_written(
    args: tuple[str, ...], words: tuple[str, ...], tiny_model, catalogued, tireg_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    catalogued("birb-style")
    out = tmp_path / "out"
    model = ("--model", str(tiny_model("sd1")))
    argv = ["validate", "birb-style", *FAST, *model, "--out", str(out), *args]
    _refused(tireg_cli(*argv), *words)
    assert not out.exists()


def test_unknown_embedding_and_model_without_file(catalogued, tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogued("birb-style")
    _refused(tireg_cli("validate", "nope", "--model", tmp_path), "no embedding named 'nope'")
    _refused(
        tireg_cli("validate", "birb-style", "--model", "7460a6fa", *FAST),
        "has no file tireg knows",
        "tireg model add",
    )


@pytest.mark.gpu
def test_out_of_gpu_memory_is_one_line(tiny_model, catalogued, tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A size no GPU holds: one line naming the setting to lower, and no image file."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    catalogued("birb-style")
    out = tmp_path / "out"
    result = tireg_cli(
        "validate",
        "birb-style",
        "--model",
        tiny_model("sd1"),
        "--device",
        "cuda",
        "--rng",
        "gpu",  # the noise is drawn on the GPU, not in 68 GB of host memory
        "--size",
        "65536x65536",
        "--steps",
        "1",
        "--seeds",
        "1",
        "--out",
        out,
    )
    _refused(result, "out of memory on cuda", "--size")
    assert not list(out.rglob("*.png")) if out.exists() else True


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE, _ADDRESS_SPACE))


def test_out_of_memory_on_cpu_is_one_line(
    tiny_model, catalogued, tireg_home: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Real memory exhaustion on the CPU: the process may map 4 GiB, the batch's noise alone
    needs 8. torch's CPU allocator raises a plain RuntimeError there, not OutOfMemoryError;
    it still gets one line naming every setting to lower, exit 1, and no file is written."""
    catalogued("birb-style")
    out = tmp_path / "out"
    argv = ["validate", "birb-style", "--model", str(tiny_model("sd1")), "--device", "cpu"]
    argv += ["--size", "16384x16384", "--steps", "1", "--sampler", "Euler", "--seeds", "1,2"]
    argv += ["--batch-size", "2", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "tireg", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "TIREG_HOME": str(tireg_home), "OMP_NUM_THREADS": "1"},
        preexec_fn=_limited,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = lines[0]
    assert "out of memory on cpu rendering 16384x16384, batch size 2" in line
    for setting in ("--batch-size (now 2)", "--size (now 16384x16384)", "--dtype bf16"):
        assert setting in line, line
    written = [p for p in (out, tireg_home / "cache" / "validate") if p.exists()]
    assert [f for folder in written for f in folder.rglob("*") if f.is_file()] == []
