"""The training loop: read it top to bottom.

1. Parse the schedules, read the images, attach the vectors, encode every image once.
2. Build AdamW over the vectors alone (A1111's ``train_embedding``: ``AdamW([embedding.vec],
   weight_decay=0.0)``), a grad scaler for fp16, and the run's two generators (data, noise).
3. Continue from a checkpoint when one is given.
4. Each step: the learning rate (and clip value) for this step, ``grad_accum`` micro-batches of
   noise-prediction loss, clipping, the optimizer step; then the step's records, DVAR's check,
   a checkpoint every ``save_every`` steps and a preview every ``preview_every``.
5. A last checkpoint, and the encoders get their own token tables back.

The loss is the one of both recipes (diffusers ``examples/textual_inversion/textual_inversion.py``
``main``, A1111 through the LDM's ``p_losses``): uniform timesteps over the training schedule,
MSE between the UNet's prediction and the noise (epsilon) or the velocity (v-prediction).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tireg.pipelines.errors import is_out_of_memory
from tireg.train import checkpointing
from tireg.train.compiling import CompiledModule
from tireg.train.data import (
    Batch,
    CachedImage,
    DataOrder,
    draw_batch,
    encode_images,
    load_template,
    read_images,
)
from tireg.train.dvar import VarianceStopper
from tireg.train.errors import RunStateError, ScheduleError
from tireg.train.model import SDXL, TrainModel
from tireg.train.schedules import Schedule
from tireg.train.settings import TrainSettings
from tireg.train.vectors import MARKER, TrainedEncoder, attach, detach

CLIP_MODES = ("value", "norm")


@dataclass
class StepRecord:
    """What one optimizer step did."""

    step: int
    loss: float
    lr: float
    fixed_batch_loss: float | None = None


@dataclass
class Hooks:
    """What the caller does while the run goes (records, progress bar, previews)."""

    on_start: Callable[[int], None] = lambda step: None  # inputs checked; the run begins
    on_step: Callable[[StepRecord], None] = lambda record: None
    on_save: Callable[[int, float, dict[str, np.ndarray], Path], None] = lambda *a: None
    on_preview: Callable[[int, dict[str, np.ndarray]], None] = lambda *a: None
    on_warning: Callable[[str], None] = lambda line: None  # one line; the run goes on


@dataclass
class RunResult:
    """How a run ended."""

    step: int
    loss: float | None
    stop_reason: str
    vectors: dict[str, np.ndarray]
    checkpoints: list[Path] = field(default_factory=list)


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the forward pass: ``auto`` is bf16 on a GPU that has it, fp16 on other GPUs,
    fp32 on a CPU (CPU autocast is slower than fp32 for these models)."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def parse_clip(text: str | None, steps: int) -> tuple[str, Schedule] | None:
    """``value:0.1`` or ``norm:1.0`` (the number may be an A1111 ``rate:step`` schedule)."""
    if not text:
        return None
    mode, _, schedule = text.partition(":")
    if mode not in CLIP_MODES or not schedule:
        raise ScheduleError(
            f"--clip-grad {text!r}: expected value:SCHEDULE or norm:SCHEDULE",
            hint='e.g. "value:0.1" or "norm:1.0"',
        )
    return mode, Schedule.parse(schedule, steps, what="clip")


def train(
    settings: TrainSettings,
    model: TrainModel,
    run_dir: Path,
    *,
    resume_from: Path | None = None,
    hooks: Hooks | None = None,
    processes: int = 1,
) -> RunResult:
    """Train ``settings.vectors`` new vectors on ``model``; checkpoints go under ``run_dir``.

    With ``processes`` > 1 (``accelerate launch`` / ``torchrun``, the process group already
    joined), every process draws the same global batch of ``batch_size x processes`` images,
    noise and timesteps from the same generators and runs its own rows of it; the vectors'
    gradients are averaged across processes, so every process takes the same step, and the run
    equals one process with the whole batch. Only the main process calls the hooks and writes.
    """
    rank = torch.distributed.get_rank() if processes > 1 else 0
    hooks = (hooks or Hooks()) if rank == 0 else Hooks()
    device = model.device
    dtype = compute_dtype(settings.precision, device)

    # 1. schedules, data, vectors, cached latents
    lr_schedule = Schedule.parse(settings.lr, settings.steps)
    clipping = parse_clip(settings.clip_grad, settings.steps)
    templates = load_template(settings.template)
    images = read_images(
        settings.images,
        resolution=settings.resolution,
        crop=settings.crop,
        alpha_weight=settings.alpha == "weight",
        multiple=model.latent_scale,
    )
    encoders = [
        attach(key, tokenizer, encoder, settings.init_text, settings.vectors)
        for key, tokenizer, encoder in model.encoders
    ]
    params = [trained.vectors for trained in encoders]
    cache = encode_images(
        images,
        model.vae,
        flip=settings.flip > 0,
        keep_std=settings.latent_sampling == "random",
        device=device,
    )

    # 2. optimizer, precision, speed options, generators
    _seed_everything(settings.seed)
    optimizer = torch.optim.AdamW(params, lr=lr_schedule.pieces[0][0], weight_decay=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = (
        torch.autocast(device.type, dtype=dtype)
        if dtype != torch.float32
        else contextlib.nullcontext()
    )
    unet = model.unet
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        for trained in encoders:
            _checkpointing(trained.encoder, "enable")()
            trained.encoder.train()  # transformers checkpoints only in training mode
    if settings.compile:
        unet = CompiledModule(unet, hooks.on_warning)
    data_generator = torch.Generator().manual_seed(settings.seed)
    noise_generator = torch.Generator(device).manual_seed(settings.seed + 1)
    order = DataOrder(len(cache), data_generator)
    stopper = (
        VarianceStopper(settings.early_stop_eps, settings.early_stop_window)
        if settings.early_stop
        else None
    )
    fixed = _fixed_batch(settings, model, cache, templates) if stopper else None

    def draw(indices: list[int], data: torch.Generator, noise: torch.Generator) -> Batch:
        return _draw(settings, model, cache, templates, indices, data, noise)

    # 3. continue a run
    step = 0
    if resume_from is not None:
        tensors, state = checkpointing.read_checkpoint(resume_from)
        _check_same_run(settings, state, resume_from)
        with torch.no_grad():
            for trained in encoders:
                trained.vectors.copy_(tensors[f"vectors.{trained.key}"])
        checkpointing.restore_optimizer(optimizer, tensors, state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        checkpointing.restore_rng(tensors, state["rng"])
        data_generator.set_state(tensors["generator.data"])
        noise_generator.set_state(tensors["generator.noise"])
        order.restore(state["data_order"], tensors["data_order"])
        if stopper is not None and "dvar.history" in tensors:
            stopper.history = tensors["dvar.history"].tolist()
        step = int(state["step"])

    saved: list[Path] = []  # the checkpoints written, each whole (the last is the good one)

    def save(loss: float) -> None:
        path = checkpointing.checkpoint_path(run_dir, step)
        tensors, state = _run_state(
            settings, encoders, optimizer, scaler, data_generator, noise_generator, order, stopper
        )
        checkpointing.write_checkpoint(path, tensors, {**state, "step": step, "loss": loss})
        saved.append(path)
        hooks.on_save(step, loss, _vectors(encoders), path)

    # 4. the steps (every input has been read and checked: the first file may be written)
    hooks.on_start(step)
    loss_value: float | None = None
    stop_reason = f"reached --steps {settings.steps}"
    try:
        while True:
            if step >= settings.steps:
                break
            lr = lr_schedule.value_at(step)
            if lr is None:
                stop_reason = f"the learning-rate schedule ended at step {step}"
                break
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_value = 0.0
            for _ in range(settings.grad_accum):
                whole = settings.batch_size * processes
                batch = draw(order.take(whole), data_generator, noise_generator)
                noise, timesteps = _noise(model, batch, noise_generator)
                mine = slice(rank * settings.batch_size, (rank + 1) * settings.batch_size)
                with autocast:
                    loss = _loss(
                        model,
                        unet,
                        encoders,
                        batch.rows(mine),
                        noise[mine],
                        timesteps[mine],
                        settings,
                    )
                scaler.scale(loss / settings.grad_accum).backward()
                loss_value += float(loss.detach()) / settings.grad_accum
            if processes > 1:
                loss_value = _average(params, loss_value, processes)
            if clipping is not None:
                # A1111 (textual_inversion.py, train_embedding) clips right after
                # scaler.scale(loss).backward() without scaler.unscale_, so under fp16 it clips
                # the loss-scaled gradient and its value means nothing; tireg unscales first,
                # which gives A1111's numbers whenever no scaler is active (fp32, bf16).
                scaler.unscale_(optimizer)
                mode, clip_schedule = clipping
                limit = clip_schedule.value_at(step) or 0.0
                if mode == "value":
                    torch.nn.utils.clip_grad_value_(params, limit)
                else:
                    torch.nn.utils.clip_grad_norm_(params, limit)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            record = StepRecord(step, loss_value, lr)
            should_stop = False
            if stopper is not None and fixed is not None:
                record.fixed_batch_loss = _fixed_loss(model, unet, encoders, fixed, settings)
                should_stop = stopper.update(record.fixed_batch_loss)
            hooks.on_step(record)
            if should_stop and stopper is not None:
                stop_reason = f"{stopper.reason()} at step {step}"
                break
            if step % settings.save_every == 0 and rank == 0:
                save(loss_value)
            if settings.preview_every and step % settings.preview_every == 0:
                hooks.on_preview(step, _vectors(encoders))

        # 5. the last checkpoint
        if rank == 0 and loss_value is not None and (not saved or saved[-1] != _at(run_dir, step)):
            save(loss_value)
        return RunResult(step, loss_value, stop_reason, _vectors(encoders), saved)
    except Exception as exc:
        # CPU, CUDA and Python allocation failures alike (see pipelines.errors.is_out_of_memory)
        if not is_out_of_memory(exc):
            raise
        raise RunStateError(
            f"out of memory after step {step}",
            path=saved[-1] if saved else resume_from,
            hint="the last checkpoint (this file) is intact; lower --batch-size (raising "
            "--grad-accum keeps the effective batch) or --resolution, or add "
            "--gradient-checkpointing or --precision bf16, and run the same command to continue",
        ) from None
    finally:
        detach(encoders)
        if settings.gradient_checkpointing:
            model.unet.disable_gradient_checkpointing()
            for trained in encoders:
                _checkpointing(trained.encoder, "disable")()
                trained.encoder.eval()


def _draw(
    settings: TrainSettings,
    model: TrainModel,
    cache: list[CachedImage],
    templates: list[str],
    indices: list[int],
    data: torch.Generator,
    noise: torch.Generator,
) -> Batch:
    """The images at ``indices`` as one batch, drawn as the settings say: the one way both the
    training steps and DVAR's fixed evaluation batch are drawn."""
    return draw_batch(
        cache,
        indices,
        templates=templates,
        name_marker=MARKER,
        resolution=settings.resolution,
        latent_scale=model.latent_scale,
        flip_p=settings.flip,
        data_generator=data,
        noise_generator=noise,
    )


