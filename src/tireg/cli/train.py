"""``tireg train``: train a new embedding on any checkpoint, resumable, registered with its model.

Nothing here imports torch, diffusers or transformers at import time: the training code is
imported inside the command, so ``tireg --help`` and every registry command stay light.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tireg.cli.options import DbOption, DeviceOption, JsonOption
from tireg.cli.output import console, err_console, print_json
from tireg.train.settings import (
    PREVIEW_STEPS,
    SOURCES,
    AlphaMode,
    Crop,
    LatentSampling,
    Precision,
    TrainSettings,
)

if TYPE_CHECKING:
    from tireg.train.loop import StepRecord

#: the defaults, read from the settings class so help and behaviour cannot disagree
_DEFAULT = TrainSettings(images=Path(), name="")


def _setting(key: str, text: str, **bounds: Any) -> Any:
    """The option of the training setting ``key``, declared once for all of them: its flag is
    the key in kebab case (``batch_size``: ``--batch-size``), its help says what it does and
    where its default (which typer prints) comes from (:data:`SOURCES`)."""
    source = SOURCES.get(key)
    return typer.Option(
        "--" + key.replace("_", "-"),
        help=escape(f"{text} Default: {source}." if source else text),
        **bounds,
    )


def register(app: typer.Typer) -> None:
    """Add ``tireg train`` to ``app``."""
    app.command("train")(train_command)


def train_command(
    images: Annotated[Path, _setting("images", "Folder of png/jpg/webp training images.")],
    name: Annotated[str, _setting("name", "The embedding's name (its prompt word).")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Checkpoint to train on: a single file, a diffusers folder, or a catalogued "
            "model's name or hash.",
        ),
    ],
    init_text: Annotated[
        str, _setting("init_text", "Text whose tokens start the vectors.")
    ] = _DEFAULT.init_text,
    vectors: Annotated[
        int, _setting("vectors", "Vectors per token.", min=1, max=75)
    ] = _DEFAULT.vectors,
    steps: Annotated[int, _setting("steps", "Optimizer steps.", min=1)] = _DEFAULT.steps,
    lr: Annotated[
        str, _setting("lr", 'Learning rate, A1111 "rate:step, ..., rate" syntax.')
    ] = _DEFAULT.lr,
    batch_size: Annotated[
        int, _setting("batch_size", "Images per micro-batch (per process).", min=1)
    ] = _DEFAULT.batch_size,
    grad_accum: Annotated[
        int, _setting("grad_accum", "Micro-batches per step.", min=1)
    ] = _DEFAULT.grad_accum,
    resolution: Annotated[
        int, _setting("resolution", "Training size in pixels.", min=8)
    ] = _DEFAULT.resolution,
    template: Annotated[
        str,
        _setting(
            "template",
            "Prompt template: subject, style, subject_filewords, style_filewords, none, "
            "or a FILE ([name], [filewords]).",
        ),
    ] = _DEFAULT.template,
    flip: Annotated[
        float, _setting("flip", "Horizontal flip probability.", min=0.0, max=1.0)
    ] = _DEFAULT.flip,
    crop: Annotated[Crop, _setting("crop", "Center or random crop.")] = _DEFAULT.crop,
    latent_sampling: Annotated[
        LatentSampling,
        _setting(
            "latent_sampling", "once | deterministic (the mean) or random (a sample per step)."
        ),
    ] = _DEFAULT.latent_sampling,
    alpha: Annotated[
        AlphaMode,
        _setting("alpha", "Transparency: composite (over white) or weight (the loss weight)."),
    ] = _DEFAULT.alpha,
    clip_grad: Annotated[
        str | None, _setting("clip_grad", "Gradient clipping: value:0.1 or norm:1.0.")
    ] = _DEFAULT.clip_grad,
    precision: Annotated[
        Precision, _setting("precision", "Compute precision.")
    ] = _DEFAULT.precision,
    gradient_checkpointing: Annotated[
        bool, _setting("gradient_checkpointing", "Recompute activations to save memory.")
    ] = _DEFAULT.gradient_checkpointing,
    compile_unet: Annotated[
        bool,
        _setting(
            "compile", "torch.compile the UNet (where it cannot build: a warning, uncompiled)."
        ),
    ] = _DEFAULT.compile,
    save_every: Annotated[
        int, _setting("save_every", "Checkpoint and catalogue entry every N steps.", min=1)
    ] = _DEFAULT.save_every,
    preview_every: Annotated[
        int, _setting("preview_every", "Preview grid every N steps (0: none).", min=0)
    ] = _DEFAULT.preview_every,
    preview_steps: Annotated[
        int,
        typer.Option(
            "--preview-steps",
            min=1,
            help="Sampling steps of a preview. Default: A1111 txt2img.",
        ),
    ] = PREVIEW_STEPS,
    early_stop: Annotated[
        bool, _setting("early_stop", "Stop when learned (DVAR, arXiv 2302.04841).")
    ] = _DEFAULT.early_stop,
    early_stop_eps: Annotated[
        float, _setting("early_stop_eps", "DVAR: stop below this variance ratio.")
    ] = _DEFAULT.early_stop_eps,
    early_stop_window: Annotated[
        int, _setting("early_stop_window", "DVAR: steps in the window.", min=2)
    ] = _DEFAULT.early_stop_window,
    seed: Annotated[int, _setting("seed", "Seed of every draw.")] = _DEFAULT.seed,
    prediction_type: Annotated[
        str | None,
        _setting("prediction_type", "epsilon or v_prediction. Default: what the model says."),
    ] = _DEFAULT.prediction_type,
    device: DeviceOption = "auto",
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue this run folder (or checkpoint file)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Run folder. Default: textual_inversion/NAME (A1111's log directory); "
            "running the same command again continues the run there.",
        ),
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Train a new textual-inversion embedding.

    Only the new vectors train; latents are encoded once; every --save-every steps the run is
    checkpointed (resume bit for bit), and each save becomes a catalogue entry with the model's
    hashes, linked as a version of the run (tireg show NAME lists them).

    Example: tireg train --images ./cat --name my-cat --model v1-5.safetensors --init-text cat
    """
    from tireg.ml import require_ml

    require_ml("tireg train")
    from tireg.db import open_catalogue
    from tireg.train.run import train_run

    settings = TrainSettings(
        images=images,
        name=name,
        init_text=init_text,
        vectors=vectors,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        resolution=resolution,
        template=template,
        flip=flip,
        crop=crop,
        latent_sampling=latent_sampling,
        alpha=alpha,
        clip_grad=clip_grad,
        precision=precision,
        gradient_checkpointing=gradient_checkpointing,
        compile=compile_unet,
        save_every=save_every,
        preview_every=preview_every,
        early_stop=early_stop,
        early_stop_eps=early_stop_eps,
        early_stop_window=early_stop_window,
        seed=seed,
        prediction_type=prediction_type,
    )
    with open_catalogue(db) as catalogue, _progress(steps, json_out) as progress:
        report = train_run(
            settings,
            model,
            out=out,
            resume=resume,
            device=device,
            catalogue=catalogue,
            on_progress=progress,
            on_warning=lambda line: err_console.print(
                f"warning: {line}", markup=False, soft_wrap=True
            ),
            preview_steps=preview_steps,
        )
    if not report.is_main:
        return  # the main process of a multi-process run reports
    if json_out:
        print_json(report.to_dict())
        return
    console.print(f"{name}: stopped at step {report.step}: {report.stop_reason}", markup=False)
    if report.saves:
        last = report.saves[-1]
        console.print(
            f"entry {name}@{last['vectors_sha256'][:8]}  file {last['file']}", markup=False
        )
    console.print(f"log {report.log}  loss curve {report.loss_curve}", markup=False)


class _progress:
    """A rich progress bar on stderr with the loss and steps/s (none with ``--json``)."""

    def __init__(self, total: int, disable: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=err_console,
            transient=True,
            disable=disable,
        )
        self.task = self.bar.add_task("train", total=total, status="")
        self.started: float | None = None
        self.first_step = 0

    def __enter__(self) -> _progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __call__(self, record: StepRecord) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started, self.first_step = now, record.step - 1
        rate = (record.step - self.first_step) / max(now - self.started, 1e-9)
        status = f"loss {record.loss:.4f}  {rate:.2f} steps/s"
        self.bar.update(self.task, completed=record.step, status=status)
