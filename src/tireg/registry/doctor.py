"""``tireg doctor``: find, and on request repair, what interrupted runs and outside hands leave.

The catalogue and the store are kept consistent by construction (a store file is durable before
the row that names it commits), but two things can still drift:

* **Orphaned store files.** An import killed between writing a store file and committing its
  row leaves the file with no row (1,006 files for 704 rows after two interrupts, in one user's
  report). They are harmless but waste space. A file younger than :data:`ORPHAN_MIN_AGE_S` may
  belong to an import running right now, whose commit is moments away, so it is never touched.
* **Missing or damaged store files, and search-index drift.** Someone deleted or edited files
  under ``store/``, or restored an old backup of the catalogue. Missing files can only be
  restored by importing the original again; the FTS index is rebuilt from the catalogue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from tireg.db import Catalogue
from tireg.db.schema import EmbeddingRow
from tireg.registry import search_index
from tireg.registry.store import SUFFIX, ContentStore

#: a store file with no row is only called an orphan once it is this old: an import writes the
#: file first and commits its row within seconds, so anything younger may be in flight
ORPHAN_MIN_AGE_S = 15 * 60


@dataclass
class DoctorReport:
    """What :func:`examine` found and, with ``repair``, what it fixed."""

    embeddings: int = 0
    store_files: int = 0
    orphans: list[str] = field(default_factory=list)  # store paths with no catalogue row
    young_orphans: int = 0  # rowless files too young to judge (an import may be running)
    missing: list[str] = field(default_factory=list)  # refs whose store file is gone
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (store path, why)
    index_drift: int = 0  # embeddings whose FTS row is absent, extra or out of date
    stale_temporaries: int = 0
    repaired: bool = False

    @property
    def healthy(self) -> bool:
        """Nothing left that needs the user (orphans and drift count until repaired)."""
        if self.missing or self.damaged:
            return False
        return self.repaired or not (self.orphans or self.index_drift)

    def to_dict(self) -> dict[str, Any]:
        return {
            "embeddings": self.embeddings,
            "store_files": self.store_files,
            "orphans": self.orphans,
            "young_orphans": self.young_orphans,
            "missing": self.missing,
            "damaged": [{"path": p, "reason": r} for p, r in self.damaged],
            "index_drift": self.index_drift,
            "stale_temporaries": self.stale_temporaries,
            "repaired": self.repaired,
            "healthy": self.healthy,
        }


def examine(
    catalogue: Catalogue, *, repair: bool = False, store: ContentStore | None = None
) -> DoctorReport:
    """Check the catalogue against its store and search index; with ``repair``, fix what can be.

    Repairs: orphaned store files older than :data:`ORPHAN_MIN_AGE_S` are deleted, and the FTS
    index is rebuilt when it drifted (one transaction). Missing and damaged store files are only
    reported: their vectors exist nowhere else, so the fix is importing the original again.
    """
    store = store if store is not None else ContentStore()
    report = DoctorReport(stale_temporaries=store.swept)

    # 1. What the catalogue expects, and what the store holds
    with catalogue.reading() as session:
        rows = session.execute(
            select(EmbeddingRow.id, EmbeddingRow.name, EmbeddingRow.vectors_sha256)
        ).all()
        drift = _index_drift(session) if search_index.has_index(session) else 0
    report.embeddings = len(rows)
    expected = {sha for _, _, sha in rows}
    on_disk = {f.name[: -len(SUFFIX)]: f for f in store.files()}
    report.store_files = len(on_disk)

    # 2. Files without rows: orphans once old enough
    cutoff = time.time() - ORPHAN_MIN_AGE_S
    old_orphans = []
    for sha, file in sorted(on_disk.items()):
        if sha in expected:
            continue
        try:
            old = file.stat().st_mtime < cutoff
        except OSError:
            continue  # removed meanwhile
        if old:
            old_orphans.append(file)
        else:
            report.young_orphans += 1
    report.orphans = [f.relative_to(store.root).as_posix() for f in old_orphans]

    # 3. Rows without (good) files
    for _, name, sha in rows:
        if sha not in on_disk:
            report.missing.append(f"{name}@{sha[:8]}")
    check = store.verify()
    report.damaged = list(check.bad)
    report.index_drift = drift

    # 4. Repairs
    if repair:
        for file in old_orphans:
            store.remove(file)
        if drift:
            with catalogue.transaction() as session:
                search_index.rebuild(session)
        report.repaired = True
    return report


def _index_drift(session: Any) -> int:
    """How many embeddings' search-index rows (word or trigram index) are missing, left over,
    or differ from what the catalogue says they should hold."""
    ids = set(session.scalars(select(EmbeddingRow.id)).all())
    documents = search_index.documents(session, ids)
    drifted: set[int] = set()
    index = search_index.backend(session)
    for columns, indexed in index.stored(session) if index is not None else []:
        drifted |= set(indexed) - ids
        for embedding_id in ids:
            expected = documents.get(embedding_id)
            wanted = None if expected is None else {c: expected[c] for c in columns}
            if indexed.get(embedding_id) != wanted:
                drifted.add(embedding_id)
    return len(drifted)
