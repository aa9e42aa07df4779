"""``tireg install``, ``uninstall`` and ``installed``: putting embeddings where UIs load them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.text import Text

from tireg.cli import completion
from tireg.cli.find import NAMING_RULE, SourceOption
from tireg.cli.options import DbOption, HfEndpointOption, JsonOption, NamesArgument
from tireg.cli.output import byte_progress, console, err_console, print_json, print_listing
from tireg.errors import TiregError

if TYPE_CHECKING:  # the commands import the catalogue when they run, so --help stays light
    from tireg.registry.install import Destination

LAYOUT = (
    "Files are safetensors named after the trigger: A1111/Forge <root>/embeddings/NAME "
    "(type NAME), ComfyUI <root>/models/embeddings/NAME (type embedding:NAME, spaces become _), "
    "InvokeAI <root>/models/{sd-1,sd-2,sdxl}/embedding/NAME (type <NAME>; InvokeAI 4+ needs a "
    "Scan Folder of it once). Without --ui-root the usual folders are searched (the current "
    "folder, ~/stable-diffusion-webui[-forge], ~/ComfyUI, $INVOKEAI_ROOT, ~/invokeai). A file "
    "holding a different embedding is never overwritten: use --as NEWNAME or --force."
)

#: the UIs of :data:`tireg.registry.uis.UIS`, and with ``dir`` its TARGETS (a test keeps them equal)
Ui = Literal["a1111", "forge", "comfyui", "invokeai"]
Target = Literal["a1111", "forge", "comfyui", "invokeai", "dir"]

UiOption = Annotated[Ui | None, typer.Option("--ui", help="Install into this UI.")]
UiRootOption = Annotated[
    Path | None,
    typer.Option("--ui-root", help="The UI's install folder (default: look in the usual places)."),
]
ToOption = Annotated[
    Path | None, typer.Option("--to", metavar="DIR", help="Install into this folder instead.")
]


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("install", epilog=f"{NAMING_RULE}\n\n{LAYOUT}")(install_command)
    app.command("uninstall", epilog=NAMING_RULE)(uninstall_command)
    app.command("installed")(installed_command)


def _destination(
    ui: str | None, ui_root: Path | None, to: Path | None, fmt: str | None
) -> Destination | None:
    if ui is not None and to is not None:
        raise TiregError("--ui and --to exclude each other", hint="pick one destination")
    if fmt is not None and to is None:
        raise TiregError("--format goes with --to", hint="UIs always get safetensors")
    if ui_root is not None and ui is None:
        raise TiregError("--ui-root goes with --ui", hint="for example --ui comfyui --ui-root DIR")
    from tireg.registry.install import Destination

    if ui is not None:
        return Destination.ui(ui, ui_root)
    if to is not None:
        return Destination.folder(to, fmt or "safetensors")
    return None


def install_command(
    specs: Annotated[
        list[str],
        typer.Argument(
            help="Catalogue NAMEs, or remote specs: hf:OWNER/REPO[@REV], civitai:MODEL[@VERSION], "
            "a URL or a MEGA link.",
            autocompletion=completion.embedding_refs,
        ),
    ],
    ui: UiOption = None,
    ui_root: UiRootOption = None,
    to: ToOption = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="With --to: the file format (safetensors).")
    ] = None,
    as_name: Annotated[
        str | None, typer.Option("--as", metavar="NEWNAME", help="Install under this trigger.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a different file at the target.")
    ] = False,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="A remote download must have this sha256.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="MODEL",
            help="Refuse embeddings that cannot work on this model (path, hash or name).",
            autocompletion=completion.model_names,
        ),
    ] = None,
    source: SourceOption = None,
    hf_endpoint: HfEndpointOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Install embeddings into a UI (or a folder), in the format it reads best.

    Remote specs are downloaded, verified and catalogued first; without --ui/--to they are only
    catalogued. Offline (TIREG_OFFLINE=1) they come from the download caches, and a line on
    stderr says so. Installing what is already installed does nothing. Embeddings that cannot
    work on --model, or (without --model) on any checkpoint the UI has, are refused unless
    --force.

    Example: tireg install cat-toy "gasai yuno" --ui comfyui
    """
    from tireg.db import open_catalogue
    from tireg.registry import install as installing
    from tireg.registry import remote

    dest = _destination(ui, ui_root, to, fmt)
    with (
        open_catalogue(db) as catalogue,
        byte_progress(disable=json_out or not any(remote.is_remote_spec(s) for s in specs)) as bar,
    ):
        task = bar.add_task("download", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        result = installing.install_specs(
            catalogue,
            specs,
            dest,
            as_name=as_name,
            force=force,
            source=source,
            sha256=sha256,
            model=model,
            progress=advance,
            hf_endpoint=hf_endpoint,
        )
    for spec in result.offline_cached:
        err_console.print(f"offline: using the cached copy of {spec}", markup=False, soft_wrap=True)
    if json_out:
        print_json(result.to_dict())
        return
    for ref in result.fetched:
        console.print(f"catalogued {ref}", markup=False, soft_wrap=True)
    print_listing(
        result.installed,
        ("embedding", "status", "type in a prompt", "file"),
        lambda done: (
            done.ref,
            done.status,
            done.prompt,
            f"{done.path}\n{done.preview}" if done.preview else done.path,
        ),
        json_out=False,
        title="installed",
        empty=None,
    )
    if dest is not None and dest.target == "invokeai":
        console.print(
            "InvokeAI 4+: run Scan Folder (in place) on the embedding folder once, "
            "or set scan_models_on_startup: true in invokeai.yaml."
        )


def uninstall_command(
    names: NamesArgument,
    ui: Annotated[Target | None, typer.Option("--ui", help="Only from this UI (or dir).")] = None,
    under: Annotated[
        Path | None, typer.Option("--under", metavar="DIR", help="Only files under this folder.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also delete files modified since install.")
    ] = False,
    source: SourceOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete the files tireg installed for these embeddings.

    Everywhere, or only those into --ui or under --under. A file changed since tireg wrote it
    is kept (and stays listed) unless --force; files tireg did not write are never touched.

    Example: tireg uninstall cat-toy --ui comfyui
    """
    from tireg.db import open_catalogue
    from tireg.registry import install as installing

    with open_catalogue(db) as catalogue:
        done = installing.uninstall(
            catalogue, names, target=ui, under=under, force=force, source=source
        )
    if json_out:
        print_json([d.to_dict() for d in done])
        return
    if not done:
        console.print("nothing installed matched")
    for item in done:
        why = f" ({item.reason})" if item.reason else ""
        console.print(f"{item.status}: {item.ref}: {item.path}{why}", markup=False, soft_wrap=True)


def installed_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="Only these embeddings (default: all).")
    ] = None,
    ui: Annotated[Target | None, typer.Option("--ui", help="Only this UI (or dir).")] = None,
    under: Annotated[
        Path | None, typer.Option("--under", metavar="DIR", help="Only files under this folder.")
    ] = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List installed files with their state: ok, modified, missing.

    modified: changed behind tireg's back since it was installed; missing: deleted.

    Example: tireg installed --ui a1111
    """
    from tireg.db import open_catalogue
    from tireg.registry import install as installing

    with open_catalogue(db) as catalogue:
        files = installing.installed(
            catalogue, specs=names or [], target=ui, under=under, source=source
        )
    print_listing(
        files,
        ("embedding", "type in a prompt", "state", "ui", "format", "file"),
        lambda f: (
            f.ref,
            f.prompt,
            Text(f.state, style={"ok": "green", "modified": "yellow", "missing": "red"}[f.state]),
            f.target,
            f.format,
            f.path,
        ),
        json_out=json_out,
        title="installed",
        empty="nothing installed",
    )
