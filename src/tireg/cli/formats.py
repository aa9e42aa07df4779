"""``tireg inspect`` and ``tireg convert``: the converter layer on the command line.

Both commands only parse, call one library function (:func:`tireg.converters.describe`,
:func:`tireg.converters.convert`) and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tireg.cli.output import console, err_console, print_json, printable

_FORMATS_HELP = "tireg, a1111-pt, diffusers-bin, diffusers-safetensors, safetensors, png"


def _table(record: dict[str, Any]) -> Any:
    """One panel per file; values are plain Text, so names and errors never parse as markup."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    if "error" in record:
        hint = f" ({record['hint']})" if record.get("hint") else ""
        table.add_row("error", Text(record["error"] + hint))
        if "safety" in record:
            table.add_row("safety", Text(record["safety"], style="red"))
        if "sha256" in record:
            table.add_row("sha256", Text(record["sha256"]))
        return Panel(table, title=Text(record["path"]), title_align="left", border_style="red")
    shapes = ", ".join(
        f"{enc}: {n} x {w} ({record['dtypes'].get(enc, '?')}, norm {record['norms'][enc]:.4f})"
        for enc, (n, w) in record["encoders"].items()
    )
    trained = record["trained_on"]
    carrier = f", from its {record['carrier']}" if record["carrier"] else ""
    rows = [
        ("format", Text(_format_text(record) + carrier)),
        ("name", Text(record["name"])),
        ("family", Text(record["family"])),
        ("vectors", Text(shapes)),
        ("step", Text("-" if record["step"] is None else str(record["step"]))),
        ("trained on", Text(_trained_on(trained))),
        ("sha256", Text(record["sha256"])),
        ("A1111 hash", Text(record["a1111_short_hash"])),
        ("safety", Text(record["safety"], style="green")),
    ]
    rows += [("warning", Text(w, style="yellow")) for w in record["warnings"]]
    for label, value in rows:
        table.add_row(label, value)
    return Panel(table, title=Text(record["path"]), title_align="left")


def _format_text(record: dict[str, Any]) -> str:
    """``tireg (from a1111-pt)`` for an internal-format file, whose vectors came from another
    format; otherwise just the file's format."""
    fmt, source = record["format"], record.get("source_format")
    return f"{fmt} (from {source})" if source and source != fmt else fmt


def _trained_on(trained: dict[str, Any]) -> str:
    """``e6e8e1fc model = NovelAI anime, full, latest (probably)``: the hash, the file's own
    model name, and the known checkpoints the hash names."""
    text = f"{trained['hash'] or '-'} {trained['name'] or ''}".strip()
    known = [k["name"] + ("" if k["certain"] else " (probably)") for k in trained.get("known", [])]
    return f"{text} = {'; '.join(known)}" if known else text


def inspect(
    files: Annotated[list[Path], typer.Argument(help="Embedding files (any format).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Show what each embedding file holds, without running any code from it.

    Example: tireg inspect embeddings/*.pt --json
    """
    from tireg.checkpoints import describe_embedding

    records = [describe_embedding(path) for path in files]
    if json_out:
        print_json(records)
    else:
        for record in records:
            console.print(_table(record))
    if any("error" in r for r in records):
        raise typer.Exit(1)


def convert(
    files: Annotated[
        list[Path], typer.Argument(help="Embedding files and folders (recursive) to convert.")
    ],
    to: Annotated[str, typer.Option("--to", help=f"Output format: {_FORMATS_HELP}.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Output file (one input only).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Output folder (default: current folder).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    sdxl_pair: Annotated[
        bool,
        typer.Option("--sdxl-pair", help="Read two inputs as one diffusers SDXL pair."),
    ] = False,
) -> None:
    """Convert embeddings between formats; files are written atomically, never overwritten
    without --force.

    Each output keeps its input's file name (A1111's prompt word), and each line says
    INPUT -> OUTPUT. What can be converted is; the rest is listed, and the exit code is 1.

    Example: tireg convert learned_embeds.bin --to a1111-pt --out-dir embeddings/
    """
    from tireg.converters import WRITE_FORMATS
    from tireg.converters import convert as run_convert

    if to not in WRITE_FORMATS:
        raise typer.BadParameter(f"choose one of {_FORMATS_HELP}", param_hint="--to")
    _check_option_combination(files, output, out_dir, sdxl_pair)
    report = run_convert(
        files, to, output=output, out_dir=out_dir, force=force, sdxl_pair=sdxl_pair
    )
    for source, written in report.converted:
        targets = ", ".join(map(str, written))
        console.print(f"{source} -> {targets}", markup=False, highlight=False, soft_wrap=True)
    for source, error in report.failed:
        line = str(error) if error.path == str(source) else f"{source}: {error}"
        # one line per file, as the CLI's own error line: controls and newlines escaped
        err_console.print(printable(f"error: {line}", one_line=True), markup=False, soft_wrap=True)
    if not report.converted and not report.failed:
        err_console.print("nothing to convert")
    if report.failed:
        raise typer.Exit(1)


def _check_option_combination(
    files: list[Path], output: Path | None, out_dir: Path | None, sdxl_pair: bool
) -> None:
    """Refuse contradictory options as usage errors (exit 2), before any file is read; the
    library repeats these checks for Python callers."""
    if output is not None and out_dir is not None:
        raise typer.BadParameter("give -o/--output or --out-dir, not both", param_hint="-o")
    if sdxl_pair and len(files) != 2:
        raise typer.BadParameter("an SDXL pair is exactly two files", param_hint="--sdxl-pair")
    if output is not None and len(files) > 1 and not sdxl_pair:
        raise typer.BadParameter(
            f"one output file for {len(files)} inputs; use --out-dir for several inputs",
            param_hint="-o",
        )


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("inspect")(inspect)
    app.command("convert")(convert)
