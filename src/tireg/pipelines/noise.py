"""Seeds to noise, the way A1111 draws it, so a seed in an infotext means the same picture.

A1111 (``modules/rng.py``, ``ImageRNG`` and ``create_generator``) makes one
``torch.Generator`` per image, seeded with that image's seed (``seed + i`` for the i-th image of
a run), on the CPU when "RNG" is "CPU" and on the GPU otherwise. Each generator first draws the
image's initial noise, ``randn((4, H/8, W/8))`` in float32; the draws are stacked. When
"Eta noise seed delta" (ENSD) is set, the generators are then re-created with
``seed + ENSD``; all later step noise comes from them, and without ENSD the same generators
simply continue.

What diffusers can and cannot reproduce of that:

* The initial latents: exactly, for "RNG: CPU" (drawn here and passed as ``latents=``; diffusers
  multiplies them by ``init_noise_sigma`` as k-diffusion multiplies by ``sigmas[0]``).
  "RNG: GPU" needs the same GPU model and CUDA version to give the same numbers.
* Step noise of ancestral samplers (Euler a, DPM2 a, and DDIM with eta > 0): diffusers draws it
  from the pipeline's ``generator``; a list gives one draw per image, as A1111 does, so the
  generators returned here (ENSD applied) continue A1111's sequence.
* Brownian samplers: ``DPMSolverSDEScheduler`` (DPM++ SDE) takes per-image Brownian-tree seeds
  through ``noise_sampler_seed``, which :func:`tireg.pipelines.render.render` sets to the images'
  seeds as A1111 does; DPM++ 2M SDE in diffusers uses Gaussian step noise instead of a tree, so
  its images differ from A1111's.
* "RNG: NV" (A1111's CPU port of CUDA Philox) is not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tireg.pipelines.errors import RenderError

if TYPE_CHECKING:
    import torch

Rng = Literal["cpu", "gpu"]


@dataclass
class SeededNoise:
    """Initial latents for a batch of seeds, and the generators that continue their sequence."""

    latents: torch.Tensor
    generators: list[torch.Generator]


def generator_device(rng: str, device: str | torch.device) -> str:
    """Where the seed generators live: the CPU for ``rng="cpu"`` (and on MPS, as A1111 does)."""
    import torch

    if rng not in ("cpu", "gpu"):
        raise RenderError(f"unknown RNG source {rng!r}", hint="use cpu or gpu")
    dev = torch.device(device)
    return "cpu" if rng == "cpu" or dev.type == "mps" else str(dev)


def seeded_noise(
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    *,
    rng: str = "cpu",
    device: str | torch.device = "cpu",
    ensd: int = 0,
) -> SeededNoise:
    """One generator per seed draws that image's ``shape`` noise in float32 (A1111's first draw).

    The latents are stacked on ``device``; the returned generators are re-seeded with
    ``seed + ensd`` when ``ensd`` is not 0, else they are the ones that drew the latents.
    """
    import torch

    where = generator_device(rng, device)
    generators = [torch.Generator(where).manual_seed(int(seed)) for seed in seeds]
    draws = [torch.randn(shape, generator=g, device=where, dtype=torch.float32) for g in generators]
    latents = torch.stack(draws).to(device)
    if ensd:
        generators = [torch.Generator(where).manual_seed(int(seed) + ensd) for seed in seeds]
    return SeededNoise(latents=latents, generators=generators)
