"""``tireg list``, ``search``, ``show``, ``tag`` and ``rm``: finding and looking at the catalogue.

Every command that takes a NAME follows the naming rule of :mod:`tireg.registry.query`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table
from rich.text import Text

from tireg.cli import completion
from tireg.cli.options import DbOption, JsonOption, NameArgument, NamesArgument
from tireg.cli.output import Column, console, print_json, print_listing
from tireg.errors import TiregError

if TYPE_CHECKING:  # the commands import the catalogue when they run, so --help stays light
    from tireg.db.session import Catalogue
    from tireg.registry.listing import EmbeddingSummary

NAMING_RULE = (
    "NAME is an embedding's trigger (case and <brackets> ignored), a vectors-hash prefix of 6+ "
    "hex digits, or NAME@HEX when several share a name; listings show exactly what to type in "
    "their first column. --source narrows by source kind (hf, civitai, local...) or location."
)

SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source", metavar="SOURCE", help="Only embeddings from this source kind or location."
    ),
]
FamilyOption = Annotated[
    Literal["sd1", "sd2", "sdxl", "unknown"] | None,
    typer.Option("--family", help="Model family."),
]
TypeOption = Annotated[
    Literal["object", "style"] | None, typer.Option("--type", help="Concept type.")
]
#: the remotes :func:`tireg.registry.remote.search_remote` knows (a test keeps them equal)
Remote = Literal["civitai"]
TagOption = Annotated[str | None, typer.Option("--tag", help="Only embeddings with this tag.")]
VectorsOption = Annotated[
    int | None, typer.Option("--vectors", min=1, help="Only embeddings with this many vectors.")
]
CompatibleOption = Annotated[
    str | None,
    typer.Option(
        "--compatible-with",
        metavar="MODEL",
        help="Only embeddings that work on this model (checkpoint path, hash or name).",
        autocompletion=completion.model_names,
    ),
]


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("list")(list_command)
    app.command("search")(search_command)
    app.command("show", epilog=NAMING_RULE)(show_command)
    app.command("tag", epilog=NAMING_RULE)(tag_command)
    app.command("rm", epilog=NAMING_RULE)(rm_command)


#: a listing of embeddings; step and trained-on model tell versions of one embedding apart
_EMBEDDING_COLUMNS = (
    Column("name (type this)", no_wrap=True),  # what the user types: never broken up
    *(Column(h, min_width=len(h)) for h in ("family", "vectors", "step", "trained on", "tags")),
    Column("about", overflow="ellipsis", no_wrap=True, ratio=1),
)


def _embedding_cells(row: EmbeddingSummary) -> tuple[Any, ...]:
    about = (row.description or "").splitlines()[0][:60] if row.description else ""
    return (
        row.ref,
        row.family,
        row.num_vectors,
        row.step,
        row.trained_on,
        ", ".join(row.tags),
        about,
    )


def list_command(
    family: FamilyOption = None,
    concept_type: TypeOption = None,
    source: SourceOption = None,
    tag: TagOption = None,
    vectors: VectorsOption = None,
    compatible_with: CompatibleOption = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many; 0: all.")] = 100,
    near_duplicates: Annotated[
        bool,
        typer.Option(
            "--near-duplicates",
            help="Instead: groups of embeddings whose vectors agree within float16 rounding"
            " (fp16 copies, re-saves, re-uploads under other names), so you can keep one.",
        ),
    ] = False,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List catalogued embeddings by name.

    Example: tireg list --family sdxl --type style
    """
    # no SQLAlchemy on a SQLite catalogue at head: tireg.registry.listing says why
    from tireg.registry import listing

    if near_duplicates:
        _print_near_duplicates(db, json_out)
        return
    filters = listing.Filters(
        family, concept_type, source, tag, vectors, compatible_with=compatible_with
    )
    rows = listing.list_sqlite_file(db, filters, limit=limit or None)
    if rows is None:  # not a SQLite file at head: through SQLAlchemy, the same statements
        from tireg.db import open_catalogue
        from tireg.registry import query

        with open_catalogue(db) as catalogue:
            rows = query.list_catalogue(catalogue, filters, limit=limit or None)
    print_listing(rows, _EMBEDDING_COLUMNS, _embedding_cells, json_out=json_out, title="catalogue")
    if not json_out and limit and len(rows) == limit:
        console.print(f"(first {limit}; --limit 0 lists all)")


