"""``tireg sync hf`` and ``tireg lookup``: the catalogue's view of remote sources.

(``tireg install`` and ``tireg search --remote`` live with the install and search commands and
call :mod:`tireg.registry.remote` too.) Other source groups may add commands to :data:`sync_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from tireg.cli.options import DbOption, HfEndpointOption, JsonOption
from tireg.cli.output import Column, console, item_progress, print_json, print_listing

if TYPE_CHECKING:  # the commands import the catalogue and the sources when they run
    from tireg.registry.ingest import SyncReport

sync_app = typer.Typer(
    name="sync",
    help="Record what a remote source offers in the catalogue (and optionally download it).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.add_typer(sync_app, name="sync")
    sync_app.command("hf")(sync_hf_command)
    app.command("lookup")(lookup_command)


def sync_hf_command(
    author: Annotated[
        str, typer.Option("--author", help="Hugging Face user or organisation to list.")
    ] = "sd-concepts-library",
    download: Annotated[
        bool, typer.Option("--download", help="Also download and import every embedding.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Repos fetched at once.")
    ] = 32,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            max=16,
            help="Processes that share a download (default: one per core, up to 4, for 200 or "
            "more repos to fetch).",
        ),
    ] = None,
    hf_endpoint: HfEndpointOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List a Hugging Face author's concept repos and record each as an available source.

    A re-sync asks the Hub only for the listing; repos whose commit is unchanged are skipped.
    Gated repos are recorded with a hint on how to log in (HF_TOKEN or `hf auth login`).

    Example: tireg sync hf --author sd-concepts-library --download
    """
    from tireg.db import open_catalogue
    from tireg.registry.remote import sync_hf

    catalogue = open_catalogue(db)
    try:
        with item_progress(disable=json_out) as bar:
            task = bar.add_task(f"listing {author}", total=None)

            def advance(done: int, total: int, repo_id: str) -> None:
                bar.update(task, completed=done, total=total, description=repo_id[-40:])

            report = sync_hf(
                catalogue,
                author,
                download=download,
                concurrency=concurrency,
                progress=advance,
                endpoint=hf_endpoint,
                processes=processes,
            )
    finally:
        catalogue.close()
    if json_out:
        print_json(report.to_dict())
    else:
        _print_sync(report)
    if report.failed:
        raise typer.Exit(1)


def _print_sync(report: SyncReport) -> None:
    table = Table(title=report.title)
    table.add_column("repos")
    table.add_column("count", justify="right")
    for label, value in (
        ("listed", report.listed),
        ("new", len(report.new)),
        ("changed", len(report.changed)),
        ("unchanged (skipped)", report.unchanged),
        ("downloaded", len(report.downloaded)),
        ("gated (need a login)", len(report.gated)),
        ("gone", len(report.gone)),
        ("failed", len(report.failed)),
    ):
        table.add_row(label, str(value))
    console.print(table)
    for outcome in report.failed:
        console.print(f"failed: {outcome.locator}: {outcome.message}", markup=False, soft_wrap=True)


def lookup_command(
    target: Annotated[str, typer.Argument(help="An embedding file, or a name in the catalogue.")],
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Find an embedding on Civitai by the SHA256 of its file, and record what Civitai says.

    Records the Civitai model version, trigger words, base model and preview URLs. Set
    TIREG_CIVITAI_API to use another server; CIVITAI_API_KEY is sent when set.

    Example: tireg lookup embeddings/EasyNegative.safetensors
    """
    from tireg.db import open_catalogue
    from tireg.registry.remote import lookup

    catalogue = open_catalogue(db)
    try:
        results = lookup(catalogue, target)
    finally:
        catalogue.close()
    print_listing(
        results,
        ("sha256", Column("civitai", no_wrap=True), "name", "base model", "trigger words"),
        lambda r: (
            r.sha256[:12],
            r.spec or "not found",
            r.name,
            r.base_model,
            ", ".join(r.trigger_words),
        ),
        json_out=json_out,
        title=Text(f"tireg lookup {target}"),
    )
