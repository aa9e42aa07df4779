"""``tireg hash``, ``tireg model add|list`` and ``tireg check``: checkpoints and compatibility."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from tireg.cli import completion
from tireg.cli.options import DbOption, JsonOption
from tireg.cli.output import Column, byte_progress, console, print_json, print_listing

if TYPE_CHECKING:  # the commands import the registry when they run, so --help stays light
    from tireg.registry.models import AddedModel

model_app = typer.Typer(
    name="model",
    help="Register and list checkpoints (models).\n\nExample: tireg model add ~/models/x.ckpt",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("hash")(hash_command)
    app.add_typer(model_app)
    model_app.command("add")(model_add)
    model_app.command("list")(model_list)
    app.command("check")(check)


@contextlib.contextmanager
def _byte_bar(total: int, disable: bool) -> Iterator[Callable[[int], None]]:
    """A transient bytes progress bar on stderr; yields the ``progress(n)`` callback."""
    with byte_progress(disable=disable) as bar:
        task = bar.add_task("hashing", total=total)
        yield lambda n: bar.advance(task, n)


def _total_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def hash_command(
    files: Annotated[list[Path], typer.Argument(help="Files to hash.")],
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ignore the hash cache and read the files again.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Every checkpoint hash in one read: SHA-256, AutoV2, A1111 old hash, CRC32, BLAKE3, addnet.

    Results are cached by path, size, mtime and inode, so asking again about an unchanged file
    reads nothing. The old A1111 hash of a file under 1 MiB is the hash of nothing and is shown
    as "not meaningful".

    Example: tireg hash ~/models/v1-5-pruned-emaonly.safetensors --json
    """
    from tireg.checkpoints import file_hashes

    with _byte_bar(_total_size(files), json_out) as progress:
        results = list(file_hashes(files, refresh=refresh, progress=progress))
    if json_out:
        print_json([r.to_dict() for r in results])
        return
    for result in results:
        h = result.hashes
        table = Table(title=Text(str(result.path)), show_header=False, title_justify="left")
        table.add_column("hash", style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("SHA-256", h.sha256)
        table.add_row("AutoV2", h.autov2)
        table.add_row(
            "old (AutoV1)", h.old_hash if h.old_hash_meaningful else "not meaningful (< 1 MiB)"
        )
        table.add_row("CRC32", h.crc32)
        table.add_row("BLAKE3", h.blake3)
        table.add_row("addnet", h.addnet or "— (not safetensors)")
        table.add_row("size", f"{h.size:,} bytes" + (" (cached)" if result.cached else ""))
        console.print(table)


def model_add(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Checkpoint files (.safetensors, .ckpt) or diffusers folders."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Name for a single checkpoint (or --hash).")
    ] = None,
    hash_value: Annotated[
        str | None,
        typer.Option(
            "--hash",
            metavar="HASH",
            help="Name a model you have no file of: its old A1111 hash, AutoV2 or SHA-256 "
            "(with --name and --family).",
        ),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option("--family", help="With --hash: the model's family (sd1, sd2, sdxl, ...)."),
    ] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Re-hash even if cached.")] = False,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Register checkpoints: hash them (cached) and detect their family from the header; or,
    with --hash, name a model known only by the hash an embedding recorded.

    Examples: tireg model add ~/models/sd_xl_base_1.0.safetensors --name "SDXL base";
    tireg model add --hash 0badf00d --name "my merge" --family sd1
    """
    from tireg.db import open_catalogue
    from tireg.registry.models import add_models

    if hash_value is not None:
        _add_hash(hash_value, paths, name, family, db, json_out)
        return
    if family is not None:
        raise typer.BadParameter("a file's family is detected; --family goes with --hash")
    if not paths:
        raise typer.BadParameter("give checkpoint paths, or --hash", param_hint="PATHS")
    catalogue = open_catalogue(db)
    try:
        with _byte_bar(_total_size(paths), json_out) as progress:
            added = add_models(catalogue, paths, name=name, refresh=refresh, progress=progress)
    finally:
        catalogue.close()
    print_listing(
        added,
        (
            "name",
            Column("family", no_wrap=True),
            Column("old hash", no_wrap=True),
            Column("AutoV2", no_wrap=True),
            "known as",
            "path",
        ),
        _added_cells,
        json_out=json_out,
        title="tireg model add",
    )


def _added_cells(item: AddedModel) -> tuple[Any, ...]:
    facts, hashes = item.facts, item.facts.hashes
    return (
        item.name,
        facts.detection.label + ("" if facts.detection.supported else " (not served)"),
        hashes.old_hash if hashes and hashes.old_hash_meaningful else "—",
        hashes.autov2 if hashes else "—",
        ", ".join(facts.known_as) or "—",
        str(facts.path),
    )


def _add_hash(
    value: str,
    paths: list[Path] | None,
    name: str | None,
    family: str | None,
    db: str | None,
    json_out: bool,
) -> None:
    """``tireg model add --hash``: check the options, record, print."""
    from tireg.checkpoints import FAMILY_LABELS
    from tireg.db import open_catalogue
    from tireg.registry.models import add_model_hash

    if paths:
        raise typer.BadParameter("give checkpoint paths or --hash, not both", param_hint="--hash")
    if name is None or family is None:
        raise typer.BadParameter("--hash needs --name and --family", param_hint="--hash")
    if family not in FAMILY_LABELS:
        raise typer.BadParameter(f"choose one of {', '.join(FAMILY_LABELS)}", param_hint="--family")
    catalogue = open_catalogue(db)
    try:
        record = add_model_hash(catalogue, value, name=name, family=family)
    finally:
        catalogue.close()
    if json_out:
        print_json(record)
        return
    hashes = ", ".join(
        f"{label} {record[key]}"
        for label, key in (("old hash", "old_hash"), ("AutoV2", "autov2"), ("SHA-256", "sha256"))
        if record[key]
    )
    console.print(
        f"{record['name']}: {FAMILY_LABELS.get(record['family'], record['family'])}, {hashes}",
        markup=False,
        soft_wrap=True,
    )


def model_list(
    origin: Annotated[
        str | None,
        typer.Option("--origin", help="Only 'user' (your files) or 'known' (the shipped table)."),
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List registered checkpoints and the shipped table of well-known ones.

    Example: tireg model list --origin known
    """
    from tireg.checkpoints import FAMILY_LABELS
    from tireg.db import open_catalogue
    from tireg.registry.models import list_models

    catalogue = open_catalogue(db)
    try:
        records = list_models(catalogue, origin=origin)
    finally:
        catalogue.close()
    print_listing(
        records,
        (
            Column("name", min_width=20),
            "family",
            Column("old hash", no_wrap=True),
            Column("AutoV2", no_wrap=True),
            "file",
        ),
        lambda r: (
            r["name"],
            FAMILY_LABELS.get(r["family"], r["family"]),
            r["old_hash"] or "—",
            r["autov2"] or "—",
            r["path"] or f"({r['origin']})",
        ),
        json_out=json_out,
        title=f"checkpoints ({len(records)})",
    )


