"""Sources the user adds by hand (git repositories, rentry pages, MEGA links, URLs) and syncing.

``add_source`` records *where* embeddings come from without downloading anything: a git repo
(with its ref and sub-path), a MEGA link, a URL, or every row of a rentry link page (one source
per download link; Google Drive / ufile rows are kept with ``status='manual'`` and the reason, and
the row's base model becomes ``base_model_hint``). ``sync_sources`` then takes each source through
the one ingest path (:mod:`tireg.registry.ingest`: fetch, read by content with pickles through
the restricted loader, store, record) with the source's facts as hints.

Each source is recorded in one transaction after all its files were read, so a failed source
leaves the catalogue as it was. Downloads of different sources run concurrently (a bounded
pool); catalogue writes happen on the calling thread only. Git sources remember the blob id of
every file they imported (``extras.blobs``), so a re-sync imports only files that changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tireg.db.schema import ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.errors import TiregError
from tireg.progress import ItemProgress
from tireg.registry import ingest
from tireg.registry.importer import upsert_source
from tireg.registry.ingest import SourceOutcome, SyncReport, source_extras
from tireg.registry.store import ContentStore
from tireg.sources import SourceError, git, mega, rentry

#: kinds ``add_source`` takes (rentry expands into url / mega rows)
ADDABLE = ("git", "rentry", "mega", "url")
#: sources fetched at once (MEGA meters per IP; git hosts rate-limit)
MAX_WORKERS = 4

#: kinds ``sync_sources`` fetches when given no ids (HF and Civitai have their own commands)
SYNCED = ("git", "mega", "url")


class SourceSpecError(TiregError):
    """``add_source`` got a kind or locator it cannot use."""


@dataclass
class SourceSummary:
    """One source as ``tireg source list`` shows it."""

    id: int
    kind: str
    locator: str
    title: str | None
    status: str
    status_reason: str | None
    base_model_hint: str | None
    revision: str | None
    synced_at: str | None
    embeddings: int


# ------------------------------------------------------------------------------------- adding


def add_source(
    catalogue: Catalogue,
    kind: str,
    url: str,
    *,
    ref: str | None = None,
    path: str | None = None,
    title: str | None = None,
) -> list[int]:
    """Record a source (nothing is downloaded); return the ids of the source rows it made.

    ``kind`` is ``git`` (``ref`` and ``path`` narrow it), ``mega``, ``url``, or ``rentry``
    (``url`` is the page URL or a saved copy; each download link becomes a source). Adding an
    existing source updates it.
    """
    if kind not in ADDABLE:
        raise SourceSpecError(f"unknown source kind {kind!r}", hint=f"one of: {', '.join(ADDABLE)}")
    if (ref or path) and kind != "git":
        raise SourceSpecError("--ref and --path apply to git sources only")
    if kind == "rentry":
        return _add_rentry(catalogue, url)
    if kind == "git" and not git.is_git_url(url):
        raise SourceSpecError("not a git URL", path=url, hint="https://host/owner/repo.git")
    if kind == "mega":
        url = mega.parse_link(url).url
    if kind == "url" and not url.startswith(("http://", "https://")):
        raise SourceSpecError("not an http(s) URL", path=url)
    with catalogue.transaction() as session:
        source = upsert_source(session, kind, url)
        if kind == "git":
            extras = source_extras(source)
            if (extras.get("ref"), extras.get("path")) != (ref, path):
                extras.pop("blobs", None)  # a different ref or path: import everything again
            extras.update(ref=ref, path=path.strip("/") if path else None)
            source.extras = json.dumps(extras)
        source.title = title or source.title
        session.flush()
        return [source.id]


def _add_rentry(catalogue: Catalogue, page: str) -> list[int]:
    text, page_url = rentry.load(page)
    rows = rentry.parse(text, base_url=page_url)
    if not rows:
        raise SourceSpecError(
            "no link table (Name | Model | Details | Download) found",
            path=page,
            hint="pass the rendered page or its Markdown",
        )
    ids = []
    with catalogue.transaction() as session:
        for row in rows:
            kind = "mega" if row.route == rentry.MEGA else "url"
            locator = row.url
            if kind == "mega":
                try:
                    locator = mega.parse_link(row.url).url
                except SourceError as exc:
                    kind, row = (
                        "url",
                        rentry.RentryRow(
                            row.name,
                            row.base_model,
                            row.details_url,
                            row.url,
                            rentry.MANUAL,
                            exc.message,
                        ),
                    )
            source = upsert_source(session, kind, locator)
            source.title = row.name
            source.base_model_hint = row.base_model
            extras = source_extras(source)
            extras.update(
                rentry_page=page_url or str(Path(page).resolve()), details=row.details_url
            )
            source.extras = json.dumps(extras)
            if row.route == rentry.MANUAL:
                source.status = "manual"
                source.status_reason = f"{row.reason}; {rentry.MANUAL_HINT}"
            elif source.status == "manual":
                source.status, source.status_reason = "available", None
            session.flush()
            ids.append(source.id)
    return ids


# ------------------------------------------------------------------------------------ listing


def list_sources(
    catalogue: Catalogue, *, kind: str | None = None, status: str | None = None
) -> list[SourceSummary]:
    """Every source (optionally of one kind / status), with how many embeddings each gave."""
    with catalogue.reading() as session:
        counted = select(
            ProvenanceRow.source_id, func.count(func.distinct(ProvenanceRow.embedding_id))
        ).group_by(ProvenanceRow.source_id)
        counts: dict[int | None, int] = {row[0]: row[1] for row in session.execute(counted)}
        query = select(SourceRow).order_by(SourceRow.id)
        if kind:
            query = query.where(SourceRow.kind == kind)
        if status:
            query = query.where(SourceRow.status == status)
        return [
            SourceSummary(
                s.id,
                s.kind,
                s.locator,
                s.title,
                s.status,
                s.status_reason,
                s.base_model_hint,
                s.revision,
                s.synced_at.isoformat() if s.synced_at else None,
                counts.get(s.id, 0),
            )
            for s in session.scalars(query)
        ]


# ------------------------------------------------------------------------------------ syncing


@dataclass
class _Job:
    """A source's facts, copied out of the session so a worker thread can fetch it."""

    id: int
    kind: str
    locator: str
    status: str
    status_reason: str | None
    extras: dict[str, Any]


