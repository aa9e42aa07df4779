"""The ``tireg`` application: builds the typer app from one module per command group.

Each group module exposes ``register(app)``; commands parse arguments, call one library function
and print. Expected failures (:class:`tireg.errors.TiregError`) become one line on stderr and exit
code 1; bad usage exits 2; nothing here imports torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from tireg import __version__
from tireg.cli.help import polish
from tireg.cli.output import err_console, printable
from tireg.errors import TiregError

#: command-group modules under tireg.cli, in the order their commands appear in --help
GROUPS = (
    "formats",
    "add",
    "source",
    "find",
    "install",
    "remote",
    "publish",
    "models",
    "validate",
    "train",
    "tools",
    "doctor",
    "serve",
)

app = typer.Typer(
    name="tireg",
    help=(
        "tireg: the textual-inversion embedding registry.\n\n"
        "Find, convert, check and install Stable Diffusion embeddings;"
        " pickles are never executed.\n\n"
        "Example: tireg inspect embeddings/*.pt"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"tireg {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print tireg's version."),
    ] = False,
) -> None:
    """Options of ``tireg`` itself (the commands are registered below)."""


for _group in GROUPS:
    importlib.import_module(f"tireg.cli.{_group}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exits 0 on success, 1 on a data or user error, 2 on bad usage.

    typer's standalone mode already turns usage errors into exit 2 and its own exceptions into
    messages; what it lets through is ours, and a :class:`TiregError` becomes one line, with
    control characters and newlines from the names in it escaped (:func:`printable`).
    """
    command = typer.main.get_command(app)
    polish(command)
    try:
        command(args=argv, prog_name="tireg")
    except TiregError as exc:
        err_console.print(printable(f"error: {exc}", one_line=True), markup=False, soft_wrap=True)
        sys.exit(1)
