"""The UIs the gallery offers install buttons for: those found on this machine.

Detection is :func:`tireg.registry.uis.locate`, the same search ``tireg install --ui`` does
(the current folder, the usual folders in the home folder, ``$INVOKEAI_ROOT``), with the roots
given to ``tireg serve --ui-root UI=PATH`` taking the place of the search for their UI, exactly
as ``--ui-root`` does for one install.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tireg.errors import TiregError
from tireg.registry.uis import UIS, UiError, UiRoot, locate


def parse_roots(items: list[str]) -> dict[str, Path]:
    """``["a1111=/opt/webui", ...]`` as ``{ui: root}``; a root that does not look like its UI
    is refused now, as ``install --ui-root`` would refuse it."""
    roots: dict[str, Path] = {}
    for item in items:
        ui, sep, path = item.partition("=")
        if not sep or not path:
            raise TiregError(f"--ui-root {item!r} is not UI=PATH", hint="e.g. a1111=~/webui")
        roots[ui.strip()] = locate(ui.strip(), path).root
    return roots


def detected(roots: Mapping[str, Path]) -> list[UiRoot]:
    """Every UI with a root: the configured one, else the first found in the usual places."""
    found = []
    for ui in UIS:
        try:
            found.append(locate(ui, roots.get(ui)))
        except UiError:
            continue
    return found
