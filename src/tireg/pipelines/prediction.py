"""What an SD 2.x checkpoint predicts (epsilon or v), decided as A1111 decides it.

diffusers maps every SD 2.x single file to the 768-v config (generator-trainer.md §1.4), which
renders noise with a 512-base model. A1111 (``modules/sd_models_config.py``) looks first for a
``<checkpoint stem>.yaml`` beside the file, whose ``model.params.parameterization`` is ``"v"``
for v-prediction models (the original LDM ``v2-inference-v.yaml``; absent means epsilon), and
otherwise runs ``is_using_v_parameterization_for_sd2`` on the UNet: a 0.5-filled 8x8 latent at
timestep 999 with a 0.5-filled two-token context; a model whose output minus its input averages
below -1 predicts v. :func:`a1111_v_test` asks the same question of a diffusers UNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tireg.pipelines.errors import PipelineError

EPSILON, V_PREDICTION = "epsilon", "v_prediction"
#: A1111's probe: latent 1x4x8x8, context 1x2x<width>, timestep 999, all inputs 0.5
_PROBE_TIMESTEP = 999
_PROBE_VALUE = 0.5
_THRESHOLD = -1.0


def from_yaml(path: Path) -> str | None:
    """The prediction type an A1111 ``.yaml`` beside a checkpoint declares, or None without one."""
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        params = data["model"]["params"]
    except (OSError, UnicodeError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"unreadable model config ({type(exc).__name__}: {exc})".splitlines()[0],
            path=path,
            hint="fix or remove the .yaml beside the checkpoint",
        ) from exc
    if not isinstance(params, dict):
        raise PipelineError("model.params is not a mapping", path=path)
    return V_PREDICTION if params.get("parameterization") == "v" else EPSILON


def load_unet(weights: Path, config: Path) -> Any:
    """The UNet alone from a single file, in float32 (the probe runs in float32, as A1111's)."""
    import torch
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_single_file(
        str(weights),
        config=str(config),
        subfolder="unet",
        local_files_only=True,
        torch_dtype=torch.float32,
    )


def v_test_statistic(unet: Any) -> float:
    """mean(UNet(x, 999, context) - x) on A1111's probe inputs, in float32 on the CPU."""
    import torch

    width = int(unet.config.cross_attention_dim)
    device = unet.device
    latent = torch.full((1, int(unet.config.in_channels), 8, 8), _PROBE_VALUE, device=device)
    context = torch.full((1, 2, width), _PROBE_VALUE, device=device)
    with torch.no_grad():
        out = unet(
            latent.to(unet.dtype), _PROBE_TIMESTEP, encoder_hidden_states=context.to(unet.dtype)
        )
    return float((out.sample.float() - latent).mean())


def a1111_v_test(unet: Any) -> str:
    """``v_prediction`` when A1111 would load the checkpoint as a v model, else ``epsilon``."""
    return V_PREDICTION if v_test_statistic(unet) < _THRESHOLD else EPSILON
