"""Render images from A1111 settings on a loaded diffusers pipeline.

The pipeline is called with ``prompt_embeds=`` (A1111 prompt syntax and embeddings, from
:mod:`tireg.pipelines.prompt`) and ``latents=`` (A1111's per-image seeds, from
:mod:`tireg.pipelines.noise`), never with prompt strings or a bare seed, so what diffusers adds
of its own is only the sampling loop of the chosen scheduler (:mod:`tireg.pipelines.samplers`).
Images are batched up to ``batch_size``: each image keeps its own seed and generator, so a
batch gives the same pictures as rendering them one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tireg.pipelines.errors import RenderError, is_out_of_memory
from tireg.pipelines.noise import seeded_noise
from tireg.pipelines.prompt import encode_prompts
from tireg.pipelines.samplers import SamplerChoice, build_scheduler

if TYPE_CHECKING:
    from PIL import Image

#: called after every denoising step: (indices of the images in this batch, step done, steps)
StepCallback = Callable[[tuple[int, ...], int, int], None]


@dataclass(frozen=True)
class RenderSettings:
    """The A1111 settings of one render (what the infotext records), checked."""

    steps: int
    sampler: str
    schedule: str
    cfg: float
    width: int
    height: int
    clip_skip: int
    rng: str
    ensd: int


def uses_sdpa(pipe: Any) -> bool:
    """True when every attention layer of the UNet runs torch's scaled_dot_product_attention.

    diffusers picks ``AttnProcessor2_0`` by default with torch 2; this says whether a loaded
    pipeline really got it (a custom or legacy processor would be much slower).
    """
    processors = pipe.unet.attn_processors.values()
    return bool(processors) and all("2_0" in type(p).__name__ for p in processors)


def _check(prompts: Sequence[str], seeds: Sequence[int], settings: RenderSettings) -> None:
    if not seeds:
        raise RenderError("no seeds to render", hint="give --seed or --seeds")
    if len(prompts) not in (1, len(seeds)):
        raise RenderError(f"{len(prompts)} prompts for {len(seeds)} seeds: give one, or one a seed")
    if settings.width % 8 or settings.height % 8 or settings.width <= 0 or settings.height <= 0:
        raise RenderError(
            f"size {settings.width}x{settings.height} is not a multiple of 8",
            hint="use e.g. 512x512 or 768x768",
        )
    if settings.steps < 1:
        raise RenderError(f"steps must be 1 or more, not {settings.steps}")


def _oom(settings: RenderSettings, batch_size: int, dtype: Any, device: Any) -> RenderError:
    """One line naming every setting that lowers the memory a render takes, as it is now."""
    import torch

    lower = [f"--batch-size (now {batch_size})"] if batch_size > 1 else []
    lower.append(f"--size (now {settings.width}x{settings.height})")
    hint = "lower " + " or ".join(lower)
    if dtype == torch.float32:
        hint += ", or use --dtype bf16 (or fp16 on a GPU): half the memory of fp32"
    return RenderError(
        f"out of memory on {device} rendering {settings.width}x{settings.height}, "
        f"batch size {batch_size}",
        hint=hint,
    )


def render(
    pipe: Any,
    *,
    prompts: Sequence[str],
    negative: str = "",
    seeds: Sequence[int],
    steps: int = 20,
    sampler: str = "Euler a",
    schedule: str = "Automatic",
    cfg: float = 7.0,
    width: int = 512,
    height: int = 512,
    clip_skip: int = 1,
    rng: str = "cpu",
    ensd: int = 0,
    batch_size: int = 1,
    progress: StepCallback | None = None,
) -> list[Image.Image]:
    """One image per seed; ``prompts`` holds one prompt for all, or one per seed.

    The pipeline's scheduler is swapped for the sampler's for the call and put back after.
    """
    settings = RenderSettings(steps, sampler, schedule, cfg, width, height, clip_skip, rng, ensd)
    _check(prompts, seeds, settings)
    if batch_size < 1:
        raise RenderError(f"batch size must be 1 or more, not {batch_size}")
    per_image = list(prompts) * len(seeds) if len(prompts) == 1 else list(prompts)
    scheduler, choice = build_scheduler(pipe.scheduler.config, settings.sampler, settings.schedule)
    original = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        embeds = encode_prompts(pipe, per_image, negative, clip_skip=settings.clip_skip)
        images: list[Image.Image] = []
        for start in range(0, len(seeds), batch_size):
            rows = slice(start, min(start + batch_size, len(seeds)))
            images.extend(
                _render_batch(
                    pipe, embeds.pipeline_kwargs(rows), seeds, rows, settings, choice, progress
                )
            )
        return images
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise _oom(settings, batch_size, pipe.unet.dtype, pipe.device.type) from None
    finally:
        pipe.scheduler = original


def _render_batch(
    pipe: Any,
    embed_kwargs: dict[str, Any],
    seeds: Sequence[int],
    rows: slice,
    settings: RenderSettings,
    choice: SamplerChoice,
    progress: StepCallback | None,
) -> list[Image.Image]:
    batch_seeds = list(seeds[rows])
    indices = tuple(range(len(seeds)))[rows]
    scale = pipe.vae_scale_factor
    shape = (
        int(pipe.unet.config.in_channels),
        settings.height // scale,
        settings.width // scale,
    )
    noise = seeded_noise(
        batch_seeds, shape, rng=settings.rng, device=pipe.device, ensd=settings.ensd
    )
    if choice.sampler.brownian and hasattr(pipe.scheduler, "noise_sampler_seed"):
        # A1111 seeds one Brownian tree per image with the image's seed
        pipe.scheduler.noise_sampler_seed = batch_seeds

    def on_step(_pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if progress is not None:
            progress(indices, step + 1, settings.steps)
        return kwargs

    out = pipe(
        **embed_kwargs,
        latents=noise.latents.to(dtype=pipe.unet.dtype),
        generator=noise.generators,
        num_inference_steps=settings.steps,
        guidance_scale=settings.cfg,
        width=settings.width,
        height=settings.height,
        callback_on_step_end=on_step,
        output_type="pil",
    )
    return list(out.images)
