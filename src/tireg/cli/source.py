"""``tireg source add|sync|list``: git repos, rentry pages, MEGA links and URLs as sources."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from tireg.cli.options import DbOption, JsonOption
from tireg.cli.output import console, err_console, print_json
from tireg.db import open_catalogue
from tireg.registry import source_sync

group = typer.Typer(
    name="source",
    help="Sources you add by hand: git repositories, rentry link pages, MEGA links, URLs.\n\n"
    "Example: tireg source add git https://gitlab.com/cattoroboto/waifu-diffusion-embeds "
    "--path embeddings && tireg source sync",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.add_typer(group)


@group.command("add")
def add(
    kind: Annotated[str, typer.Argument(help="git | rentry | mega | url")],
    location: Annotated[
        str, typer.Argument(help="The repository URL, rentry page (URL or saved file) or link.")
    ],
    ref: Annotated[str | None, typer.Option("--ref", help="git: branch, tag or commit.")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="git: only files under this folder.")
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Record a source without downloading anything (then run `tireg source sync`).

    A rentry page becomes one source per download link; Google Drive and ufile links are kept as
    "manual" with the reason, and the Model column is kept as a base-model hint.

    Example: tireg source add rentry https://rentry.org/embeddings
    """
    with open_catalogue(db) as catalogue:
        ids = source_sync.add_source(catalogue, kind, location, ref=ref, path=path)
        rows = [s for s in source_sync.list_sources(catalogue) if s.id in set(ids)]
    if json_out:
        print_json([vars(s) for s in rows])
    else:
        _table(rows, title=f"added {len(rows)} source(s)")


@group.command("sync")
def sync(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Source ids (default: every source).")
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Fetch sources and import new or changed embeddings. Exit code 1 if a source failed.

    Example: tireg source sync 3 4
    """
    wanted = source_sync.source_ids(ids or [])
    with (
        open_catalogue(db) as catalogue,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            transient=True,
            disable=json_out,
        ) as bar,
    ):
        task = bar.add_task("syncing", total=None)

        def advance(done: int, total: int, locator: str) -> None:
            bar.update(task, completed=done, total=total, description=locator[-40:])

        report = source_sync.sync_sources(catalogue, ids=wanted or None, progress=advance)
    if json_out:
        print_json(report.to_json())
    else:
        table = Table(title="tireg source sync")
        for column in ("id", "kind", "status", "new", "known", "notes"):
            table.add_column(column)
        for s in report.sources:
            notes = [s.message] if s.message else []
            notes += [f"{where}: {why}" for where, why in s.problems]
            if s.offline:
                notes.append("offline: used cached copies only")
            table.add_row(
                str(s.id),
                s.kind,
                s.status,
                str(len(s.imported)),
                str(len(s.known)),
                "\n".join(n for n in notes if n),
            )
        console.print(table)
    if report.failed:
        raise typer.Exit(1)


@group.command("list")
def list_(
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="available | fetched | manual | gone")
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List sources with their status and how many embeddings each gave.

    Example: tireg source list --status manual
    """
    with open_catalogue(db) as catalogue:
        rows = source_sync.list_sources(catalogue, kind=kind, status=status)
    if json_out:
        print_json([vars(s) for s in rows])
    else:
        _table(rows, title="sources")


def _table(rows: list[source_sync.SourceSummary], *, title: str) -> None:
    table = Table(title=title)
    for column in ("id", "kind", "title", "status", "base model", "embeddings", "locator"):
        table.add_column(column, overflow="fold")
    for s in rows:
        status = f"{s.status}: {s.status_reason}" if s.status_reason else s.status
        table.add_row(
            str(s.id),
            s.kind,
            s.title or "",
            status,
            s.base_model_hint or "",
            str(s.embeddings),
            s.locator,
        )
    console.print(table)
