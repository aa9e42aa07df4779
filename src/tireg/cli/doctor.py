"""``tireg doctor``: report, and with ``--repair`` fix, drift between catalogue, store and index."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tireg.cli.options import DbOption, JsonOption
from tireg.cli.output import console, print_json


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("doctor")(doctor)


def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Delete orphaned store files (older than 15 minutes) and rebuild the search"
            " index if it drifted.",
        ),
    ] = False,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check the catalogue against its content store and search index.

    Reports store files no row names (left by an interrupted import), rows whose store file is
    missing or damaged, and search-index drift. Exit code 1 while something needs attention.

    Example: tireg doctor --repair
    """
    from tireg.db import open_catalogue
    from tireg.registry.doctor import examine

    with open_catalogue(db) as catalogue:
        report = examine(catalogue, repair=repair)
    if json_out:
        print_json(report.to_dict())
    else:
        table = Table(title="tireg doctor", show_header=True)
        table.add_column("check")
        table.add_column("found", justify="right")
        table.add_column("state")
        fixed = "repaired" if report.repaired else "run tireg doctor --repair"
        rows = (
            ("embeddings in the catalogue", report.embeddings, ""),
            ("files in the store", report.store_files, ""),
            ("orphaned store files", len(report.orphans), fixed if report.orphans else "ok"),
            ("rowless files too new to judge", report.young_orphans, "an import may be running"),
            ("missing store files", len(report.missing), "re-add the originals"),
            ("damaged store files", len(report.damaged), "re-add the originals"),
            ("search-index drift", report.index_drift, fixed if report.index_drift else "ok"),
        )
        for label, count, state in rows:
            table.add_row(label, str(count), state if count else "ok")
        console.print(table)
        for ref in report.missing:
            console.print(f"missing: {ref}", markup=False)
        for path, reason in report.damaged:
            console.print(f"damaged: {path}: {reason}", markup=False)
    if not report.healthy:
        raise typer.Exit(1)
