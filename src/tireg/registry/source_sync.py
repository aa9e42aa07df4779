"""Sources the user adds by hand (git repositories, rentry pages, MEGA links, URLs) and syncing.

``add_source`` records *where* embeddings come from without downloading anything: a git repo
(with its ref and sub-path), a MEGA link, a URL, or every row of a rentry link page (one source
per download link; Google Drive / ufile rows are kept with ``status='manual'`` and the reason, and
the row's base model becomes ``base_model_hint``). ``sync_sources`` then fetches each source
through its client (:mod:`tireg.sources`), reads every file by content (pickles through the
restricted loader, never executed) and imports it with the source's facts as hints.

Each source is recorded in one transaction after all its files were read, so a failed source
leaves the catalogue as it was. Downloads of different sources run concurrently (a bounded
pool); catalogue writes happen on the calling thread only. Git sources remember the blob id of
every file they imported (``extras.blobs``), so a re-sync imports only files that changed.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tireg import config
from tireg.converters import Embedding, read_file
from tireg.db.schema import ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.errors import TiregError
from tireg.progress import ItemProgress
from tireg.registry.importer import import_embedding, upsert_source
from tireg.registry.store import ContentStore
from tireg.sources import Fetched, SourceError, git, mega, rentry
from tireg.sources.http import download

#: kinds ``add_source`` takes (rentry expands into url / mega rows)
ADDABLE = ("git", "rentry", "mega", "url")
#: sources fetched at once (MEGA meters per IP; git hosts rate-limit)
MAX_WORKERS = 4


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


@dataclass
class SourceOutcome:
    """What syncing one source did."""

    id: int
    kind: str
    locator: str
    status: str  # synced | unchanged | manual | failed | gone
    imported: list[str] = field(default_factory=list)  # locations of new embeddings
    known: list[str] = field(default_factory=list)  # locations of embeddings already known
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why not imported)
    message: str | None = None
    offline: bool = False


@dataclass
class SyncReport:
    """The outcome of one :func:`sync_sources` run, one entry per source."""

    sources: list[SourceOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[SourceOutcome]:
        return [s for s in self.sources if s.status in ("failed", "gone")]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"imported": sum(len(s.imported) for s in self.sources)}
        for outcome in self.sources:
            out[outcome.status] = out.get(outcome.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts(), "sources": [asdict(s) for s in self.sources]}


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
            extras = _extras(source)
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
            extras = _extras(source)
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


def _extras(source: SourceRow) -> dict[str, Any]:
    try:
        value = json.loads(source.extras or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
    title: str | None
    description: str | None
    base_model_hint: str | None
    extras: dict[str, Any]


@dataclass
class _Fetch:
    job: _Job
    files: list[Fetched] = field(default_factory=list)
    revision: str | None = None
    blobs: dict[str, str] | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    error: SourceError | None = None
    offline: bool = False
    scratch: tempfile.TemporaryDirectory[str] | None = None


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
    says so.
    """
    jobs = _jobs(catalogue, ids)
    report = SyncReport()
    todo = [j for j in jobs if j.status != "manual"]
    for job in jobs:
        if job.status == "manual":
            report.sources.append(
                SourceOutcome(job.id, job.kind, job.locator, "manual", message=job.status_reason)
            )
    if not todo:
        return report
    store = ContentStore()
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(todo))) as pool:
        futures = [pool.submit(_fetch, job) for job in todo]
        for done, future in enumerate(futures, 1):
            result = future.result()
            try:
                report.sources.append(_record(catalogue, store, result))
            finally:
                if result.scratch is not None:
                    result.scratch.cleanup()
            if progress is not None:
                progress(done, len(todo), result.job.locator)
    return report


def _jobs(catalogue: Catalogue, ids: Sequence[int] | None) -> list[_Job]:
    with catalogue.reading() as session:
        query = select(SourceRow).where(SourceRow.kind.in_(("git", "mega", "url")))
        if ids:
            query = select(SourceRow).where(SourceRow.id.in_(list(ids)))
        rows = list(session.scalars(query.order_by(SourceRow.id)))
        missing = set(ids or ()) - {r.id for r in rows}
        if missing:
            raise SourceSpecError(
                f"no source with id {', '.join(map(str, sorted(missing)))}",
                hint="see `tireg source list`",
            )
        unsupported = [r for r in rows if r.kind not in ("git", "mega", "url")]
        if unsupported:
            raise SourceSpecError(
                f"source {unsupported[0].id} is a {unsupported[0].kind} source",
                hint="`tireg source sync` fetches git, mega and url sources",
            )
        return [
            _Job(
                r.id,
                r.kind,
                r.locator,
                r.status,
                r.status_reason,
                r.title,
                r.description,
                r.base_model_hint,
                _extras(r),
            )
            for r in rows
        ]


