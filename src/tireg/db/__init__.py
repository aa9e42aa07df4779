"""The catalogue database: its schema (:mod:`.models`) and how to open it (:mod:`.session`)."""

from tireg.db.session import Catalogue, CatalogueError, head_revision, open_catalogue

__all__ = ["Catalogue", "CatalogueError", "head_revision", "open_catalogue"]
