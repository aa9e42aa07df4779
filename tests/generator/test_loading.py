"""Loading any checkpoint a user has, offline: single files of every family, .ckpt, folders."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.generator.conftest import TinyModels
from tests.generator.tiny import CLASS_NAMES
from tests.ldm_layout import write_single_file
from tireg import config
from tireg.checkpoints.errors import CheckpointError
from tireg.files import sha256_file
from tireg.pipelines import loading, pickled
from tireg.pipelines.errors import PipelineError, UnsupportedModelError

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
ENCODERS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _same_weights(source: Any, loaded: Any, *, stored: str = "float16") -> None:
    """Every tensor of every component arrived unchanged (as ``stored`` in the file: the single
    files are fp16, as downloaded ones are; diffusers folders fp32)."""
    import torch

    for name in ENCODERS:
        expected = getattr(source, name, None)
        if expected is None:
            continue
        want = expected.state_dict()
        got = getattr(loaded, name).state_dict()
        assert set(got) == set(want), name
        for key, tensor in want.items():
            assert got[key].shape == tensor.shape, key
            want_value = tensor.to(getattr(torch, stored)).float().numpy()
            assert np.array_equal(got[key].float().numpy(), want_value), key


def _render(pipe: Any) -> Any:
    """Two denoising steps at a tiny size; the image must be finite."""
    import torch

    image = pipe(
        "a photo of a cat",
        num_inference_steps=2,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
    ).images[0]
    assert image.shape == (16, 16, 3) and np.isfinite(image).all()
    return image


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_single_file_loads_offline(
    family: str, tiny_models: TinyModels, no_network: list[str]
) -> None:
    path = tiny_models.files[family]
    kind = "epsilon" if family == "sd2" else None  # SD 2.x's own rule has its own tests below
    model = loading.load_model(path, configs=tiny_models.configs, prediction_type=kind)
    assert type(model.pipe).__name__ == CLASS_NAMES[family]
    assert (model.family, model.prediction_type, model.name) == (family, "epsilon", path.stem)
    digest = sha256_file(path)
    assert (model.sha256, model.autov2) == (digest, digest[:10])
    assert model.old_hash is not None and len(model.old_hash) == 8
    _same_weights(tiny_models.pipes[family], model.pipe)
    assert model.pipe.tokenizer("a photo of a cat").input_ids == CAT_IDS
    if family == "sdxl":
        assert model.pipe.tokenizer_2.pad_token == "!"
    _render(model.pipe)


def test_the_guard_catches_what_plain_from_single_file_does(
    tiny_models: TinyModels, no_network: list[str]
) -> None:
    """Without tireg's configs, diffusers goes to the Hub even with ``local_files_only``
    (diffusers #8752); the guard sees it, so the offline tests above prove something."""
    from diffusers import StableDiffusionPipeline

    with pytest.raises(Exception):  # noqa: B017 - whatever diffusers makes of the refusal
        StableDiffusionPipeline.from_single_file(
            str(tiny_models.files["sd1"]), local_files_only=True
        )
    assert no_network, "diffusers did not try the network: the guard proves nothing"
    no_network.clear()
    with pytest.raises(OSError, match="test blocks network access"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    no_network.clear()


def test_offline_switch_is_restored(tiny_models: TinyModels) -> None:
    from huggingface_hub import constants

    before = (constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    loading.load_model(tiny_models.files["sd1"], configs=tiny_models.configs)
    assert (constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")) == before


def test_ckpt_goes_through_the_allow_list_unpickler(
    tiny_models: TinyModels, tmp_path: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Lightning-style ``{"state_dict": ...}`` .ckpt loads without torch ever unpickling it,
    and is converted once into the cache, keyed by its SHA-256."""
    import torch

    path = write_single_file(
        tiny_models.pipes["sd1"], "sd1", tmp_path / "model.ckpt", dtype=torch.float16
    )

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load was called on a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    model = loading.load_model(path, configs=tiny_models.configs)
    assert model.name == "model" and model.sha256 == sha256_file(path)
    _same_weights(tiny_models.pipes["sd1"], model.pipe)
    cached = config.cache_dir() / "checkpoints" / f"{model.sha256}.safetensors"
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    loading.load_model(path, configs=tiny_models.configs)
    assert cached.stat().st_mtime_ns == stamp  # converted once


class _Payload:
    """Pickles as a call of ``os.system``: what a malicious .ckpt carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_ckpt_with_a_forbidden_global_is_refused(tiny_models: TinyModels, tmp_path: Path) -> None:
    """A .ckpt whose pickle asks for anything outside the allow-list fails in one line, and
    nothing in it runs."""
    import torch

    marker = tmp_path / "pwned"
    state = {"state_dict": {"x": torch.zeros(2)}, "callbacks": _Payload(marker)}
    path = tmp_path / "evil.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        loading.load_model(path)
    assert "\n" not in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


def test_legacy_container_is_refused_in_one_line(tiny_models: TinyModels, tmp_path: Path) -> None:
    import torch

    state = {
        "state_dict": {
            "cond_stage_model.transformer.text_model.embeddings."
            "token_embedding.weight": torch.zeros(4, 768)
        }
    }
    path = tmp_path / "old.ckpt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with pytest.raises(PipelineError, match="legacy torch container") as err:
        pickled.as_safetensors(path, sha256_file(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_diffusers_folder_loads_offline(
    family: str, tiny_models: TinyModels, tmp_path: Path, no_network: list[str]
) -> None:
    folder = tmp_path / f"my-{family}-model"
    tiny_models.pipes[family].save_pretrained(str(folder))
    model = loading.load_model(folder)
    assert type(model.pipe).__name__ == CLASS_NAMES[family]
    assert (model.family, model.name, model.sha256, model.autov2) == (
        family,
        folder.name,
        None,
        None,
    )
    _same_weights(tiny_models.pipes[family], model.pipe, stored="float32")


def test_prediction_type_argument_overrides_a_folder(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    tiny_models.pipes["sd1"].save_pretrained(str(tmp_path / "m"))
    model = loading.load_model(tmp_path / "m", prediction_type="v_prediction")
    assert model.prediction_type == "v_prediction"
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"


def _save_safetensors(path: Path, tensors: dict[str, Any]) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.zeros(v, np.float16) for k, v in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("name", "tensors", "said"),
    [
        ("lora", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8)}, "LoRA"),
        (
            "sd3",
            {"model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": (6, 2)},
            "SD3",
        ),
        ("flux", {"double_blocks.0.img_attn.norm.key_norm.scale": (4,)}, "Flux"),
        ("refiner", {"conditioner.embedders.0.model.token_embedding.weight": (4, 1280)}, "refiner"),
    ],
)
def test_other_model_kinds_are_refused_in_one_line(
    name: str, tensors: dict[str, Any], said: str, tmp_path: Path
) -> None:
    path = _save_safetensors(tmp_path / f"{name}.safetensors", tensors)
    with pytest.raises(UnsupportedModelError) as err:
        loading.load_model(path)
    line = str(err.value)
    assert said in line and str(path) in line and "\n" not in line


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prediction_type": "x0"}, "unknown prediction type 'x0'"),
        ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_arguments_are_one_line(
    kwargs: dict[str, str], message: str, tiny_models: TinyModels
) -> None:
    with pytest.raises(PipelineError, match=message) as err:
        loading.load_model(tiny_models.files["sd1"], **kwargs)
    assert "\n" not in str(err.value)


def test_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no such checkpoint") as err:
        loading.load_model(tmp_path / "nope.safetensors")
    assert "\n" not in str(err.value)


def test_shipped_configs_are_complete() -> None:
    for name in ("sd1", "sd2-base", "sd2-v", "sdxl"):
        folder = loading.config_dir(name)
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        for component, (library, _cls) in ((k, v) for k, v in index.items() if isinstance(v, list)):
            if library is None or component.startswith("tokenizer"):
                continue
            config_file = "scheduler_config.json" if component == "scheduler" else "config.json"
            assert (folder / component / config_file).is_file(), (name, component)
    with pytest.raises(PipelineError, match="no pipeline config 'sd9'"):
        loading.config_dir("sd9")


#: published parameter counts (generator-trainer.md §7, measured on the meta device)
PARAMS = {
    ("sd1", "unet"): 859_520_964,
    ("sd2-base", "unet"): 865_910_724,
    ("sd2-v", "unet"): 865_910_724,
    ("sdxl", "unet"): 2_567_463_684,
    ("sd1", "vae"): 83_653_863,
    ("sdxl", "vae"): 83_653_863,
    ("sd1", "text_encoder"): 123_060_480,
    ("sd2-base", "text_encoder"): 340_387_840,
    ("sdxl", "text_encoder"): 123_060_480,
    ("sdxl", "text_encoder_2"): 694_659_840,
}


@pytest.mark.parametrize(("name", "component"), sorted(PARAMS))
def test_shipped_configs_build_the_published_architectures(name: str, component: str) -> None:
    """Each shipped config builds (on the meta device: no memory) the architecture with exactly
    the published parameter count."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = loading.config_dir(name) / component
    with torch.device("meta"):
        if component == "unet":
            model = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
        elif component == "vae":
            model = AutoencoderKL.from_config(AutoencoderKL.load_config(folder))
        else:
            cfg = transformers.CLIPTextConfig.from_pretrained(str(folder))
            model = getattr(transformers, cfg.architectures[0])(cfg)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(name, component)]


def test_shipped_schedulers_per_family() -> None:
    def scheduler(name: str) -> dict[str, Any]:
        path = loading.config_dir(name) / "scheduler" / "scheduler_config.json"
        return json.loads(path.read_text(encoding="utf-8"))

    assert scheduler("sd1")["prediction_type"] == scheduler("sd2-base")["prediction_type"]
    assert scheduler("sd2-base")["prediction_type"] == "epsilon"
    assert scheduler("sd2-v")["prediction_type"] == "v_prediction"
    assert scheduler("sdxl")["timestep_spacing"] == "leading"


def test_pipelines_import_without_ml_libraries() -> None:
    """Importing the package (as ``tireg --help`` might) loads no torch, diffusers or
    transformers, and needs no GPU."""
    code = (
        "import sys\n"
        "import tireg.pipelines.loading, tireg.pipelines.tokenizers, tireg.pipelines.pickled\n"
        "import tireg.pipelines.prediction\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pick_device_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-GPU path cannot be shown here")
    assert loading.pick_device("cpu") == "cpu"
    if not torch.backends.mps.is_available():
        assert loading.pick_device("auto") == "cpu"
    with pytest.raises(PipelineError, match="device 'cuda' is not available"):
        loading.pick_device("cuda")
    assert loading.torch_dtype("auto", "cpu") == torch.float32


@pytest.mark.gpu
def test_fp16_load_on_cuda(tiny_models: TinyModels) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = loading.load_model(
        tiny_models.files["sd1"], device="auto", dtype="auto", configs=tiny_models.configs
    )
    assert model.pipe.device.type == "cuda" and model.pipe.unet.dtype == torch.float16
    _render(model.pipe)


def test_a_file_missing_components_is_one_line(tmp_path: Path) -> None:
    """A file that detects as SD 1.x but lacks most of the model fails in one line."""
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    path = _save_safetensors(tmp_path / "partial.safetensors", {key: (10, 768)})
    with pytest.raises(PipelineError, match=r"cannot load as SD 1\.x pipeline") as err:
        loading.load_model(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_folder_missing_components_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    (folder / "text_encoder").mkdir(parents=True)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
    }
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    (folder / "text_encoder" / "config.json").write_text('{"hidden_size": 768}', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"cannot load as SD 1\.x pipeline") as err:
        loading.load_model(folder)
    assert "\n" not in str(err.value)
