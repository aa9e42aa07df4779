"""Options shared by many commands, declared once so every command spells them the same way."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from tireg.cli import completion

#: ``--db URL``: which catalogue to use (any SQLAlchemy URL); ``TIREG_DATABASE_URL`` sets it too.
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TIREG_DATABASE_URL",
        metavar="URL",
        help="Catalogue database (any SQLAlchemy URL); default: SQLite under TIREG_HOME.",
        show_envvar=True,
    ),
]

#: ``--json``: print machine-readable JSON instead of tables.
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

#: ``--hf-endpoint URL``: the Hugging Face Hub to talk to (a mirror, or a test server).
HfEndpointOption = Annotated[
    str | None,
    typer.Option("--hf-endpoint", metavar="URL", help="Hub URL (default: HF_ENDPOINT)."),
]

#: ``NAME``: one embedding under the naming rule, completed from the catalogue.
NameArgument = Annotated[
    str,
    typer.Argument(
        help="NAME, NAME@HEX or a hash prefix.", autocompletion=completion.embedding_refs
    ),
]

#: ``NAMES...``: several embeddings under the naming rule, completed from the catalogue.
NamesArgument = Annotated[
    list[str],
    typer.Argument(
        help="NAMEs, NAME@HEX or hash prefixes.", autocompletion=completion.embedding_refs
    ),
]

#: ``--device``: where the ML commands run (``tireg.pipelines.loading.pick_device``).
DeviceOption = Annotated[
    Literal["auto", "cuda", "mps", "cpu"],
    typer.Option("--device", help="Where to run: auto takes CUDA, then MPS, then the CPU."),
]