@dataclass
class _Done:
    """One source fetched, read and stored by a worker (or why not)."""

    job: _Job
    prepared: ingest.Prepared | None = None
    error: SourceError | None = None


def sync_sources(
    catalogue: Catalogue,
    *,
    ids: Sequence[int] | None = None,
    progress: ItemProgress | None = None,
) -> SyncReport:
    """Fetch every source (or those in ``ids``) that can be fetched and import what is new.

    Manual sources are reported with their reason; a source that fails (unreachable, gone, over
    quota) is reported and the others go on; ``gone`` / ``taken down`` MEGA links are marked
    ``status='gone'``. Offline (``TIREG_OFFLINE=1``) only cached copies are used, and the report
    says so. Without ``ids``, the hand-added kinds (git, MEGA, URL) are synced; with them, any
    source :mod:`tireg.registry.ingest` can fetch.
    """
    jobs = _jobs(catalogue, ids)
    report = SyncReport("tireg source sync")
    todo = [j for j in jobs if j.status != "manual"]
    for job in jobs:
        if job.status == "manual":
            report.sources.append(
                SourceOutcome(job.kind, job.locator, "manual", job.id, message=job.status_reason)
            )
    if not todo:
        return report
    store = ContentStore()
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(todo))) as pool:
        futures = [pool.submit(_fetch, job, store) for job in todo]
        for done, future in enumerate(futures, 1):
            result = future.result()
            try:
                report.sources.append(_record(catalogue, store, result))
            finally:
                if result.prepared is not None:
                    result.prepared.fetch.cleanup()
            if progress is not None:
                progress(done, len(todo), result.job.locator)
    return report


def _jobs(catalogue: Catalogue, ids: Sequence[int] | None) -> list[_Job]:
    with catalogue.reading() as session:
        query = select(SourceRow).where(SourceRow.kind.in_(SYNCED))
        if ids:
            query = select(SourceRow).where(SourceRow.id.in_(list(ids)))
        rows = list(session.scalars(query.order_by(SourceRow.id)))
        missing = set(ids or ()) - {r.id for r in rows}
        if missing:
            raise SourceSpecError(
                f"no source with id {', '.join(map(str, sorted(missing)))}",
                hint="see `tireg source list`",
            )
        unsupported = [r for r in rows if r.kind not in ingest.FETCHABLE]
        if unsupported:
            raise SourceSpecError(
                f"source {unsupported[0].id} is a {unsupported[0].kind} source",
                hint=f"`tireg source sync` fetches {', '.join(ingest.FETCHABLE)} sources",
            )
        return [
            _Job(r.id, r.kind, r.locator, r.status, r.status_reason, source_extras(r)) for r in rows
        ]


def _fetch(job: _Job, store: ContentStore) -> _Done:
    """Fetch, read and store one source (runs in a worker thread; touches no database)."""
    result = _Done(job)
    try:
        fetched = ingest.fetch(job.kind, job.locator, extras=job.extras)
        result.prepared = ingest.prepare(fetched, store, strict=False)
    except SourceError as exc:
        result.error = exc
    return result


def _record(catalogue: Catalogue, store: ContentStore, result: _Done) -> SourceOutcome:
    """Record one source's files and update its row, in one transaction."""
    job = result.job
    outcome = SourceOutcome(job.kind, job.locator, "synced", job.id)
    if result.prepared is None:
        error = result.error or SourceError("nothing was fetched")
        gone = isinstance(error, mega.MegaGoneError | mega.MegaTakenDownError)
        outcome.status = "gone" if gone else "failed"
        outcome.message = str(error)
        with catalogue.transaction() as session:
            source = session.get(SourceRow, job.id)
            if source is not None:
                source.status_reason = error.message
                if gone:
                    source.status = "gone"
        return outcome
    prepared = result.prepared
    done = ingest.record(catalogue, prepared, store=store, source_id=job.id)
    outcome.imported, outcome.known = done.imported, done.known
    outcome.problems, outcome.offline = list(prepared.problems), prepared.fetch.offline
    if not prepared.fetch.files and not prepared.problems:
        outcome.status = "unchanged"
    return outcome


def source_ids(values: Iterable[str]) -> list[int]:
    """Parse ``tireg source sync ID...`` arguments."""
    try:
        return [int(v) for v in values]
    except ValueError:
        raise SourceSpecError("source ids are numbers", hint="see `tireg source list`") from None
