"""A1111 sampler names and schedule types, mapped to diffusers schedulers.

A1111 names its samplers after k-diffusion functions (``modules/sd_samplers_kdiffusion.py``,
``samplers_k_diffusion``) plus a few timestep samplers (``modules/sd_samplers_timesteps.py``:
DDIM, PLMS, UniPC); since 1.9 the sigma schedule is a separate "Schedule type"
(``modules/sd_schedulers.py``, ``schedulers``) and "Automatic" means the sampler's own default
(its ``'scheduler'`` option, else the model's uniform sigmas). The diffusers equivalents follow
diffusers' scheduler overview table (reference generator-trainer.md §3), with these known gaps,
which make images close to A1111's but not bit-identical:

* A1111 interpolates sigmas in log-sigma at fractional timesteps (k-diffusion ``get_sigmas``);
  diffusers interpolates sigma linearly.
* DPM2, DPM2 a (and DPM++ 3M SDE) discard the next-to-last sigma in A1111
  (``discard_next_to_last_sigma``); diffusers' KDPM2 schedulers have no such switch.
* DPM++ 2M SDE in A1111 draws its step noise from a Brownian tree; diffusers'
  ``DPMSolverMultistepScheduler`` draws plain Gaussian noise from the generator.
* DPM++ SDE maps to ``DPMSolverSDEScheduler``, the port of k-diffusion ``sample_dpmpp_sde``,
  which needs the optional ``torchsde`` package; LMS and the Beta schedule need ``scipy``.

Samplers A1111 has but diffusers cannot reproduce (DPM++ 2S a, DPM++ 3M SDE, DPM fast, DPM
adaptive, Restart, LCM, DDIM CFG++) are known names refused with a line that says so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tireg.pipelines.errors import SamplerError

#: k-diffusion samplers start at sigma_max over timesteps linspace(999, 0, n): diffusers "linspace"
_K_SPACING: Mapping[str, Any] = MappingProxyType({"timestep_spacing": "linspace"})
#: ldm's DDIM/PLMS "uniform" discretisation, range(0, 1000, 1000 // n) + 1: diffusers "leading"
_LDM_SPACING: Mapping[str, Any] = MappingProxyType(
    {"timestep_spacing": "leading", "steps_offset": 1}
)


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler: its label, aliases, the diffusers scheduler and what A1111 flags it with.

    ``default_schedule`` is A1111's ``'scheduler'`` option, what "Automatic" becomes;
    ``uses_ensd`` marks the samplers whose infotext carries ENSD (their step noise comes from
    the seed's generator); ``brownian`` those whose step noise comes from a seeded Brownian tree.
    """

    label: str
    scheduler_class: str
    options: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    default_schedule: str = "Automatic"
    uses_ensd: bool = False
    brownian: bool = False
    discard_next_to_last_sigma: bool = False


