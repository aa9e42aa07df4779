"""SD 2.x epsilon or v, decided as A1111 does: the .yaml beside the file, else its UNet test."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.generator.conftest import TinyModels
from tests.ldm_layout import write_single_file
from tireg.pipelines import loading, prediction
from tireg.pipelines.errors import PipelineError

_HEAD = "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n"
V_YAML = _HEAD + '    parameterization: "v"\n'  # as in v2-inference-v.yaml
EPS_YAML = _HEAD + "    linear_start: 0.00085\n"  # as in v2-inference.yaml (no parameterization)


def _constant_output(pipe: Any, value: float) -> Any:
    """A copy of ``pipe`` whose UNet outputs ``value`` everywhere (conv_out zero, bias value):
    a real UNet whose answer to A1111's probe is known."""
    import torch

    twin = copy.deepcopy(pipe)
    with torch.no_grad():
        twin.unet.conv_out.weight.zero_()
        twin.unet.conv_out.bias.fill_(value)
    return twin


def test_probe_statistic_is_a1111s(tiny_models: TinyModels) -> None:
    """mean(UNet(0.5, t=999, ctx=0.5) - 0.5): with a constant output c it is exactly c - 0.5."""
    for value, verdict in ((-3.0, "v_prediction"), (0.0, "epsilon"), (-0.25, "epsilon")):
        unet = _constant_output(tiny_models.pipes["sd2"], value).unet
        assert prediction.v_test_statistic(unet) == pytest.approx(value - 0.5)
        assert prediction.a1111_v_test(unet) == verdict


@pytest.mark.parametrize(("value", "expected"), [(-3.0, "v_prediction"), (0.0, "epsilon")])
def test_without_yaml_the_unet_decides(
    value: float, expected: str, tiny_models: TinyModels, tmp_path: Path, no_network: list[str]
) -> None:
    import torch

    path = write_single_file(
        _constant_output(tiny_models.pipes["sd2"], value),
        "sd2",
        tmp_path / "sd2.safetensors",
        dtype=torch.float16,
    )
    model = loading.load_model(path, configs=tiny_models.configs)
    assert model.prediction_type == expected
    assert model.pipe.scheduler.config.prediction_type == expected
    folder = "sd2-v" if expected == "v_prediction" else "sd2-base"
    wanted = loading.config_dir(folder, tiny_models.configs) / "unet" / "config.json"
    assert model.pipe.unet.config.sample_size == json.loads(wanted.read_text())["sample_size"]


@pytest.mark.parametrize(("text", "expected"), [(V_YAML, "v_prediction"), (EPS_YAML, "epsilon")])
def test_yaml_beside_the_checkpoint_decides(
    text: str, expected: str, tiny_models: TinyModels, tmp_path: Path
) -> None:
    """The yaml wins over the UNet: this UNet alone would say the opposite."""
    import torch

    opposite = 0.0 if expected == "v_prediction" else -3.0
    path = write_single_file(
        _constant_output(tiny_models.pipes["sd2"], opposite),
        "sd2",
        tmp_path / "sd2.safetensors",
        dtype=torch.float16,
    )
    path.with_suffix(".yaml").write_text(text, encoding="utf-8")
    model = loading.load_model(path, configs=tiny_models.configs)
    assert model.prediction_type == expected


def test_argument_wins_over_yaml(tiny_models: TinyModels, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "sd2.safetensors"
    shutil.copy(tiny_models.files["sd2"], path)
    path.with_suffix(".yaml").write_text(V_YAML, encoding="utf-8")
    model = loading.load_model(path, configs=tiny_models.configs, prediction_type="epsilon")
    assert model.prediction_type == "epsilon"


def test_sd1_yaml_v_makes_a_v_model(tiny_models: TinyModels, tmp_path: Path) -> None:
    """SD 1.x v-prediction finetunes ship the same .yaml convention."""
    import shutil

    path = tmp_path / "sd1v.safetensors"
    shutil.copy(tiny_models.files["sd1"], path)
    path.with_suffix(".yaml").write_text(V_YAML, encoding="utf-8")
    model = loading.load_model(path, configs=tiny_models.configs)
    assert model.prediction_type == "v_prediction"


def test_broken_yaml_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "m.yaml"
    broken.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="unreadable model config") as err:
        prediction.from_yaml(broken)
    assert "\n" not in str(err.value)
    assert prediction.from_yaml(tmp_path / "absent.yaml") is None