def _checkpointing(encoder: Any, action: str) -> Callable[[], None]:
    """transformers' switch for activation checkpointing (renamed in transformers 5)."""
    method = getattr(encoder, f"activation_checkpointing_{action}", None)
    return method or getattr(encoder, f"gradient_checkpointing_{action}")


def _at(run_dir: Path, step: int) -> Path:
    return checkpointing.checkpoint_path(run_dir, step)


def _seed_everything(seed: int) -> None:
    """Seed the global RNGs too: anything in the stack that draws from them is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _vectors(encoders: list[TrainedEncoder]) -> dict[str, np.ndarray]:
    return {t.key: t.vectors.detach().float().cpu().numpy().copy() for t in encoders}


def _conditioning(
    model: TrainModel, encoders: list[TrainedEncoder], batch: Batch, resolution: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The UNet's text conditioning. SD 1.x/2.x: the encoder's last hidden state. SDXL, as the
    diffusers SDXL script builds it (``textual_inversion_sdxl.py``, ``main``): both encoders'
    penultimate hidden states concatenated, the second encoder's projected pooled output as
    ``text_embeds``, and time ids (original size, crop top-left, target size) per image."""
    device = model.device
    if model.family != SDXL:
        return encoders[0].encode(batch.prompts, device, penultimate=False)[0], None
    first = encoders[0].encode(batch.prompts, device, penultimate=True)
    second = encoders[1].encode(batch.prompts, device, penultimate=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    time_ids = torch.tensor(
        [
            [*size, *crop, resolution, resolution]
            for size, crop in zip(batch.original_sizes, batch.crops_top_left, strict=True)
        ],
        device=device,
        dtype=hidden.dtype,
    )
    return hidden, {"text_embeds": second[0], "time_ids": time_ids}


def _noise(
    model: TrainModel, batch: Batch, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's noise and timesteps: uniform over the training schedule, as both recipes."""
    latents = batch.latents
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    timesteps = torch.randint(
        0,
        model.noise_scheduler.config.num_train_timesteps,
        (latents.shape[0],),
        generator=generator,
        device=latents.device,
    )
    return noise, timesteps


def _average(params: list[torch.nn.Parameter], loss: float, processes: int) -> float:
    """Average the vectors' gradients (and the logged loss) across processes: a few kilobytes,
    so no DistributedDataParallel wrapper around the frozen models is needed."""
    for param in params:
        if param.grad is not None:
            torch.distributed.all_reduce(param.grad)
            param.grad /= processes
    total = torch.tensor([loss], dtype=torch.float64, device=params[0].device)
    torch.distributed.all_reduce(total)
    return float(total) / processes


def _loss(
    model: TrainModel,
    unet: Any,
    encoders: list[TrainedEncoder],
    batch: Batch,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    settings: TrainSettings,
) -> torch.Tensor:
    """The noise-prediction loss of one batch."""
    latents = batch.latents
    scheduler = model.noise_scheduler
    noisy = scheduler.add_noise(latents, noise, timesteps)
    hidden, added = _conditioning(model, encoders, batch, settings.resolution)
    dtype = next(unet.parameters()).dtype
    prediction = unet(noisy.to(dtype), timesteps, hidden.to(dtype), added_cond_kwargs=added).sample
    if model.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    error = (prediction.float() - target.float()) ** 2
    if batch.weights is not None:
        error = error * batch.weights
    return error.mean()


@dataclass
class _FixedBatch:
    batch: Batch
    noise: torch.Tensor
    timesteps: torch.Tensor


def _fixed_batch(
    settings: TrainSettings, model: TrainModel, cache: list[CachedImage], templates: list[str]
) -> _FixedBatch:
    """DVAR's evaluation batch, frozen once from generators of its own (the run's own draws
    are untouched): the first images, their latents, captions, noise and timesteps
    (``torch.randperm(T)[:bs]``, as DVAR's code draws them)."""
    data = torch.Generator().manual_seed(settings.seed + 2)
    noise_gen = torch.Generator(model.device).manual_seed(settings.seed + 3)
    size = min(settings.early_stop_batch, len(cache))
    batch = _draw(settings, model, cache, templates, list(range(size)), data, noise_gen)
    noise = torch.randn(batch.latents.shape, generator=noise_gen, device=model.device)
    steps = model.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randperm(max(steps, size), generator=data)[:size] % steps
    return _FixedBatch(batch, noise, timesteps.to(model.device))


@torch.no_grad()
def _fixed_loss(
    model: TrainModel,
    unet: Any,
    encoders: list[TrainedEncoder],
    fixed: _FixedBatch,
    settings: TrainSettings,
) -> float:
    dtype = compute_dtype(settings.precision, model.device)
    autocast = (
        torch.autocast(model.device.type, dtype=dtype)
        if dtype != torch.float32
        else contextlib.nullcontext()
    )
    with autocast:
        loss = _loss(model, unet, encoders, fixed.batch, fixed.noise, fixed.timesteps, settings)
    return float(loss)


def _run_state(
    settings: TrainSettings,
    encoders: list[TrainedEncoder],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    data_generator: torch.Generator,
    noise_generator: torch.Generator,
    order: DataOrder,
    stopper: VarianceStopper | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a checkpoint holds, as (tensors, JSON)."""
    tensors = {f"vectors.{t.key}": t.vectors.detach().clone() for t in encoders}
    optim_tensors, optim_state = checkpointing.optimizer_state(optimizer)
    rng_tensors, rng_state = checkpointing.rng_state()
    order_state, order_tensor = order.state()
    tensors.update(optim_tensors)
    tensors.update(rng_tensors)
    tensors["generator.data"] = data_generator.get_state()
    tensors["generator.noise"] = noise_generator.get_state()
    tensors["data_order"] = order_tensor
    if stopper is not None and stopper.history:
        tensors["dvar.history"] = torch.tensor(stopper.history, dtype=torch.float64)
    state = {
        "settings": settings.to_dict(),
        "optimizer": optim_state,
        "scaler": scaler.state_dict(),
        "rng": rng_state,
        "data_order": order_state,
    }
    return tensors, state


def _check_same_run(settings: TrainSettings, state: dict[str, Any], path: Path) -> None:
    """A run continues only with the settings it was started with (how long it runs and how
    often it saves may change)."""
    before = TrainSettings.from_dict(state["settings"]).to_dict()
    now = settings.to_dict()
    changed = [
        key
        for key in now
        if key not in TrainSettings.RESUMABLE_CHANGES and before.get(key) != now[key]
    ]
    if changed:
        key = changed[0]
        raise RunStateError(
            f"this run was started with {key} = {before.get(key)!r}, not {now[key]!r}",
            path=path,
            hint="give the run's own settings, or another --out for a new run",
        )
