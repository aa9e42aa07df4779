"""``tireg train``: train a new embedding on any checkpoint, resumable, registered with its model.

Nothing here imports torch, diffusers or transformers at import time: the training code is
imported inside the command, so ``tireg --help`` and every registry command stay light.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tireg.cli.options import DbOption, JsonOption
from tireg.cli.output import console, err_console, print_json
from tireg.train.settings import (
    ALPHA_MODES,
    CROPS,
    LATENT_SAMPLING,
    PRECISIONS,
    SOURCES,
    TrainSettings,
)

if TYPE_CHECKING:
    from tireg.train.loop import StepRecord

#: the defaults, read from the settings class so help and behaviour cannot disagree
_DEFAULT = TrainSettings(images=Path(), name="")


def _help(text: str, key: str) -> str:
    """An option's help: what it does and where its default (shown by typer) comes from."""
    source = SOURCES.get(key)
    return escape(f"{text} Default: {source}." if source else text)


def register(app: typer.Typer) -> None:
    """Add ``tireg train`` to ``app``."""
    app.command("train")(train_command)


def train_command(
    images: Annotated[
        Path, typer.Option("--images", help="Folder of png/jpg/webp training images.")
    ],
    name: Annotated[str, typer.Option("--name", help="The embedding's name (its prompt word).")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Checkpoint to train on: a single file, a diffusers folder, or a catalogued "
            "model's name or hash.",
        ),
    ],
    init_text: Annotated[
        str,
        typer.Option(
            "--init-text", help=_help("Text whose tokens start the vectors.", "init_text")
        ),
    ] = _DEFAULT.init_text,
    vectors: Annotated[
        int, typer.Option("--vectors", min=1, max=75, help=_help("Vectors per token.", "vectors"))
    ] = _DEFAULT.vectors,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help=_help("Optimizer steps.", "steps"))
    ] = _DEFAULT.steps,
    lr: Annotated[
        str,
        typer.Option(
            "--lr", help=_help('Learning rate, A1111 "rate:step, ..., rate" syntax.', "lr")
        ),
    ] = _DEFAULT.lr,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", min=1, help=_help("Images per micro-batch (per process).", "batch_size")
        ),
    ] = _DEFAULT.batch_size,
    grad_accum: Annotated[
        int,
        typer.Option("--grad-accum", min=1, help=_help("Micro-batches per step.", "grad_accum")),
    ] = _DEFAULT.grad_accum,
    resolution: Annotated[
        int,
        typer.Option("--resolution", min=8, help=_help("Training size in pixels.", "resolution")),
    ] = _DEFAULT.resolution,
    template: Annotated[
        str,
        typer.Option(
            "--template",
            help=_help(
                "Prompt template: subject, style, subject_filewords, style_filewords, none, "
                "or a FILE ([name], [filewords]).",
                "template",
            ),
        ),
    ] = _DEFAULT.template,
    flip: Annotated[
        float,
        typer.Option(
            "--flip", min=0.0, max=1.0, help=_help("Horizontal flip probability.", "flip")
        ),
    ] = _DEFAULT.flip,
    crop: Annotated[
        str, typer.Option("--crop", help=_help("center or random crop.", "crop"))
    ] = _DEFAULT.crop,
    latent_sampling: Annotated[
        str,
        typer.Option(
            "--latent-sampling",
            help=_help(
                "once | deterministic (the mean) or random (a sample per step).", "latent_sampling"
            ),
        ),
    ] = _DEFAULT.latent_sampling,
    alpha: Annotated[
        str,
        typer.Option(
            "--alpha",
            help=_help(
                "Transparency: composite (over white) or weight (the loss weight).", "alpha"
            ),
        ),
    ] = _DEFAULT.alpha,
    clip_grad: Annotated[
        str | None,
        typer.Option(
            "--clip-grad", help=_help("Gradient clipping: value:0.1 or norm:1.0.", "clip_grad")
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option("--precision", help=_help("auto, bf16, fp16 or fp32.", "precision")),
    ] = _DEFAULT.precision,
    gradient_checkpointing: Annotated[
        bool,
        typer.Option(
            "--gradient-checkpointing",
            help=_help("Recompute activations to save memory.", "gradient_checkpointing"),
        ),
    ] = False,
    compile_unet: Annotated[
        bool, typer.Option("--compile", help=_help("torch.compile the UNet.", "compile"))
    ] = False,
    save_every: Annotated[
        int,
        typer.Option(
            "--save-every",
            min=1,
            help=_help("Checkpoint and catalogue entry every N steps.", "save_every"),
        ),
    ] = _DEFAULT.save_every,
    preview_every: Annotated[
        int,
        typer.Option(
            "--preview-every",
            min=0,
            help=_help("Preview grid every N steps (0: none).", "preview_every"),
        ),
    ] = _DEFAULT.preview_every,
    preview_steps: Annotated[
        int,
        typer.Option(
            "--preview-steps",
            min=1,
            help="Sampling steps of a preview. Default: A1111 txt2img.",
        ),
    ] = 20,
    early_stop: Annotated[
        bool,
        typer.Option("--early-stop", help="Stop when learned (DVAR, arXiv 2302.04841)."),
    ] = False,
    early_stop_eps: Annotated[
        float,
        typer.Option(
            "--early-stop-eps",
            help=_help("DVAR: stop below this variance ratio.", "early_stop_eps"),
        ),
    ] = _DEFAULT.early_stop_eps,
    early_stop_window: Annotated[
        int,
        typer.Option(
            "--early-stop-window",
            min=2,
            help=_help("DVAR: steps in the window.", "early_stop_window"),
        ),
    ] = _DEFAULT.early_stop_window,
    seed: Annotated[
        int, typer.Option("--seed", help=_help("Seed of every draw.", "seed"))
    ] = _DEFAULT.seed,
    prediction_type: Annotated[
        str | None,
        typer.Option(
            "--prediction-type", help="epsilon or v_prediction. Default: what the model says."
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cuda, mps or cpu.")] = "auto",
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
    for option, value, allowed in (
        ("--crop", crop, CROPS),
        ("--latent-sampling", latent_sampling, LATENT_SAMPLING),
        ("--alpha", alpha, ALPHA_MODES),
        ("--precision", precision, PRECISIONS),
    ):
        if value not in allowed:
            raise typer.BadParameter(
                f"{value!r}: choose one of {', '.join(allowed)}", param_hint=option
            )
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
