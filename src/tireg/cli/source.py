"""``tireg source add|sync|list``: git repos, rentry pages, MEGA links and URLs as sources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from tireg.cli.options import DbOption, JsonOption
from tireg.cli.output import console, item_progress, print_json, print_listing

if TYPE_CHECKING:  # the commands import the catalogue and the sources when they run
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
    from tireg.db import open_catalogue
    from tireg.registry import source_sync

    with open_catalogue(db) as catalogue:
        ids = source_sync.add_source(catalogue, kind, location, ref=ref, path=path)
        rows = [s for s in source_sync.list_sources(catalogue) if s.id in set(ids)]
    _print_sources(rows, json_out=json_out, title=f"added {len(rows)} source(s)")


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
    from tireg.db import open_catalogue
    from tireg.registry import source_sync

    wanted = source_sync.source_ids(ids or [])
    with (
        open_catalogue(db) as catalogue,
        item_progress(disable=json_out) as bar,
    ):
        task = bar.add_task("syncing", total=None)

        def advance(done: int, total: int, locator: str) -> None:
            bar.update(task, completed=done, total=total, description=locator[-40:])

        report = source_sync.sync_sources(catalogue, ids=wanted or None, progress=advance)
    if json_out:
        print_json(report.to_dict())
    else:
        table = Table(title="tireg source sync")
        for column in ("id", "kind", "status", "new", "known", "locator"):
            table.add_column(column, overflow="fold")
        for s in report.sources:
            status = f"{s.status} (offline: cached copies only)" if s.offline else s.status
            locator = Text(s.locator)  # anybody's URL: "[...]" in it is no markup
            table.add_row(
                str(s.id), s.kind, status, str(len(s.imported)), str(len(s.known)), locator
            )
        console.print(table)
        for s in report.sources:
            notes = [s.message] if s.message else []
            notes += [f"{where}: {why}" for where, why in s.problems]
            for note in notes:
                console.print(f"source {s.id}: {note}", markup=False, soft_wrap=True)
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
    from tireg.db import open_catalogue
    from tireg.registry import source_sync

    with open_catalogue(db) as catalogue:
        rows = source_sync.list_sources(catalogue, kind=kind, status=status)
    _print_sources(rows, json_out=json_out, title="sources")


def _print_sources(rows: list[source_sync.SourceSummary], *, json_out: bool, title: str) -> None:
    """Sources as a listing; reasons (manual, gone, failed) follow the table, one line each."""
    print_listing(
        rows,
        ("id", "kind", "status", "embeddings", "title", "base model", "locator"),
        lambda s: (s.id, s.kind, s.status, s.embeddings, s.title, s.base_model_hint, s.locator),
        json_out=json_out,
        title=title,
        as_json=vars,
    )
    if json_out:
        return
    for s in rows:
        if s.status_reason:
            console.print(f"source {s.id}: {s.status_reason}", markup=False, soft_wrap=True)
