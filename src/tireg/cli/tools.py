"""``tireg similar``, ``mix``, ``merge``, ``trim``, ``scale``: how embeddings' vectors relate,
and new embeddings made from them (each a catalogue entry whose lineage ``tireg show`` lists)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from tireg.cli import completion
from tireg.cli.options import DbOption, JsonOption, NameArgument, NamesArgument
from tireg.cli.output import Column, console, print_json, print_listing

if TYPE_CHECKING:
    from tireg.registry.reshape import Made


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("similar")(similar_command)
    app.command("mix")(mix_command)
    app.command("merge")(merge_command)
    app.command("trim")(trim_command)
    app.command("scale")(scale_command)
    app.command("tokens")(tokens_command)
    app.command("from-text")(from_text_command)


#: ``--model``: the checkpoint whose vocabulary is read
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint file or diffusers folder, or a name/hash known to tireg model.",
        autocompletion=completion.model_names,
    ),
]

#: ``--name``: the new embedding's name, the word typed in a prompt
NewNameOption = Annotated[
    str, typer.Option("--name", help="The new embedding's name (the word you type in a prompt).")
]


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
    print_listing(
        found,
        (Column("name (type this)", no_wrap=True), "family", "vectors", "score"),
        lambda n: (n.ref, n.family, n.num_vectors, f"{n.score:.4f}"),
        json_out=json_out,
        title=f"similar to {name}",
    )


def _print_made(made: Made, json_out: bool) -> None:
    if json_out:
        print_json(made.to_dict())
        return
    console.print(
        Text(
            f"{made.operation}: {', '.join(made.parents)} -> {made.ref}"
            f" ({made.family}, {made.num_vectors} vectors)"
        )
    )


def mix_command(
    expression: Annotated[str, typer.Argument(help='Weighted sum, e.g. "0.7*a + 0.3*b".')],
    name: NewNameOption,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """A weighted sum of embeddings of one family and shape, vector by vector.

    Example: tireg mix "0.7*birb-style + 0.3*other-style" --name birb-mix
    """
    from tireg.db import open_catalogue
    from tireg.registry.reshape import mix

    with open_catalogue(db) as catalogue:
        _print_made(mix(catalogue, expression, name=name), json_out)


def merge_command(
    names: NamesArgument,
    name: NewNameOption,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """One embedding holding the vectors of several, one after another (typing "a b").

    Example: tireg merge birb-style cat-toy --name birb-cat
    """
    from tireg.db import open_catalogue
    from tireg.registry.reshape import merge

    with open_catalogue(db) as catalogue:
        _print_made(merge(catalogue, names, name=name), json_out)


def trim_command(
    source: NameArgument,
    vectors: Annotated[str, typer.Option("--vectors", help="Which vectors: START:STOP.")],
    name: NewNameOption,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Keep some of an embedding's vectors (Python slice syntax).

    Example: tireg trim "gasai yuno@9c4bd9a4" --vectors 0:4 --name yuno4
    """
    from tireg.db import open_catalogue
    from tireg.registry.reshape import trim

    with open_catalogue(db) as catalogue:
        _print_made(trim(catalogue, source, vectors, name=name), json_out)


def scale_command(
    source: NameArgument,
    factor: Annotated[float, typer.Argument(help="Multiply every vector by this.")],
    name: NewNameOption,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Every vector times a factor: below 1 a weaker concept, above 1 a stronger one.

    Example: tireg scale birb-style 0.8 --name birb-08
    """
    from tireg.db import open_catalogue
    from tireg.registry.reshape import scale

    with open_catalogue(db) as catalogue:
        _print_made(scale(catalogue, source, factor, name=name), json_out)


def tokens_command(
    name: NameArgument,
    model: ModelOption,
    top: Annotated[int, typer.Option("--top", min=1, max=50, help="Tokens per vector.")] = 5,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """What each vector "means" on a model: its nearest vocabulary tokens by cosine.

    Reads only the token-embedding table from the checkpoint (SDXL: both encoders), as A1111's
    Embedding Inspector shows it.

    Example: tireg tokens birb-style --model ~/models/v1-5-pruned-emaonly.safetensors
    """
    from tireg.ml import require_ml

    require_ml("tireg tokens")
    from tireg.db import open_catalogue
    from tireg.vocab.words import tokens_of

    with open_catalogue(db) as catalogue:
        found = tokens_of(catalogue, name, model, top=top)
    if json_out:
        print_json(found)
        return
    table = Table(title=Text(f"{found['ref']} on {found['model']}"))  # names are anybody's text
    for column in ("encoder", "vector", "nearest tokens (cosine)"):
        table.add_column(column)
    for key, rows in found["encoders"].items():
        for index, matches in enumerate(rows):
            words = ", ".join(f"{m['token']!r} {m['score']:.3f}" for m in matches)
            table.add_row(key, str(index), Text(words))
    console.print(table)


def from_text_command(
    text: Annotated[str, typer.Argument(help="Words whose token vectors become the embedding.")],
    model: ModelOption,
    name: NewNameOption,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """A new embedding made of the model's own vectors for some words (one vector per token),
    as A1111's "initialization text" starts a training run.

    Example: tireg from-text "a red fox" --model v1-5.safetensors --name fox
    """
    from tireg.ml import require_ml

    require_ml("tireg from-text")
    from tireg.db import open_catalogue
    from tireg.vocab.words import from_text

    with open_catalogue(db) as catalogue:
        _print_made(from_text(catalogue, text, model, name=name), json_out)
