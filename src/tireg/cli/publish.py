"""``tireg publish``: an embedding as a Hugging Face concept repo (sd-concepts-library layout)."""

from __future__ import annotations

from typing import Annotated

import typer

from tireg.cli.options import DbOption, HfEndpointOption, JsonOption, NameArgument
from tireg.cli.output import console, print_json


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("publish")(publish_command)


def publish_command(
    name: NameArgument,
    repo: Annotated[
        str,
        typer.Option(
            "--repo", metavar="OWNER/NAME", help="The Hub model repo to create or update."
        ),
    ],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repo private (an existing one keeps its).")
    ] = False,
    hf_endpoint: HfEndpointOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Publish an embedding to the Hub as a concept repo, committing only what changed.

    The repo gets learned_embeds.safetensors and .bin, token_identifier.txt,
    type_of_concept.txt, a README.md model card and concept_images/ from the previews; `tireg
    sync hf --author OWNER` finds it again. Needs a token: `hf auth login` or HF_TOKEN.

    Example: tireg publish "<birb-style>" --repo my-name/birb-style
    """
    from tireg.db import open_catalogue
    from tireg.registry.publish import publish

    with open_catalogue(db) as catalogue:
        report = publish(catalogue, name, repo, private=private, endpoint=hf_endpoint)
    if json_out:
        print_json(report.to_dict())
        return
    if report.commit is None:
        console.print(
            f"{report.url}: up to date, nothing committed"
            f" ({len(report.unchanged)} files unchanged)",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"{report.url}: commit {report.commit[:12]}: {len(report.uploaded)} uploaded, "
            f"{len(report.deleted)} deleted, {len(report.unchanged)} unchanged",
            markup=False,
            soft_wrap=True,
        )
        for path in report.uploaded:
            console.print(f"  uploaded {path}", markup=False, soft_wrap=True)
        for path in report.deleted:
            console.print(f"  deleted  {path}", markup=False, soft_wrap=True)
    for location in report.skipped_previews:
        console.print(f"  preview left out (not a local file): {location}", markup=False)
