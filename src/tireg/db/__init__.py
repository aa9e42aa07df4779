"""The catalogue database: its schema (:mod:`.schema`) and how to open it (:mod:`.session`).

The names below load :mod:`.session`, and with it SQLAlchemy, on first use only: ``tireg list``
reads through :mod:`.reader` and never needs them (see there why).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tireg.db.session import Catalogue, CatalogueError, head_revision, open_catalogue

__all__ = ["Catalogue", "CatalogueError", "head_revision", "open_catalogue"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tireg.db.session"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
