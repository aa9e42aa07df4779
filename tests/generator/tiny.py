"""Tiny random SD 1.x / SD 2.x / SDXL pipelines with the real CLIP vocabulary size, their single
files in the LDM layout, and a config root laid out like tireg's shipped ``configs/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ldm_layout import write_config_folder, write_single_file
from tests.pipelines import build_sd_pipeline, build_sdxl_pipeline

CLIP_VOCAB = 49408
CLASS_NAMES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline"}
CLASS_NAMES["sdxl"] = "StableDiffusionXLPipeline"


def build(family: str, scratch: Path, *, clip_vocabulary: bool = True) -> Any:
    """A tiny pipeline of ``family`` (``sd1``, ``sd2``, ``sdxl``: the real encoder widths).

    With ``clip_vocabulary`` its text encoders take every CLIP token id, so tireg's real
    tokenizers can drive it (what a single file is loaded with). Without, it keeps the small
    test tokenizer it was built with: enough for a diffusers folder, which brings its own, and
    a fraction of the size to save and load (SDXL: about 400 MB less)."""
    if family == "sdxl":
        pipe = build_sdxl_pipeline(scratch)
        encoders = [pipe.text_encoder, pipe.text_encoder_2]
    else:
        pipe = build_sd_pipeline(scratch, width=768 if family == "sd1" else 1024)
        encoders = [pipe.text_encoder]
    for encoder in encoders if clip_vocabulary else []:
        encoder.resize_token_embeddings(CLIP_VOCAB, mean_resizing=False)
    return pipe


def write_config_root(root: Path, pipes: dict[str, Any]) -> Path:
    """``root/{sd1,sd2-base,sd2-v,sdxl}``: configs of the tiny pipelines. ``sd2-v`` differs from
    ``sd2-base`` as the shipped ones do: v-prediction scheduler and a larger ``sample_size``."""
    from diffusers import DDIMScheduler

    write_config_folder(pipes["sd1"], root / "sd1", CLASS_NAMES["sd1"])
    write_config_folder(pipes["sdxl"], root / "sdxl", CLASS_NAMES["sdxl"])
    sd2 = pipes["sd2"]
    write_config_folder(sd2, root / "sd2-base", CLASS_NAMES["sd2"])
    base_scheduler, base_size = sd2.scheduler, sd2.unet.config.sample_size
    sd2.scheduler = DDIMScheduler.from_config(sd2.scheduler.config, prediction_type="v_prediction")
    sd2.unet.register_to_config(sample_size=base_size + 4)
    write_config_folder(sd2, root / "sd2-v", CLASS_NAMES["sd2"])
    sd2.scheduler = base_scheduler
    sd2.unet.register_to_config(sample_size=base_size)
    return root


def write_files(directory: Path, pipes: dict[str, Any]) -> dict[str, Path]:
    """One single file per family: ``.safetensors`` in fp16 (as people download them)."""
    import torch

    return {
        family: write_single_file(
            pipe, family, directory / f"tiny-{family}.safetensors", dtype=torch.float16
        )
        for family, pipe in pipes.items()
    }
