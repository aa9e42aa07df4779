"""The ``tireg`` application: builds the typer app from one module per command group.

Each group module exposes ``register(app)``; commands parse arguments, call one library function
and print. Expected failures (:class:`tireg.errors.TiregError`) become one line on stderr and exit
code 1; bad usage exits 2; nothing here imports torch.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo, TyperInfo

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


class _LazyGroup(TyperGroup):
    """tireg's root group, whose commands are built from their declarations only when one runs.

    Building a command means reading its function's signature and resolving every annotation
    (typer's ``get_params_from_function``): about 3 ms a command, a third of ``--help``'s start
    for all of them. So ``--help`` lists summaries (a name and a docstring, no parameters) and
    :meth:`resolve_command`, which runs, completes or shows the help of one command, swaps that
    one summary for the real command first. Click lists and suggests commands from ``commands``
    (``rich_utils.rich_format_help``, ``TyperGroup.resolve_command``), so the summaries stand in
    for everything but running.
    """

    declared: dict[str, CommandInfo | TyperInfo]

    def declare(self, typer_app: typer.Typer) -> None:
        """Take ``typer_app``'s commands and groups as summaries, in their declared order."""
        self.declared = {}
        infos: list[CommandInfo | TyperInfo] = [*typer_app.registered_commands]
        for info in [*infos, *typer_app.registered_groups]:
            summary = _summary(info)
            polish(summary)
            self.declared[summary.name or ""] = info
            self.commands[summary.name or ""] = summary

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in self.declared and isinstance(self.commands[args[0]], _Summary):
            built = _build(self.declared[args[0]], self.rich_markup_mode)
            polish(built)
            self.commands[args[0]] = built
        return super().resolve_command(ctx, args)


class _Summary(TyperCommand):
    """A command as ``tireg --help`` lists it: its name and help, nothing to run."""


def _summary(info: CommandInfo | TyperInfo) -> _Summary:
    solved: CommandInfo | TyperInfo
    if isinstance(info, TyperInfo):
        solved = typer.main.solve_typer_info_defaults(info)
        name = solved.name
        help_text: str | None = solved.help
    else:
        solved = info
        assert info.callback is not None
        name = info.name or typer.main.get_command_name(info.callback.__name__)
        help_text = inspect.cleandoc(info.help) if info.help else inspect.getdoc(info.callback)
    assert isinstance(name, str)
    return _Summary(
        name=name,
        help=help_text,
        short_help=solved.short_help,
        hidden=bool(solved.hidden),
        deprecated=bool(solved.deprecated),
        rich_help_panel=solved.rich_help_panel,
    )


def _build(info: CommandInfo | TyperInfo, markup: Any) -> Any:
    """The real command (or group) ``info`` declares, as ``typer.main.get_command`` builds it."""
    if isinstance(info, TyperInfo):
        return typer.main.get_group_from_info(
            info,
            pretty_exceptions_short=app.pretty_exceptions_short,
            suggest_commands=app.suggest_commands,
            rich_markup_mode=markup,
        )
    return typer.main.get_command_from_info(
        info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=markup
    )


def command() -> TyperGroup:
    """The ``tireg`` command: its own options built now, each command when it runs.

    ``app`` stays the full declaration (``typer.main.get_command(app)`` builds every command, as
    tests do); this builds a copy that holds only the root callback, then declares the rest.
    """
    root_only = copy.copy(app)
    root_only.registered_commands, root_only.registered_groups = [], []
    root_only.info = copy.copy(app.info)
    root_only.info.cls = _LazyGroup
    root = typer.main.get_command(root_only)
    assert isinstance(root, _LazyGroup)
    polish(root)
    root.declare(app)
    return root


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exits 0 on success, 1 on a data or user error, 2 on bad usage.

    typer's standalone mode already turns usage errors into exit 2 and its own exceptions into
    messages; what it lets through is ours, and a :class:`TiregError` becomes one line, with
    control characters and newlines from the names in it escaped (:func:`printable`).
    """
    try:
        command()(args=argv, prog_name="tireg")
    except TiregError as exc:
        err_console.print(printable(f"error: {exc}", one_line=True), markup=False, soft_wrap=True)
        sys.exit(1)
