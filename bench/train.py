"""Training speed and memory: the diffusers textual-inversion recipe against ``tireg train``'s loop.

Both train the same local diffusers folder (random weights), on the same images, resolution,
batch size, precision, device and number of steps, each in a fresh process (so peak memory is
each one's own), in one run of this script:

* **recipe**: a rebuild of diffusers ``examples/textual_inversion/textual_inversion.py``
  (baselines.md §1) reproducing every point that costs time or memory:
  - *what trains*: placeholder tokens added and the token table resized, each new row copied
    from the init token; VAE and UNet frozen, the text encoder's layers, final layer norm and
    position embeddings frozen; AdamW (0.9/0.999, weight decay 1e-2, eps 1e-8) over the **whole
    token-embedding matrix**; after every step every other row copied back from a clone;
  - *precision*: UNet and VAE cast to the weight dtype, the text encoder kept in fp32, autocast
    around the step under mixed precision;
  - *one step*: ``vae.encode(pixels).latent_dist.sample() * scaling_factor`` every step,
    ``randn_like`` noise, uniform timesteps, ``add_noise``, ``text_encoder(ids)[0]`` cast to the
    weight dtype, the UNet, epsilon or ``get_velocity`` target, ``mse_loss`` in float, backward,
    ``optimizer.step()``, a constant LR scheduler's ``step()``, ``zero_grad()``;
  - *data*: bicubic resize, random flip with p = 0.5, imagenet object templates.
  Validation and saving are left out of the timed window, as they are for tireg.
* **tireg**: :func:`tireg.train.loop.train` on the pipeline that
  :func:`tireg.pipelines.loading.load_model` gives (frozen weights in the compute dtype, cached
  latents, only the vectors trained).

Steps/s is measured over the steps after the first two (warm-up). Peak memory: on CUDA,
``torch.cuda.max_memory_allocated``; on the CPU, the worker's peak RSS (``ru_maxrss``) minus its
RSS before the model was loaded. tireg's one-time latent encoding is reported separately
(``setup_s``), not hidden.

Usage:
    .venv/bin/python bench/train.py                 # CPU, a small random SD 1.x-shaped model
    .venv/bin/python bench/train.py --gpu-sd15      # CUDA: SD 1.5's architecture, 512 px, bf16,
                                                    # batch 4 (skips cleanly without CUDA)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: diffusers' ``imagenet_templates_small``, the first few (the recipe's object templates)
TEMPLATES = ["a photo of a {}", "a rendering of a {}", "a cropped photo of the {}"]
RECIPE_POINTS = (
    "what trains: resized token table, whole-matrix AdamW (wd 1e-2), rows restored each step",
    "precision: UNet+VAE in the weight dtype, text encoder fp32, autocast when mixed",
    "one step: VAE encode + sample every step, randn noise, uniform t, add_noise, "
    "text encoder, UNet, mse(float), backward, AdamW step, constant LR step, zero_grad",
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the model and the images ----------------------------------------------------------------


def build_model(folder: Path, *, sd15: bool, dtype: Any) -> None:
    """A random-weight SD 1.x pipeline saved as a diffusers folder: SD 1.5's own architecture
    (``--gpu-sd15``), or a small one with SD 1.5's real tokenizer and 768-wide text encoder."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from tireg.pipelines.loading import config_dir
    from tireg.pipelines.tokenizers import load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer("sd1")
    configs = config_dir("sd1")
    if sd15:
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
    else:
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=768,
                intermediate_size=1024,
                num_hidden_layers=2,
                num_attention_heads=12,
                max_position_embeddings=77,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=16,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        vae = AutoencoderKL(
            block_out_channels=(16, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=16,
            layers_per_block=1,
        )
    scheduler = DDPMScheduler.from_pretrained(configs / "scheduler")
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(folder)


def write_images(folder: Path, count: int, size: int) -> None:
    """A synthetic concept: a red square on blue, shifted a little in each image."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.zeros((size, size, 3), np.uint8)
        pixels[..., 2] = 200
        a, b = size // 4, 3 * size // 4
        pixels[a:b, a + i : b + i, 0] = 255
        Image.fromarray(pixels).save(folder / f"{i}-red square.png")


# -- the two workers ---------------------------------------------------------------------------


def _pixels(images: Path, resolution: int) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    tensors = []
    for path in sorted(images.glob("*.png")):
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
        tensors.append(torch.from_numpy(np.asarray(rgb, np.float32) / 127.5 - 1).permute(2, 0, 1))
    return torch.stack(tensors)


def run_recipe(args: argparse.Namespace, device: str, dtype: Any) -> list[float]:
    """The diffusers recipe's training steps (see the module docstring); step end times."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(args.folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    noise_scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    # setup: placeholder tokens, resized table, rows copied from the init token
    placeholders = ["<tok>"] + [f"<tok>_{i}" for i in range(1, args.vectors)]
    tokenizer.add_tokens(placeholders)
    init_id = tokenizer.encode("cat", add_special_tokens=False)[0]
    ids = tokenizer.convert_tokens_to_ids(placeholders)
    text_encoder.resize_token_embeddings(len(tokenizer))
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token in ids:
            table[token] = table[init_id].clone()
    # what trains
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    inner = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 flattened it
    inner.encoder.requires_grad_(False)
    inner.final_layer_norm.requires_grad_(False)
    inner.embeddings.position_embedding.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        text_encoder.get_input_embeddings().parameters(),
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=1e-2,
        eps=1e-8,
    )
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    # precision
    text_encoder.to(device).train()
    unet.to(device, dtype=dtype)
    vae.to(device, dtype=dtype)
    original = text_encoder.get_input_embeddings().weight.data.clone()
    keep = torch.ones(len(tokenizer), dtype=torch.bool)
    keep[min(ids) : max(ids) + 1] = False
    pixels = _pixels(Path(args.images), args.resolution)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)
    generator = torch.Generator().manual_seed(0)
    prompt = " ".join(placeholders)
    ends = []
    for step in range(args.steps):
        # data: a batch of images, flipped with p = 0.5, and their captions
        pick = torch.randint(len(pixels), (args.batch,), generator=generator)
        batch = pixels[pick]
        flip = torch.rand(args.batch, generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
        captions = [
            TEMPLATES[(step + i) % len(TEMPLATES)].format(prompt) for i in range(args.batch)
        ]
        input_ids = tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        # one step
        with autocast:
            latents = vae.encode(batch.to(device, dtype=dtype)).latent_dist.sample().detach()
            latents = latents * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (args.batch,), device=device
            ).long()
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(input_ids)[0].to(dtype=dtype)
            prediction = unet(noisy, timesteps, hidden).sample
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        with torch.no_grad():
            text_encoder.get_input_embeddings().weight[keep] = original[keep]
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    return ends


