"""Removing embeddings from the catalogue: ``tireg rm``.

Removing an embedding deletes its row (tags, provenance, previews, compatibility facts and install
records go with it), its search-index row, and its content-store file, which belongs to it alone:
the store is keyed by the vectors, and the vectors are unique per row. Files installed into UIs
are left where they are (a UI may be using them) unless ``uninstall`` is asked for; then the ones
still exactly as tireg wrote them are deleted first, and modified ones are kept and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tireg.db.schema import EmbeddingRow
from tireg.db.session import Catalogue
from tireg.registry import install, naming, search_index
from tireg.registry.store import ContentStore


@dataclass
class Removal:
    """What :func:`remove` did to one embedding."""

    ref: str
    vectors_sha256: str
    uninstalled: list[install.UninstallOutcome] = field(default_factory=list)
    left_installed: list[str] = field(default_factory=list)  # existing files, no longer tracked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def remove(
    catalogue: Catalogue,
    specs: Sequence[str],
    *,
    uninstall: bool = False,
    force: bool = False,
    source: str | None = None,
    store: ContentStore | None = None,
) -> list[Removal]:
    """Remove the embeddings ``specs`` name (all resolved before anything changes).

    With ``uninstall``, their installed files are removed first (``force`` also removes files
    modified since install); otherwise installed files stay, untracked, and are reported.
    """
    store = store if store is not None else ContentStore()
    with catalogue.reading() as session:
        rows = naming.resolve_many(session, specs, source=source)
        shown = naming.refs(session, rows)
        installs = {row.id: list(row.installs) for row in rows}
    removals = []
    for row in rows:
        removal = Removal(shown[row.id], row.vectors_sha256)
        if uninstall:
            removal.uninstalled = install.uninstall_rows(
                catalogue, installs[row.id], force=force, refs=shown
            )
        kept = {u.path for u in removal.uninstalled if u.status == "kept"}
        removal.left_installed = [  # a file deleted by hand is not left anywhere
            i.path
            for i in installs[row.id]
            if (not uninstall or i.path in kept) and Path(i.path).is_file()
        ]
        with catalogue.transaction() as session:
            found = session.get(EmbeddingRow, row.id)
            if found is not None:
                session.delete(found)
                search_index.remove(session, row.id)
        # after the commit: a crash before this line leaves an orphan file, never a dangling row
        store.path(row.vectors_sha256).unlink(missing_ok=True)
        removals.append(removal)
    return removals
