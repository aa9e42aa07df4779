"""Help text as people read it, applied once to the whole command tree.

typer (0.28) prints each parameter's Python type as a placeholder (``<text>``, ``<path>``,
``<integer>``), keeps a docstring's source line breaks inside paragraphs, and matches choices
case-sensitively, so ``--ui A1111`` fails. Rather than repeat a metavar and a flag on every
option of every command, :func:`polish` walks the built command tree before it runs and fixes
all three; ``tests/test_help.py`` renders every command's help to hold typer to it.

Why typer 0.28 and not 0.29 (``pyproject.toml`` pins it): 0.29 validates every parameter of the
command it runs through a pydantic ``TypeAdapter``, which imports pydantic on every run, about
110 ms of the 0.3 s ``tireg list`` may take to start (``bench/startup.py``).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

#: placeholders for option values by click type name; anything else is named after the option
_BY_TYPE: dict[str, str] = {"integer": "N", "float": "X", "integer range": "N", "float range": "X"}


def polish(command: Any) -> None:
    """Give ``command`` and every sub-command plain placeholders, reflowed paragraphs and
    case-insensitive choices."""
    command.help = _reflow(command.help)
    for param in command.params:
        choices = getattr(param.type, "choices", None)
        if choices is not None:
            param.type.case_sensitive = False  # typer makes one Choice per parameter
        if param.param_type_name == "argument":
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()  # the usage line names it so
            # the help's type column asks the type for a metavar; an argument's name says it all
            param.type = copy.copy(param.type)
            param.type.get_metavar = lambda param, ctx: ""
        elif param.metavar is None and not (param.is_flag or param.count):
            param.metavar = _placeholder(param, choices)
    for sub in getattr(command, "commands", {}).values():
        polish(sub)


def _placeholder(param: Any, choices: Any) -> str:
    """``a1111|forge`` for a choice, ``N``/``X`` for numbers, else the option's name in
    capitals."""
    if choices is not None:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    return _BY_TYPE.get(param.type.name, (param.name or "value").upper())


def _reflow(text: str | None) -> str | None:
    """Join the source's line breaks inside each paragraph; paragraphs stay apart."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
