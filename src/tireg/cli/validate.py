"""``tireg validate`` (render embeddings on checkpoints as a grid) and ``tireg validations``.

``validate`` imports the renderer (torch, diffusers) inside the command, so ``tireg --help`` and
``tireg validations`` stay free of it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table
from rich.text import Text

from tireg.cli.find import NAMING_RULE, print_validations
from tireg.cli.options import DbOption, JsonOption
from tireg.cli.output import console, err_console, item_progress, print_json

if TYPE_CHECKING:
    from tireg.validate.run import ValidationRun


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("validate", epilog=NAMING_RULE)(validate_command)
    app.command("validations", epilog=NAMING_RULE)(validations_command)


def validate_command(
    embeddings: Annotated[
        list[str], typer.Argument(help="Embeddings: NAME, NAME@HEX, or a file path.")
    ],
    model: Annotated[
        list[str],
        typer.Option(
            "--model", "-m", help="Checkpoint path, diffusers folder, name or hash (repeatable)."
        ),
    ],
    prompt: Annotated[
        str, typer.Option("--prompt", help="{} stands for the embedding's word (else appended).")
    ] = "a photo of {}",
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    seed: Annotated[int, typer.Option("--seed", help="First seed (A1111: seed + i).")] = 1234,
    count: Annotated[int, typer.Option("--count", help="Seeds from --seed on.")] = 4,
    seeds: Annotated[
        str | None, typer.Option("--seeds", metavar="S1,S2,...", help="Exactly these seeds.")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps.")] = 20,
    sampler: Annotated[str, typer.Option("--sampler", help="A1111 sampler name.")] = "DPM++ 2M",
    schedule: Annotated[
        str, typer.Option("--schedule", help="A1111 schedule type (karras, exponential...).")
    ] = "Automatic",
    cfg: Annotated[float, typer.Option("--cfg", help="CFG scale.")] = 7.0,
    size: Annotated[str, typer.Option("--size", help="WIDTHxHEIGHT, multiples of 8.")] = "512x512",
    clip_skip: Annotated[int, typer.Option("--clip-skip", help="A1111's Clip skip.")] = 1,
    rng: Annotated[
        Literal["cpu", "gpu"], typer.Option("--rng", help="Where seeds draw noise (A1111 RNG).")
    ] = "cpu",
    ensd: Annotated[int, typer.Option("--ensd", help="A1111's eta noise seed delta.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 1,
    device: Annotated[
        Literal["auto", "cuda", "mps", "cpu"], typer.Option("--device", help="Where to render.")
    ] = "auto",
    dtype: Annotated[
        Literal["auto", "fp16", "bf16", "fp32"], typer.Option("--dtype", help="Weights' dtype.")
    ] = "auto",
    compile_unet: Annotated[
        bool, typer.Option("--compile", help="torch.compile the UNet (long runs only).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: TIREG_HOME/validations/...)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Render embeddings of another family anyway: the vectors an encoder's width "
            "fits are applied, the rest ignored with a warning (as ComfyUI does).",
        ),
    ] = False,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Render embeddings on checkpoints: a grid with a row without any embedding and a row per
    embedding (per model), a column per seed, every image saved with A1111's infotext; the run
    is recorded as compatibility evidence.

    Launched as "accelerate launch -m tireg validate ..." the images are shared between the
    processes and the main one builds the grid.

    Example: tireg validate birb-style cat-toy --model ~/models/sd15.safetensors --seeds 1,2,3
    """
    from tireg.ml import require_ml

    require_ml("tireg validate")
    from tireg.db import open_catalogue
    from tireg.validate.run import validate
    from tireg.validate.settings import Settings, parse_seeds, parse_size

    width, height = parse_size(size)
    settings = Settings(
        prompt=prompt,
        negative=negative,
        seeds=parse_seeds(seed, count, seeds),
        steps=steps,
        sampler=sampler,
        schedule=schedule,
        cfg=cfg,
        width=width,
        height=height,
        clip_skip=clip_skip,
        rng=rng,
        ensd=ensd,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        compile=compile_unet,
        force=force,
        out_dir=out,
    )
    with open_catalogue(db) as catalogue, item_progress(disable=json_out) as bar:
        task = bar.add_task("rendering", total=None)
        run = validate(
            catalogue,
            embeddings,
            model,
            settings,
            on_plan=lambda total: bar.update(task, total=total),
            on_images=lambda n: bar.advance(task, n),
            on_warning=lambda line: err_console.print(
                f"warning: {line}", markup=False, soft_wrap=True
            ),
        )
    if run is None:
        return  # another process of a launched run: the main one reports
    if json_out:
        print_json(run.to_dict())
    else:
        _summary(run)


def _summary(run: ValidationRun) -> None:
    """One row per grid row: model, embedding, images and how many came from the cache."""
    table = Table(title=f"validation run {run.run_id}")
    for column in ("model", "embedding", "prompt", "images", "from cache"):
        table.add_column(column, overflow="fold")
    words = {s.vectors_sha256: s.ref for s in run.subjects}
    rows: Counter[tuple[int, str | None, str]] = Counter()
    cached: Counter[tuple[int, str | None, str]] = Counter()
    for image in run.images:
        row = (image.model, image.embedding_sha256, image.prompt)
        rows[row] += 1
        cached[row] += image.cached
    for (m, vectors, prompt), n in rows.items():
        table.add_row(
            Text(run.models[m].name),
            Text("(none)" if vectors is None else words[vectors]),
            Text(prompt),
            str(n),
            str(cached[(m, vectors, prompt)]),
        )
    console.print(table)
    for line in run.forced:
        console.print(f"forced: {line}", markup=False, soft_wrap=True)
    rendered, total = run.rendered, len(run.images)
    console.print(
        f"{total} images ({rendered} rendered, {total - rendered} from the cache) in "
        f"{run.seconds:.1f} s on {run.processes} process(es); grid: {run.grid}",
        markup=False,
        soft_wrap=True,
    )


def validations_command(
    name: Annotated[
        str | None, typer.Argument(help="Only runs of this embedding (NAME or NAME@HEX).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Only runs on this model (path, name or hash)."),
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List recorded validation runs, newest first, with their grids.

    Example: tireg validations birb-style --model ~/models/sd15.safetensors
    """
    from tireg.db import open_catalogue
    from tireg.registry.validations import list_runs

    with open_catalogue(db) as catalogue:
        runs = list_runs(catalogue, name, model=model)
    print_validations(runs, json_out=json_out, empty="no validation runs recorded")
