"""``tireg serve``: the catalogue as a gallery in the browser, on this machine.

Flask and the gallery are imported inside the command, so ``tireg --help`` and every other
command never load a web framework.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tireg.cli.options import DbOption
from tireg.cli.output import console, err_console


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("serve")(serve_command)


def serve_command(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to listen on; anything but 127.0.0.1 opens it to others."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")
    ] = 8765,
    ui_root: Annotated[
        list[str] | None,
        typer.Option(
            "--ui-root",
            metavar="UI=PATH",
            help="A UI's install folder for the install buttons, e.g. a1111=~/webui "
            "(repeatable; other UIs are looked for where tireg install looks).",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Browse, search, filter and install embeddings in a local web gallery.

    Example: tireg serve --ui-root comfyui=~/ComfyUI
    """
    from werkzeug.serving import make_server

    from tireg.serve.app import create_app, settle
    from tireg.serve.targets import parse_roots

    roots = parse_roots(ui_root or [])
    from tireg.db import open_catalogue

    with open_catalogue(db) as catalogue:
        app = create_app(catalogue, roots)
        server = make_server(host, port, app, threaded=True)
        settle(app)
        if host not in ("127.0.0.1", "localhost", "::1"):
            err_console.print(
                f"warning: listening on {host}: anyone who can reach it can install embeddings",
                markup=False,
            )
        console.print(
            f"serving the gallery on http://{host}:{server.server_port}/ (Ctrl-C stops)",
            markup=False,
            soft_wrap=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
