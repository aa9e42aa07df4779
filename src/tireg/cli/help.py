"""Help text as people read it, applied once to the whole command tree.

typer (0.29) prints each parameter's Python type as a placeholder (``<bool>``, ``<str>``,
``<list[Path]>``), keeps a docstring's source line breaks inside paragraphs, and matches choices
case-sensitively, so ``--ui A1111`` fails. Rather than repeat a metavar and a flag on every
option of every command, :func:`polish` walks the built command tree before it runs and fixes
all three; ``tests/test_help.py`` renders every command's help to hold typer to it.
"""

from __future__ import annotations

import inspect
from typing import Any

#: placeholders for option values by annotation; anything else is named after the option
_BY_TYPE: dict[Any, str] = {int: "N", float: "X"}


def polish(command: Any) -> None:
    """Give ``command`` and every sub-command plain placeholders, reflowed paragraphs and
    case-insensitive choices."""
    command.help = _reflow(command.help)
    if hasattr(command, "get_help_option"):
        make_help = command.get_help_option

        def help_option(ctx: Any, make_help: Any = make_help) -> Any:
            option = make_help(ctx)
            if option is not None:
                option.display_type_rich = lambda ctx: None  # a flag: nothing to type
            return option

        command.get_help_option = help_option
    for param in command.params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None:
            continue  # a parameter typer did not build (none today)
        if descriptor.is_choice:
            descriptor.parameter_info.case_sensitive = False
        shown = param.metavar if param.metavar is not None else _placeholder(param, descriptor)
        if param.param_type_name == "argument" and param.metavar is None:
            param.metavar = (param.name or "value").upper()  # the usage line names it so
        # typer asks each parameter for its type column; ours answers with the placeholder
        param.display_type_rich = lambda ctx, shown=shown: shown or None
    for sub in getattr(command, "commands", {}).values():
        polish(sub)


def _placeholder(param: Any, descriptor: Any) -> str:
    """``a1111|forge`` for a choice, nothing for a flag or an argument (its name shows), else
    ``N``/``X`` for numbers or the option's name in capitals."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if descriptor.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in descriptor.choices)
    if param.param_type_name == "argument":
        return ""  # its name is the placeholder (see polish)
    annotation = descriptor.annotation
    return _BY_TYPE.get(annotation, (param.name or "value").upper())


def _reflow(text: str | None) -> str | None:
    """Join the source's line breaks inside each paragraph; paragraphs stay apart."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