def _print_near_duplicates(db: str | None, json_out: bool) -> None:
    from tireg.db import open_catalogue
    from tireg.registry.similar import near_duplicates

    with open_catalogue(db) as catalogue:
        groups = near_duplicates(catalogue)
    print_listing(
        list(enumerate(groups, 1)),
        (Column("group", justify="right"), "embeddings (type these)"),
        lambda group: (group[0], "\n".join(group[1])),
        json_out=json_out,
        title="near-duplicates (same vectors within float16 rounding)",
        empty="no near-duplicates",
        as_json=lambda group: group[1],
    )


def search_command(
    words: Annotated[list[str], typer.Argument(help="Words to find (all must match).")],
    family: FamilyOption = None,
    concept_type: TypeOption = None,
    source: SourceOption = None,
    tag: TagOption = None,
    vectors: VectorsOption = None,
    compatible_with: CompatibleOption = None,
    remote_name: Annotated[
        Remote | None,
        typer.Option("--remote", help="Search a remote site instead of the catalogue."),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="With --remote: only this base model.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Search the catalogue, best matches first.

    Searches names, triggers, description, tags and sources; every word must match, the last
    one also as a prefix. Sources known but not downloaded (sync hf without --download, source
    add, search --remote) are listed after, marked available, each with the REF tireg install
    takes. With --remote civitai the site is searched instead, and each result's spec can be
    given to tireg install (the results are remembered: a later search finds them, available).

    Example: tireg search cat toy --family sd1
    """
    from tireg.db import open_catalogue
    from tireg.registry import query

    text = " ".join(words)
    if remote_name is not None:
        from tireg.registry import remote

        try:  # the catalogue remembers what was found, as available
            catalogue: Catalogue | None = open_catalogue(db)
        except TiregError:  # none can be opened here: the remote answers all the same
            catalogue = None
        try:
            found = remote.search_remote(
                remote_name, text, base_model=base_model, limit=limit, catalogue=catalogue
            )
        finally:
            if catalogue is not None:
                catalogue.close()
        _print_remote(found, json_out)
        return
    filters = query.Filters(
        family, concept_type, source, tag, vectors, compatible_with=compatible_with
    )
    with open_catalogue(db) as catalogue:
        results = query.search_catalogue(catalogue, text, filters, limit=limit)
    rows, remote_rows = results.local, results.available
    if json_out:
        print_json(
            [{**r.to_dict(), "state": "local"} for r in rows] + [a.to_dict() for a in remote_rows]
        )
        return
    if rows or not remote_rows:
        title = f"search: {text}"
        print_listing(rows, _EMBEDDING_COLUMNS, _embedding_cells, json_out=False, title=title)
    print_listing(
        remote_rows,
        (Column("ref (install this)", no_wrap=True), "kind", "trigger", "base model", "title"),
        lambda entry: (entry.ref, entry.kind, entry.trigger, entry.base_model, entry.title),
        json_out=False,
        title="available, not downloaded (tireg install REF)",
        empty=None,
    )


def _print_remote(found: list[dict[str, Any]], json_out: bool) -> None:
    print_listing(
        found,
        ("spec (tireg install)", "name", "trigger", "base models", "downloads"),
        lambda item: (
            item["spec"],
            item.get("name"),
            item.get("trigger"),
            ", ".join(item.get("base_models") or []),
            item.get("downloads") or "",
        ),
        json_out=json_out,
        title="remote search",
    )


def show_command(
    name: NameArgument,
    source: SourceOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show everything known about one embedding.

    Facts, the stored file, sources, installs with their state, compatibility records,
    previews (files or image URLs), and other embeddings with the same name.

    Example: tireg show "gasai yuno@1a2b3c4d"
    """
    from tireg.db import open_catalogue
    from tireg.registry import query

    with open_catalogue(db) as catalogue:
        info = query.show_embedding(catalogue, name, source=source)
    data = info.to_dict()
    if json_out:
        print_json(data)
        return
    facts = Table(title=Text(info.summary.ref), show_header=False)
    facts.add_column("fact", style="bold")
    facts.add_column("value", overflow="fold")
    for key in (
        "name",
        "trained_as",
        "vectors_sha256",
        "family",
        "num_vectors",
        "widths",
        "concept_type",
        "tags",
        "description",
        "licence",
        "nsfw",
        "step",
        "trained_on_hash",
        "trained_on_name",
        "created_at",
        "store_file",
        "store_file_present",
    ):
        value = data[key]
        facts.add_row(key, Text(", ".join(value) if isinstance(value, list) else _text(value)))
    console.print(facts)
    _records("sources", data["sources"], ("location", "format", "original_sha256", "source"))
    _records("installs", data["installs"], ("state", "target", "path", "format"))
    _records("compatibility", data["compat"], ("relation", "model_ref", "evidence"))
    _records("previews", data["previews"], ("location", "sha256"))
    print_validations(data["validations"], json_out=False, empty=None)
    print_listing(
        data["lineage"],
        ("", "ref", "step", "loss", "operation", "run"),
        _lineage_cells,
        json_out=False,
        title="lineage (versions of the run)",
        empty=None,
    )
    if info.same_name:
        console.print(
            "same name, other embeddings: " + ", ".join(info.same_name),
            markup=False,
            soft_wrap=True,
        )


def _lineage_cells(version: dict[str, Any]) -> tuple[Any, ...]:
    """A version of the run that made an embedding (``*`` marks the one shown)."""
    loss = version["loss"]
    return (
        "*" if version["this"] else "",
        version["ref"],
        version["step"],
        "" if loss is None else f"{loss:.4f}",
        version["operation"],
        version["run_id"][:12],
    )


def print_validations(runs: list[dict[str, Any]], *, json_out: bool, empty: str | None) -> None:
    """Recorded validation runs (:func:`tireg.registry.validations.run_record`), one per row;
    ``show`` and ``validations`` both print them."""
    print_listing(
        runs,
        ("run", "when", "models", "embeddings", "seeds", "grid"),
        lambda run: (
            run["id"],
            f"{run['started_at']:%Y-%m-%d %H:%M}",
            ", ".join(
                f"{m['name']} [{(m['autov2'] or m['sha256'] or '-')[:10]}]" for m in run["models"]
            ),
            ", ".join(e["ref"] or "" for e in run["embeddings"]),
            ", ".join(map(str, run["seeds"])),
            run["grid"] + ("" if run["grid_present"] else " (missing)"),
        ),
        json_out=json_out,
        title="validations",
        empty=empty,
        as_json=lambda run: run,
    )


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items() if v not in (None, ""))
    return "" if value is None else str(value)


def _records(title: str, records: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    print_listing(
        records,
        columns,
        lambda record: [_text(record.get(c)) for c in columns],
        json_out=False,
        title=title,
        empty=None,
    )


def tag_command(
    name: NameArgument,
    add: Annotated[list[str] | None, typer.Argument(help="Tags to add.")] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", "-r", help="A tag to remove (repeatable).")
    ] = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add tags to an embedding (or remove them with -r); prints its tags afterwards.

    Example: tireg tag cat-toy toy cute -r wip
    """
    from tireg.db import open_catalogue
    from tireg.registry import tags

    with open_catalogue(db) as catalogue:
        now = tags.tag(catalogue, name, add or [], remove or [], source=source)
    if json_out:
        print_json(now)
    else:
        console.print(", ".join(now) if now else "(no tags)", markup=False, soft_wrap=True)


def rm_command(
    names: NamesArgument,
    uninstall: Annotated[
        bool, typer.Option("--uninstall", help="Also delete the files tireg installed.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --uninstall: also files modified since.")
    ] = False,
    source: SourceOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Remove embeddings from the catalogue and the content store.

    Installed files stay where they are (a UI may be using them) unless --uninstall.

    Example: tireg rm "cat-toy@1a2b3c4d" --uninstall
    """
    from tireg.db import open_catalogue
    from tireg.registry.removal import remove

    with open_catalogue(db) as catalogue:
        removals = remove(catalogue, names, uninstall=uninstall, force=force, source=source)
    if json_out:
        print_json([r.to_dict() for r in removals])
        return
    for removal in removals:
        console.print(f"removed {removal.ref}", markup=False, soft_wrap=True)
        for done in removal.uninstalled:
            console.print(f"  {done.status}: {done.path}", markup=False, soft_wrap=True)
        for path in removal.left_installed:
            console.print(
                f"  still installed (no longer tracked): {path}", markup=False, soft_wrap=True
            )
