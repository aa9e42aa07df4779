"""Benchmark: one validation grid (4 embeddings x 4 seeds, plus the row without) rendered by
``tireg validate`` and by the plain diffusers loop people write, same model, settings and device,
in one run.

* tireg: :func:`tireg.validate.run.validate` on a fresh cache: the pipeline loaded once, the row
  without rendered once, images batched (``--batch-size``), every PNG with its infotext, the
  grid, the catalogue record.
* plain loop: ``from_pretrained`` once, then per embedding ``load_textual_inversion``, one
  ``pipe(prompt, generator=...)`` call per image for the embedding's row *and* the row without
  (a script re-renders it for every embedding), ``unload_textual_inversion``; PNGs saved.

Both make the same 20 grid images; images/s is grid images over wall time, load included.

Modes:

* default: a small random SD 1.x pipeline on the CPU (tests/pipelines.py), 64x64, 20 steps;
* ``--gpu-sd15``: the real SD 1.5 architecture (tireg's shipped configs) with random weights,
  512x512, 20 steps, fp16 on CUDA; skipped cleanly without CUDA. Sized to finish well inside
  10 minutes on one datacentre GPU (building and saving the 1B-parameter model included).

Run: ``.venv/bin/python bench/validate.py [--gpu-sd15] [--steps N] [--size PX] [--batch-size N]
[--threads N]`` (on a crowded CPU, ``--threads 1`` avoids thread oversubscription).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EMBEDDINGS = 4
SEEDS = (101, 102, 103, 104)
PROMPT = "a photo of {}"


def build_small(folder: Path) -> None:
    """The CPU mode's model: tests/pipelines.py's tiny SD 1.x pipeline with SD's own noise
    schedule (1,000 training steps, so 20 sampling steps are meaningful), saved as a folder."""
    from diffusers import DDIMScheduler
    from tests.pipelines import build_sd_pipeline

    pipe = build_sd_pipeline(folder.parent / "parts", width=768)
    pipe.scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe.save_pretrained(folder)


def build_sd15(folder: Path) -> None:
    """The real SD 1.5 architecture from tireg's shipped configs, random weights, fp16."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from tireg.pipelines.loading import config_dir
    from tireg.pipelines.tokenizers import load_tokenizer

    configs = config_dir("sd1")
    torch.manual_seed(0)
    with torch.device("cuda"):
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
            tokenizer=load_tokenizer("sd1"),
            unet=UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(configs / "unet")
            ),
            scheduler=DDIMScheduler.from_config(DDIMScheduler.load_config(configs / "scheduler")),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.to(torch.float16).save_pretrained(folder)


def write_embeddings(folder: Path) -> list[Path]:
    """Four random 2-vector SD 1.x embeddings as diffusers-style safetensors files."""
    from tests.registry.make_files import write_one
    from tests.validate.conftest import embedding

    return [
        write_one(embedding(f"bench-{i}", seed=i), folder, f"bench-{i}", "diffusers-safetensors")
        for i in range(EMBEDDINGS)
    ]


def run_tireg(model: Path, files: list[Path], args: Any, device: str) -> float:
    """``tireg validate`` through the library, on a fresh catalogue and cache (the embeddings
    given as files, as the plain loop takes them)."""
    from tireg.db import open_catalogue
    from tireg.validate.run import validate
    from tireg.validate.settings import Settings

    with open_catalogue() as catalogue:
        settings = Settings(
            prompt=PROMPT,
            seeds=SEEDS,
            steps=args.steps,
            sampler="Euler",
            cfg=7.0,
            width=args.size,
            height=args.size,
            batch_size=args.batch_size,
            device=device,
            dtype=args.dtype,
        )
        start = time.perf_counter()
        run = validate(catalogue, [str(f) for f in files], [str(model)], settings)
        seconds = time.perf_counter() - start
    assert run is not None and len(run.images) == (EMBEDDINGS + 1) * len(SEEDS)
    return seconds


def run_plain(model: Path, files: list[Path], args: Any, device: str, out: Path) -> float:
    """The loop a script writes: one embedding at a time, one image per call, the row without
    rendered again for every embedding."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(
        model, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    out.mkdir(parents=True, exist_ok=True)
    for file in files:
        word = file.stem
        pipe.load_textual_inversion(str(file), token=word)
        for prompt in (PROMPT.format(word), PROMPT.format("").strip()):
            for seed in SEEDS:
                image = pipe(
                    prompt,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    num_inference_steps=args.steps,
                    guidance_scale=7.0,
                    width=args.size,
                    height=args.size,
                ).images[0]
                image.save(out / f"{word}-{'with' if word in prompt else 'without'}-{seed}.png")
        pipe.unload_textual_inversion()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-sd15", action="store_true", help="SD 1.5 architecture, fp16, CUDA")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, help="pixels a side (default 64 CPU, 512 GPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    if args.gpu_sd15:
        import torch

        if not torch.cuda.is_available():
            print("bench/validate.py --gpu-sd15: no CUDA device here; skipped")
            return
        args.size, args.dtype, device, build = args.size or 512, "fp16", "cuda", build_sd15
    else:
        args.size, args.dtype, device, build = args.size or 64, "fp32", "cpu", build_small
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="tireg-bench-validate-") as tmp:
        work = Path(tmp)
        os.environ["TIREG_HOME"] = str(work / "home")
        model = work / "model"
        build(model)
        files = write_embeddings(work / "embeddings")
        grid = (EMBEDDINGS + 1) * len(SEEDS)
        # the plain loop first, so neither side profits from a warmer page cache than the other
        plain = run_plain(model, files, args, device, work / "plain")
        tireg = run_tireg(model, files, args, device)
        mode = "GPU SD 1.5 architecture" if args.gpu_sd15 else "CPU small random SD 1.x"
        print(f"{mode}: {args.size}x{args.size}, {args.steps} steps, Euler, {args.dtype}")
        print(f"grid: {EMBEDDINGS} embeddings x {len(SEEDS)} seeds + the row without = {grid}")
        renders = EMBEDDINGS * 2 * len(SEEDS)
        print(
            f"plain diffusers loop  {plain:8.2f} s  {grid / plain:7.3f} images/s  "
            f"({renders} renders)"
        )
        print(
            f"tireg validate        {tireg:8.2f} s  {grid / tireg:7.3f} images/s  "
            f"({grid} renders, batch size {args.batch_size})"
        )
        print(f"ratio tireg / plain   {plain / tireg:8.2f}x  (target >= 1.5x)")


if __name__ == "__main__":
    main()