_STYLE = {
    "validated": "bold green",
    "exact": "green",
    "same_family": "green",
    "sd1_on_sdxl": "yellow",
    "wrong_family": "red",
    "unknown": "dim",
}


def check(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint path, hash (8/10/64 hex) or name.",
            autocompletion=completion.model_names,
        ),
    ],
    embeddings: Annotated[
        list[str] | None,
        typer.Argument(help="Embeddings (name, name@hash); all catalogued ones when omitted."),
    ] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Will these embeddings work on a model? Each gets a verdict with its evidence.

    Verdicts: exact (trained on this model, from the hash A1111 recorded), same_family (works,
    may differ), wrong_family (768 vs 1024...: the UI skips it), sd1_on_sdxl (ComfyUI applies it
    to CLIP-L only; A1111 skips it), unknown.

    Example: tireg check --model ~/models/animefull-latest.ckpt "gasai yuno"
    """
    from tireg.checkpoints import FAMILY_LABELS
    from tireg.db import open_catalogue
    from tireg.registry.compat import check_catalogue

    with (
        open_catalogue(db) as catalogue,
        _byte_bar(_total_size([Path(model)]), json_out) as progress,
    ):
        ref, results = check_catalogue(catalogue, model, embeddings or (), progress=progress)
    if json_out:
        print_json({"model": ref.to_dict(), "embeddings": [r.to_dict() for r in results]})
        return
    console.print(
        f"model: {ref.name} — {ref.label}" + (f" ({ref.note})" if ref.note else ""), markup=False
    )
    print_listing(
        results,
        ("embedding", "family", "verdict", "reason"),
        lambda r: (
            r.ref,
            FAMILY_LABELS.get(r.family, r.family),
            Text(r.verdict.relation, style=_STYLE.get(r.verdict.relation, "")),
            r.verdict.reason,
        ),
        json_out=False,
        empty="no embeddings in the catalogue",
    )
    if embeddings:
        for r in results:
            for line in r.verdict.evidence:
                console.print(f"  {r.ref}: {line}", markup=False, soft_wrap=True)
