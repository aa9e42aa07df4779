"""Bad input through the CLI: one line on stderr, exit 1, and no file written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.validate.conftest import FAST


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
    _refused(result, "out of GPU memory", "--size")
    assert not list(out.rglob("*.png")) if out.exists() else True
