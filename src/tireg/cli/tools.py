"""``tireg similar``: tools that look at what embeddings' vectors mean and how they relate."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tireg.cli.options import DbOption, JsonOption, NameArgument
from tireg.cli.output import console, print_json


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("similar")(similar_command)


def similar_command(
    name: NameArgument,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many to show.")] = 10,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """The catalogue's embeddings most like this one, of the same family.

    Score: the cosine similarity of the mean vectors, averaged over the text encoders (SDXL:
    CLIP-L and CLIP-G); 1.0 is the same direction. The first question builds a cache of every
    embedding's mean vector; later ones read only what changed.

    Example: tireg similar "gasai yuno@9c4bd9a4" --limit 5
    """
    from tireg.db import open_catalogue
    from tireg.registry.similar import similar

    with open_catalogue(db) as catalogue:
        found = similar(catalogue, name, limit=limit)
    if json_out:
        print_json([n.to_dict() for n in found])
        return
    if not found:
        console.print("no matches")
        return
    table = Table(title=f"similar to {name}")
    for column in ("name (type this)", "family", "vectors", "score"):
        table.add_column(column, no_wrap=column == "name (type this)")
    for n in found:
        table.add_row(Text(n.ref), n.family, str(n.num_vectors), f"{n.score:.4f}")
    console.print(table)