def run_tireg(args: argparse.Namespace, device: str, dtype: Any) -> list[float]:
    """``tireg train``'s loop on the same folder; step end times (from its step hook)."""
    import torch

    from tireg.pipelines.loading import load_model
    from tireg.train.loop import Hooks, train
    from tireg.train.model import from_pipeline
    from tireg.train.settings import TrainSettings

    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    loaded = load_model(Path(args.folder), device=device, dtype=name)
    settings = TrainSettings(
        images=Path(args.images),
        name="tok",
        init_text="cat",
        vectors=args.vectors,
        steps=args.steps,
        lr="1e-4",  # the recipe's default rate, constant
        batch_size=args.batch,
        resolution=args.resolution,
        template="subject",
        flip=0.5,
        latent_sampling="random",  # a fresh latent sample per step, as the recipe's
        precision=name,
        save_every=10**9,
        preview_every=0,
    )
    ends: list[float] = []

    def on_step(_: object) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as run_dir:
        train(settings, from_pipeline(loaded.pipe), Path(run_dir), hooks=Hooks(on_step=on_step))
    return ends


def worker(args: argparse.Namespace) -> None:
    """One side, in this process: prints a JSON line of its figures."""
    import torch

    device = "cuda" if args.gpu_sd15 else "cpu"
    dtype = torch.bfloat16 if args.gpu_sd15 else torch.float32
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _rss_bytes()
    started = time.perf_counter()
    ends = (run_recipe if args.worker == "recipe" else run_tireg)(args, device, dtype)
    warm = ends[2:]
    figures = {
        "side": args.worker,
        "steps_per_s": (len(warm) - 1) / (warm[-1] - warm[0]),
        "setup_s": ends[0] - started,
        "total_s": ends[-1] - started,
        "peak_memory_bytes": torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before,
        "memory_kind": "torch.cuda.max_memory_allocated"
        if device == "cuda"
        else "peak RSS (ru_maxrss) minus RSS before loading",
    }
    print(json.dumps(figures))


# -- the driver --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-sd15", action="store_true", help="SD 1.5 at 512 px, bf16, batch 4")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--vectors", type=int, default=4)
    parser.add_argument("--worker", choices=("recipe", "tireg"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    if args.gpu_sd15 and not torch.cuda.is_available():
        print("skipped: --gpu-sd15 needs a CUDA device and none is available")
        return
    steps = args.steps or (60 if args.gpu_sd15 else 20)
    batch, resolution = (4, 512) if args.gpu_sd15 else (1, 128)
    with tempfile.TemporaryDirectory() as tmp:
        folder, images = Path(tmp) / "model", Path(tmp) / "images"
        os.environ["TIREG_HOME"] = str(Path(tmp) / "home")
        dtype = torch.bfloat16 if args.gpu_sd15 else torch.float32
        build_model(folder, sd15=args.gpu_sd15, dtype=dtype)
        write_images(images, 4, resolution)
        common = [
            "--folder", str(folder), "--images", str(images), "--steps", str(steps),
            "--batch", str(batch), "--resolution", str(resolution),
            "--vectors", str(args.vectors), *(["--gpu-sd15"] if args.gpu_sd15 else []),
        ]  # fmt: skip
        results = {}
        for side in ("recipe", "tireg"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", side, *common],
                capture_output=True,
                text=True,
                check=False,
                env=os.environ,
            )
            if out.returncode != 0:
                sys.exit(f"the {side} worker failed:\n{out.stderr[-3000:]}")
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    recipe, tireg = results["recipe"], results["tireg"]
    where = "CUDA, SD 1.5 architecture" if args.gpu_sd15 else "CPU, small random SD 1.x"
    print(
        f"{where}: {resolution}x{resolution}, batch {batch}, "
        f"{'bf16' if args.gpu_sd15 else 'fp32'}, {steps} steps, {args.vectors} vectors, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("recipe reproduces:")
    for point in RECIPE_POINTS:
        print(f"  - {point}")
    for side in (recipe, tireg):
        print(
            f"{side['side']:>7}: {side['steps_per_s']:.3f} steps/s, peak memory "
            f"{side['peak_memory_bytes'] / 2**20:.1f} MiB ({side['memory_kind']}), "
            f"setup {side['setup_s']:.2f} s, total {side['total_s']:.2f} s"
        )
    speed = tireg["steps_per_s"] / recipe["steps_per_s"]
    memory = tireg["peak_memory_bytes"] / recipe["peak_memory_bytes"]
    print(
        f" ratios: {speed:.2f}x steps/s (target >= 2x), {memory:.2f}x peak memory (target <= 0.6x)"
    )


if __name__ == "__main__":
    main()
