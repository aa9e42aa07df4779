"""``tireg add``: import embedding files and folders into the catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from tireg.cli.options import DbOption, JsonOption
from tireg.cli.output import console, err_console, item_progress, print_json

if TYPE_CHECKING:
    from tireg.registry.importer import ImportReport

_PROBLEMS = (
    ("refused as unsafe", "unsafe"),
    ("errors", "errors"),
    ("not embeddings", "not_embeddings"),
)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("add")(add)


def add(
    paths: Annotated[list[Path], typer.Argument(help="Embedding files and folders (recursive).")],
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Tag every imported embedding.")
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Import embeddings: files, or folders walked recursively.

    Reads every format tireg knows (pickles are never executed), keeps one copy of each distinct
    embedding, and records where each came from. Pictures beside an embedding become its
    previews. Exit code 1 when a file failed or was refused as unsafe.

    Example: tireg add ~/stable-diffusion-webui/embeddings --tag mine
    """
    from tireg.db import open_catalogue
    from tireg.registry.importer import add_paths

    catalogue = open_catalogue(db)
    hints = {"tags": ",".join(tag)} if tag else None
    settled = [0, 0]  # files whose outcome is committed, of how many
    try:
        with item_progress(disable=json_out) as bar:
            task = bar.add_task("importing", total=None)

            def advance(done: int, total: int, path: str) -> None:
                settled[:] = [done, total]
                bar.update(task, completed=done, total=total, description=Path(path).name[:40])

            report = add_paths(catalogue, paths, progress=advance, hints=hints)
    except KeyboardInterrupt:
        # every committed batch stays; the next run finds those files already known
        err_console.print(
            f"interrupted: {settled[0]:,} of {settled[1]:,} files were imported or checked;"
            " run the same command again to import the rest",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    finally:
        catalogue.close()
    if json_out:
        print_json(report.to_dict())
    else:
        _print_summary(report)
    if report.errors or report.unsafe:
        raise typer.Exit(1)


def _print_summary(report: ImportReport) -> None:
    counts = report.counts()
    table = Table(title="tireg add", show_header=True)
    table.add_column("outcome")
    table.add_column("files", justify="right")
    for label, key in (
        ("imported", "imported"),
        ("already known", "already_known"),
        ("previews", "previews"),
        ("not embeddings", "not_embeddings"),
        ("refused as unsafe", "refused_unsafe"),
        ("errors", "errors"),
        ("skipped (not an embedding extension)", "skipped"),
    ):
        table.add_row(label, str(counts[key]))
    console.print(table)
    for label, attr in _PROBLEMS:
        for outcome in getattr(report, attr):
            console.print(
                f"{label}: {outcome.path}: {outcome.reason}", markup=False, soft_wrap=True
            )
