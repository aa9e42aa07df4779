"""A full-size SD 1.5 single file (real architecture, random weights) loads offline and renders.

This is the checkpoint people download, minus the training: the published SD 1.5 configs (the
ones tireg ships), random weights, written in the LDM layout in fp16 (about 2.1 GB) by
:mod:`tests.ldm_layout`. It is loaded through the shipped configs alone, with the
network blocked, and renders a 64x64 image in two steps. The file is deleted afterwards.
"""

from __future__ import annotations

import gc
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.ldm_layout import write_single_file
from tireg.pipelines import loading

#: published SD 1.5 shapes, checked on the loaded components
SD15_SHAPES = {
    ("unet", "conv_in.weight"): (320, 4, 3, 3),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"): (320, 768),
    ("unet", "mid_block.attentions.0.proj_in.weight"): (1280, 1280, 1, 1),
    ("vae", "decoder.mid_block.attentions.0.to_q.weight"): (512, 512),
    ("text_encoder", "embeddings.token_embedding.weight"): (49408, 768),
    ("text_encoder", "encoder.layers.11.mlp.fc1.weight"): (3072, 768),
}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _random_fill(module: Any) -> Any:
    """Random values for every parameter, fast: slices of one random pool (drawing 1.07 billion
    normal numbers, or running the models' own initialisers, takes minutes on a shared CPU)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    pool = (torch.randn(1 << 22, generator=generator) * 0.02).to(torch.float16)
    with torch.no_grad():
        for n, param in enumerate(module.parameters()):
            flat = param.view(-1)
            start = (n * 7919) % pool.numel()
            for at in range(0, flat.numel(), pool.numel() - start):
                chunk = min(pool.numel() - start, flat.numel() - at)
                flat[at : at + chunk].copy_(pool[start : start + chunk])
    return module


def _build_sd15() -> Any:
    """SD 1.5 from the shipped configs: built on the meta device, then given fp16 storage and
    random values (2.1 GB, never the 4.3 GB of an fp32 build)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel as UNet
    from transformers import CLIPTextConfig, CLIPTextModel

    from tireg.pipelines.tokenizers import load_tokenizer

    folder = loading.config_dir("sd1")
    with torch.device("meta"):
        unet = UNet.from_config(UNet.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))
    unet, vae, text = (
        _random_fill(m.to(torch.float16).to_empty(device="cpu")) for m in (unet, vae, text)
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=load_tokenizer("sd1"),
        scheduler=PNDMScheduler.from_pretrained(str(folder), subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.mark.slow
def test_full_size_sd15_single_file_loads_offline_and_renders(
    tmp_path: Path, no_network: list[str]
) -> None:
    import torch

    # 1. build and write the checkpoint, then free the builder
    started = time.perf_counter()
    pipe = _build_sd15()
    path = write_single_file(pipe, "sd1", tmp_path / "sd15-random.safetensors")
    probe = pipe.unet.conv_in.weight.detach().float().clone()
    del pipe
    gc.collect()
    built = time.perf_counter() - started
    size_gb = path.stat().st_size / 1e9
    try:
        # 2. load it through the shipped configs, offline
        started = time.perf_counter()
        model = loading.load_model(path)
        loaded = time.perf_counter() - started
        assert type(model.pipe).__name__ == "StableDiffusionPipeline"
        assert type(model.pipe.scheduler).__name__ == "PNDMScheduler"
        assert (model.family, model.prediction_type) == ("sd1", "epsilon")
        state = {name: getattr(model.pipe, name).state_dict() for name in ("unet", "vae")}
        state["text_encoder"] = model.pipe.text_encoder.state_dict()
        for (component, key), shape in SD15_SHAPES.items():
            assert tuple(state[component][key].shape) == shape, key
        assert torch.equal(model.pipe.unet.conv_in.weight.detach(), probe)
        assert sum(p.numel() for p in model.pipe.unet.parameters()) == 859_520_964
        # 3. render 64x64 in two steps (no classifier-free guidance: half the UNet work)
        started = time.perf_counter()
        image = model.pipe(
            "a photo of a cat",
            num_inference_steps=2,
            guidance_scale=1.0,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images[0]
        rendered = time.perf_counter() - started
        assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    finally:
        path.unlink(missing_ok=True)
    # the figures, shown with ``pytest -s`` (or -rP)
    print(
        f"\nfull SD 1.5: file {size_gb:.2f} GB, build+write {built:.0f} s, load {loaded:.0f} s,"
        f" render {rendered:.1f} s, peak RSS {_peak_rss_gb():.1f} GB"
    )


def _reduced_sdxl() -> Any:
    """SDXL's real structure (block types, transformer depths 1/2/10, text-time embedding, both
    encoders at their real widths and vocabulary) with narrow channels and two-layer encoders:
    the full model (3.5 B parameters, 14 GB in fp32) does not fit beside the other test jobs."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from diffusers import UNet2DConditionModel as UNet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tireg.pipelines.tokenizers import load_tokenizer

    folder = loading.config_dir("sdxl")
    narrow = {"num_hidden_layers": 2, "intermediate_size": 64}
    torch.manual_seed(0)
    unet_config = dict(UNet.load_config(folder / "unet"))
    unet_config.update(block_out_channels=[32, 64, 128], attention_head_dim=[1, 2, 4])
    vae_config = dict(AutoencoderKL.load_config(folder / "vae"))
    vae_config.update(block_out_channels=[32, 32, 64, 64])
    text_2 = CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2"), **narrow)
    return StableDiffusionXLPipeline(
        unet=UNet.from_config(unet_config),
        vae=AutoencoderKL.from_config(vae_config),
        text_encoder=CLIPTextModel(
            CLIPTextConfig.from_pretrained(str(folder / "text_encoder"), **narrow)
        ),
        text_encoder_2=CLIPTextModelWithProjection(text_2),
        tokenizer=load_tokenizer("sdxl", 1),
        tokenizer_2=load_tokenizer("sdxl", 2),
        scheduler=EulerDiscreteScheduler.from_pretrained(str(folder), subfolder="scheduler"),
    )


@pytest.mark.slow
def test_reduced_width_sdxl_single_file_loads_offline_and_renders(
    tmp_path: Path, no_network: list[str]
) -> None:
    import torch

    from tests.ldm_layout import write_config_folder

    pipe = _reduced_sdxl()
    path = write_single_file(
        pipe, "sdxl", tmp_path / "sdxl-narrow.safetensors", dtype=torch.float16
    )
    configs = tmp_path / "configs"
    write_config_folder(pipe, configs / "sdxl", "StableDiffusionXLPipeline")
    model = loading.load_model(path, configs=configs)
    assert type(model.pipe).__name__ == "StableDiffusionXLPipeline"
    assert type(model.pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert (model.family, model.prediction_type) == ("sdxl", "epsilon")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = getattr(pipe, name).state_dict(), getattr(model.pipe, name).state_dict()
        assert set(got) == set(want), name
        for key, tensor in want.items():
            assert torch.equal(got[key].float(), tensor.half().float()), key
    image = model.pipe(
        "a photo of a cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