SAMPLERS: tuple[Sampler, ...] = (
    Sampler(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        {**_K_SPACING, "algorithm_type": "dpmsolver++", "solver_order": 2},
        ("k_dpmpp_2m",),
        default_schedule="Karras",
    ),
    Sampler(
        "DPM++ SDE",
        "DPMSolverSDEScheduler",
        _K_SPACING,
        ("k_dpmpp_sde",),
        default_schedule="Karras",
        brownian=True,
    ),
    Sampler(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {**_K_SPACING, "algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"},
        ("k_dpmpp_2m_sde",),
        default_schedule="Exponential",
        brownian=True,
    ),
    Sampler(
        "DPM++ 2M SDE Heun",
        "DPMSolverMultistepScheduler",
        {**_K_SPACING, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        ("k_dpmpp_2m_sde_heun",),
        default_schedule="Exponential",
        brownian=True,
    ),
    Sampler(
        "Euler a",
        "EulerAncestralDiscreteScheduler",
        _K_SPACING,
        ("k_euler_a", "k_euler_ancestral"),
        uses_ensd=True,
    ),
    Sampler("Euler", "EulerDiscreteScheduler", _K_SPACING, ("k_euler",)),
    Sampler("LMS", "LMSDiscreteScheduler", _K_SPACING, ("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", _K_SPACING, ("k_heun",)),
    Sampler(
        "DPM2",
        "KDPM2DiscreteScheduler",
        _K_SPACING,
        ("k_dpm_2",),
        default_schedule="Karras",
        discard_next_to_last_sigma=True,
    ),
    Sampler(
        "DPM2 a",
        "KDPM2AncestralDiscreteScheduler",
        _K_SPACING,
        ("k_dpm_2_a",),
        default_schedule="Karras",
        uses_ensd=True,
        discard_next_to_last_sigma=True,
    ),
    Sampler("DDIM", "DDIMScheduler", _LDM_SPACING),
    Sampler("PLMS", "PNDMScheduler", {**_LDM_SPACING, "skip_prk_steps": True}),
    # A1111's UniPC defaults (options uni_pc_variant, uni_pc_order, uni_pc_lower_order_final)
    Sampler(
        "UniPC",
        "UniPCMultistepScheduler",
        {
            **_K_SPACING,
            "solver_type": "bh1",
            "solver_order": 3,
            "lower_order_final": True,
            "predict_x0": True,
        },
    ),
)

#: A1111 samplers with no diffusers scheduler that behaves like them
UNSUPPORTED_SAMPLERS: tuple[str, ...] = (
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "LCM",
    "DDIM CFG++",
)

#: A1111 schedule types (``sd_schedulers.schedulers``) -> diffusers config overrides; ``None``
#: means A1111 has it but diffusers has no equivalent sigma schedule.
SCHEDULES: Mapping[str, Mapping[str, Any] | None] = MappingProxyType(
    {
        "Automatic": {},
        "Uniform": {},
        "Karras": {"use_karras_sigmas": True},
        "Exponential": {"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
        "SGM Uniform": {"timestep_spacing": "trailing"},
        "Simple": {"timestep_spacing": "trailing"},
        "Beta": {"use_beta_sigmas": True, "timestep_spacing": "linspace"},
        "Polyexponential": None,
        "KL Optimal": None,
        "Align Your Steps": None,
        "Normal": None,
        "DDIM": None,
    }
)
#: optional packages some diffusers schedulers and sigma schedules import
_NEEDS = {"DPMSolverSDEScheduler": "torchsde", "LMSDiscreteScheduler": "scipy", "Beta": "scipy"}
#: A1111's own aliases and internal names of schedule types
_SCHEDULE_ALIASES = {"sgmuniform": "SGM Uniform", "sgm_uniform": "SGM Uniform"}


@dataclass(frozen=True)
class SamplerChoice:
    """A resolved sampler and schedule type, with the labels A1111's infotext uses."""

    sampler: Sampler
    schedule: str

    @property
    def overrides(self) -> dict[str, Any]:
        """The diffusers config keys this choice sets on top of the pipeline's own."""
        schedule = SCHEDULES[self.schedule] or {}
        return {**self.sampler.options, **schedule}

    @property
    def infotext_schedule(self) -> str:
        """The "Schedule type" A1111 writes: "Automatic" when it is the sampler's default."""
        return "Automatic" if self.schedule == self.sampler.default_schedule else self.schedule


def sampler_names() -> list[str]:
    """The A1111 sampler labels tireg can render with."""
    return [s.label for s in SAMPLERS]


def _by_name() -> dict[str, Sampler]:
    table: dict[str, Sampler] = {}
    for sampler in SAMPLERS:
        for name in (sampler.label, *sampler.aliases):
            table[name.casefold()] = sampler
    return table


def _schedule_label(name: str) -> str:
    key = name.strip().casefold()
    for label in SCHEDULES:
        if label.casefold() == key:
            return label
    if key in _SCHEDULE_ALIASES:
        return _SCHEDULE_ALIASES[key]
    valid = ", ".join(label for label, value in SCHEDULES.items() if value is not None)
    raise SamplerError(f"unknown schedule type {name!r}", hint=f"use one of: {valid}")


def resolve(sampler: str, schedule: str = "Automatic") -> SamplerChoice:
    """Resolve names as A1111 ≥1.9 does: case-insensitive, old "X Karras" names split in two.

    A1111 (``modules/sd_samplers.py``, ``get_sampler_and_scheduler``) strips a trailing schedule
    label (or internal name, or alias) from the sampler name, and that schedule wins over the
    one given ("DPM++ 2M Karras" -> "DPM++ 2M" + "Karras"); "Automatic" becomes the sampler's
    own default schedule.
    """
    table = _by_name()
    name = " ".join(sampler.split())
    schedule_label = _schedule_label(schedule)
    suffixes = {label.casefold(): label for label in SCHEDULES} | {
        alias: label for alias, label in _SCHEDULE_ALIASES.items()
    }
    for suffix, label in suffixes.items():
        if name.casefold().endswith(" " + suffix):
            name, schedule_label = name[: -len(suffix) - 1], label
            break
    found = table.get(name.casefold())
    if found is None:
        unsupported = {u.casefold(): u for u in UNSUPPORTED_SAMPLERS}
        valid = ", ".join(sampler_names())
        if name.casefold() in unsupported:
            raise SamplerError(
                f"A1111's sampler {unsupported[name.casefold()]!r} has no diffusers equivalent",
                hint=f"use one of: {valid}",
            )
        raise SamplerError(f"unknown sampler {sampler!r}", hint=f"use one of: {valid}")
    if schedule_label == "Automatic":
        schedule_label = found.default_schedule
    if SCHEDULES[schedule_label] is None:
        valid = ", ".join(label for label, value in SCHEDULES.items() if value is not None)
        raise SamplerError(
            f"A1111's schedule type {schedule_label!r} has no diffusers equivalent",
            hint=f"use one of: {valid}",
        )
    return SamplerChoice(found, schedule_label)


def build_scheduler(
    config: Mapping[str, Any], sampler: str, schedule: str = "Automatic"
) -> tuple[Any, SamplerChoice]:
    """A diffusers scheduler for an A1111 sampler, built from the pipeline's scheduler config.

    The pipeline's config keeps what belongs to the model (betas, prediction type, number of
    training steps); the sampler and schedule set only how it samples.
    """
    import diffusers

    choice = resolve(sampler, schedule)
    for part in (choice.sampler.scheduler_class, choice.schedule):
        package = _NEEDS.get(part)
        if package and importlib.util.find_spec(package) is None:
            raise SamplerError(
                f"sampler {choice.sampler.label!r} with schedule type {choice.schedule!r} "
                f"needs the {package} package",
                hint=f"pip install {package}, or choose another sampler",
            )
    cls = getattr(diffusers, choice.sampler.scheduler_class)
    overrides = choice.overrides
    scheduler = cls.from_config(dict(config), **overrides)
    missing = sorted(key for key in overrides if key not in scheduler.config)
    if missing:
        raise SamplerError(
            f"sampler {choice.sampler.label!r} has no {choice.schedule!r} schedule in diffusers"
            f" ({cls.__name__} lacks {', '.join(missing)})",
            hint="choose schedule type Automatic or another sampler",
        )
    return scheduler, choice