def _fetch(job: _Job) -> _Fetch:
    """Download one source (runs in a worker thread; touches no database)."""
    result = _Fetch(job)
    try:
        if job.kind == "git":
            result.scratch = tempfile.TemporaryDirectory(prefix="tireg-git-")
            synced = git.sync(
                job.locator,
                result.scratch.name,
                ref=job.extras.get("ref"),
                path=job.extras.get("path"),
                known_blobs=job.extras.get("blobs"),
            )
            result.files, result.revision, result.offline = (
                synced.files,
                synced.commit,
                synced.offline,
            )
            skipped = {name for name, _ in synced.skipped}
            result.blobs = {k: v for k, v in synced.blobs.items() if k not in skipped}
            result.problems += synced.skipped
        elif job.kind == "mega":
            result.scratch = tempfile.TemporaryDirectory(prefix="tireg-mega-")
            result.files = mega.fetch(job.locator, result.scratch.name)
            result.offline = any("offline" in f.hints for f in result.files)
        else:
            dest = (
                config.cache_dir() / "url" / hashlib.sha256(job.locator.encode()).hexdigest()[:24]
            )
            result.offline = config.offline()
            got = download(job.locator, dest)
            result.files = [
                Fetched(
                    got.path,
                    "url",
                    job.locator,
                    got.url_final,
                    got.sha256,
                    got.sha256,
                    {"title": got.path.stem},
                )
            ]
    except SourceError as exc:
        result.error = exc
    return result


def _hints(job: _Job, fetched: Fetched) -> dict[str, str]:
    """What the importer records with each embedding: the file's facts, then the source's."""
    hints = {
        k: v
        for k, v in fetched.hints.items()
        if k in ("description", "licence", "trigger", "concept_type", "nsfw", "tags")
    }
    if job.base_model_hint:
        hints["base_model_hint"] = job.base_model_hint
        hints["base_model_evidence"] = (
            "rentry Model column" if "rentry_page" in job.extras else "source hint"
        )
    if "description" not in hints and (job.description or job.title):
        details = job.extras.get("details")
        text = job.description or str(job.title)
        hints["description"] = f"{text} (details: {details})" if details else text
    return hints


def _read(fetched: Fetched) -> Embedding | str:
    try:
        return read_file(fetched.path)
    except TiregError as exc:
        return exc.message
    except (OSError, ValueError, TypeError, KeyError, IndexError, MemoryError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"


def _record(catalogue: Catalogue, store: ContentStore, result: _Fetch) -> SourceOutcome:
    """Import one source's files and update its row, in one transaction."""
    job = result.job
    outcome = SourceOutcome(
        job.id,
        job.kind,
        job.locator,
        "synced",
        offline=result.offline,
        problems=list(result.problems),
    )
    if result.error is not None:
        gone = isinstance(result.error, mega.MegaGoneError | mega.MegaTakenDownError)
        outcome.status = "gone" if gone else "failed"
        outcome.message = str(result.error)
        with catalogue.transaction() as session:
            source = session.get(SourceRow, job.id)
            if source is not None:
                source.status_reason = result.error.message
                if gone:
                    source.status = "gone"
        return outcome
    read: list[tuple[Fetched, Embedding]] = []
    for fetched in result.files:
        embedding = _read(fetched)
        if isinstance(embedding, str):
            outcome.problems.append((fetched.location, embedding))
        else:
            store.put(embedding)  # durable before the rows that point at it
            read.append((fetched, embedding))
    with catalogue.transaction() as session:
        for fetched, embedding in read:
            _, created = import_embedding(
                session,
                embedding,
                location=fetched.location,
                original_sha256=fetched.sha256,
                source_id=job.id,
                revision=fetched.revision,
                hints=_hints(job, fetched),
                store=store,
            )
            (outcome.imported if created else outcome.known).append(fetched.location)
        source = session.get(SourceRow, job.id)
        if source is not None:
            if not result.offline:
                source.status, source.status_reason = "fetched", None
                source.synced_at = datetime.now(timezone.utc)
            source.revision = result.revision or (
                read[0][0].revision if len(read) == 1 else source.revision
            )
            if result.blobs is not None:
                extras = _extras(source)
                extras["blobs"] = result.blobs
                source.extras = json.dumps(extras)
    if not result.files and not outcome.problems:
        outcome.status = "unchanged"
    return outcome


def source_ids(values: Iterable[str]) -> list[int]:
    """Parse ``tireg source sync ID...`` arguments."""
    try:
        return [int(v) for v in values]
    except ValueError:
        raise SourceSpecError("source ids are numbers", hint="see `tireg source list`") from None
