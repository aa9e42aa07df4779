"""A1111 sampler names and schedule types -> diffusers schedulers, built from real model configs.

The configs are SD 1.5's and SDXL's ``scheduler_config.json`` values (reference
generator-trainer.md §7): PNDM with ``steps_offset`` 1, and Euler with "leading" spacing.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tireg.pipelines.errors import SamplerError
from tireg.pipelines.samplers import (
    SAMPLERS,
    SCHEDULES,
    UNSUPPORTED_SAMPLERS,
    build_scheduler,
    resolve,
    sampler_names,
)

BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SD15 = {
    "_class_name": "PNDMScheduler",
    **BETAS,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
    "prediction_type": "epsilon",
}
SDXL = {
    "_class_name": "EulerDiscreteScheduler",
    **BETAS,
    "num_train_timesteps": 1000,
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}


def _missing(scheduler_class: str) -> str | None:
    """The optional package a scheduler needs and this environment lacks, if any."""
    package = {"DPMSolverSDEScheduler": "torchsde", "LMSDiscreteScheduler": "scipy"}.get(
        scheduler_class
    )
    return package if package and importlib.util.find_spec(package) is None else None


@pytest.mark.parametrize("config", [SD15, SDXL], ids=["sd15", "sdxl"])
@pytest.mark.parametrize("name", sampler_names())
def test_every_sampler_builds(name: str, config: dict[str, Any]) -> None:
    spec = next(s for s in SAMPLERS if s.label == name)
    missing = _missing(spec.scheduler_class)
    if missing:
        with pytest.raises(SamplerError) as err:
            build_scheduler(config, name)
        assert f"needs the {missing} package" in str(err.value) and "\n" not in str(err.value)
        return
    scheduler, choice = build_scheduler(config, name)
    assert type(scheduler).__name__ == spec.scheduler_class
    assert choice.sampler is spec
    for key, value in choice.overrides.items():
        assert scheduler.config[key] == value, key
    # the model's own facts come from its config
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.prediction_type == "epsilon"
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10


def test_v_prediction_is_kept() -> None:
    scheduler, _ = build_scheduler({**SD15, "prediction_type": "v_prediction"}, "Euler a")
    assert scheduler.config.prediction_type == "v_prediction"


def test_names_are_case_insensitive_and_take_aliases() -> None:
    assert resolve("euler A").sampler.label == "Euler a"
    assert resolve("  dpm++   2m ").sampler.label == "DPM++ 2M"
    assert resolve("k_euler_a").sampler.label == "Euler a"
    assert resolve("Euler", "karras").schedule == "Karras"
    assert resolve("Euler", "SGMUniform").schedule == "SGM Uniform"


def test_automatic_is_the_samplers_own_default() -> None:
    assert resolve("DPM++ 2M").schedule == "Karras"
    assert resolve("DPM++ 2M SDE").schedule == "Exponential"
    assert resolve("DPM2 a").schedule == "Karras"
    assert resolve("Euler a").schedule == "Automatic"
    assert resolve("DPM++ 2M", "Uniform").schedule == "Uniform"
    # the infotext says "Automatic" for a sampler's default, as A1111's does
    assert resolve("DPM++ 2M", "Karras").infotext_schedule == "Automatic"
    assert resolve("DPM++ 2M", "Exponential").infotext_schedule == "Exponential"
    assert resolve("Euler", "Uniform").infotext_schedule == "Uniform"


def test_old_names_carry_their_schedule() -> None:
    choice = resolve("DPM++ 2M Karras")
    assert (choice.sampler.label, choice.schedule) == ("DPM++ 2M", "Karras")
    choice = resolve("dpm++ 2m sde exponential")
    assert (choice.sampler.label, choice.schedule) == ("DPM++ 2M SDE", "Exponential")
    scheduler, _ = build_scheduler(SD15, "Euler Karras")
    assert type(scheduler).__name__ == "EulerDiscreteScheduler"
    assert scheduler.config.use_karras_sigmas is True
    # the old suffix wins over the schedule type given, as in A1111
    assert resolve("DPM++ 2M Karras", "Exponential").schedule == "Karras"
    assert resolve("Euler sgm_uniform").schedule == "SGM Uniform"


def test_k_samplers_use_linspace_and_ldm_samplers_leading() -> None:
    euler, _ = build_scheduler(SDXL, "Euler")
    assert euler.config.timestep_spacing == "linspace"
    euler.set_timesteps(20)
    # A1111 starts k-diffusion at sigma_max, which "linspace" gives (SDXL's "leading" does not)
    assert float(euler.init_noise_sigma) == pytest.approx(float(euler.sigmas.max()))
    ddim, _ = build_scheduler(SDXL, "DDIM")
    assert (ddim.config.timestep_spacing, ddim.config.steps_offset) == ("leading", 1)
    ddim.set_timesteps(20)
    assert int(ddim.timesteps[-1]) == 1 and int(ddim.timesteps[0]) == 951


def test_unipc_as_a1111() -> None:
    scheduler, _ = build_scheduler(SD15, "UniPC")
    assert scheduler.config.solver_type == "bh1"
    assert scheduler.config.solver_order == 3
    assert scheduler.config.lower_order_final is True


def test_a1111_flags() -> None:
    flags = {s.label: s for s in SAMPLERS}
    assert {n for n, s in flags.items() if s.uses_ensd} == {"Euler a", "DPM2 a"}
    assert {n for n, s in flags.items() if s.discard_next_to_last_sigma} == {"DPM2", "DPM2 a"}
    assert flags["DPM++ SDE"].brownian


def test_unknown_sampler_lists_the_valid_ones() -> None:
    with pytest.raises(SamplerError) as err:
        resolve("Eulerr")
    line = str(err.value)
    assert "\n" not in line and "'Eulerr'" in line
    assert all(name in line for name in sampler_names())


@pytest.mark.parametrize("name", UNSUPPORTED_SAMPLERS)
def test_known_but_unsupported_samplers_say_so(name: str) -> None:
    with pytest.raises(SamplerError, match="no diffusers equivalent"):
        resolve(name.upper())


def test_schedule_errors_are_one_line() -> None:
    with pytest.raises(SamplerError, match="unknown schedule type 'Karas'"):
        resolve("Euler", "Karas")
    with pytest.raises(SamplerError, match="'Align Your Steps' has no diffusers equivalent"):
        resolve("Euler", "Align Your Steps")
    # Euler a has no Karras sigmas in diffusers: said, not silently ignored
    with pytest.raises(SamplerError, match="no 'Karras' schedule") as err:
        build_scheduler(SD15, "Euler a", "Karras")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("schedule", "key"),
    [
        ("Karras", "use_karras_sigmas"),
        ("Exponential", "use_exponential_sigmas"),
        ("Beta", "use_beta_sigmas"),
    ],
)
def test_schedule_types_set_diffusers_sigmas(schedule: str, key: str) -> None:
    assert SCHEDULES[schedule] is not None
    if schedule == "Beta" and importlib.util.find_spec("scipy") is None:
        with pytest.raises(SamplerError, match="needs the scipy package"):
            build_scheduler(SD15, "Euler", schedule)
        return
    scheduler, choice = build_scheduler(SD15, "Euler", schedule)
    assert choice.schedule == schedule
    assert scheduler.config[key] is True
    scheduler.set_timesteps(8)
    assert len(scheduler.sigmas) == 9
