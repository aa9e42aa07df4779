"""The catalogue side of remote sources: install a spec, sync the HF library, search, look up.

Source clients (:mod:`tireg.sources`) download and verify; this module reads what they fetched
through the converters (pickles via the restricted loader, never executed) and records it:
a ``sources`` row per repo / version / URL, the embedding with its provenance (URL and commit
or version), and previews copied into ``TIREG_HOME/previews`` (content-addressed, so they outlive
the download caches). Each install is one transaction: a file that cannot be read leaves the
catalogue as it was.

Specs: ``hf:OWNER/REPO[@REV]``, ``civitai:MODEL[@VERSION]``, ``https://...`` (any URL), and
MEGA links (``https://mega.nz/...``, handled by :mod:`tireg.sources.mega`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tireg import config
from tireg.converters import Embedding, read_file
from tireg.db.schema import EmbeddingRow, PreviewRow, ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.errors import TiregError
from tireg.files import atomic_write_bytes, read_capped
from tireg.progress import DownloadProgress, ItemProgress
from tireg.registry.importer import import_embedding, upsert_source
from tireg.registry.store import ContentStore
from tireg.sources import Fetched, SourceError, civitai, hf
from tireg.sources.http import download

#: the sites :func:`search_remote` can search
REMOTES = ("civitai",)
#: repos recorded per catalogue transaction by :func:`sync_hf`
RECORD_BATCH = 200
_URL_PREFIXES = ("http://", "https://")


def is_remote_spec(spec: str) -> bool:
    """True for what :func:`install_remote` takes: ``hf:``, ``civitai:``, http(s) and MEGA URLs."""
    return spec.startswith(("hf:", "civitai:", *_URL_PREFIXES))


# ------------------------------------------------------------------------------------ install


def fetch_remote(
    spec: str,
    *,
    sha256: str | None = None,
    progress: DownloadProgress | None = None,
    hf_endpoint: str | None = None,
) -> list[Fetched]:
    """Download what ``spec`` names (verified by its source); nothing is recorded yet."""
    if spec.startswith("hf:"):
        repo_id, revision = hf.parse_spec(spec)
        fetched = hf.fetch(repo_id, revision=revision, endpoint_url=hf_endpoint, progress=progress)
    elif spec.startswith("civitai:"):
        fetched = civitai.fetch(spec, progress=progress)
    elif _is_mega(spec):
        from tireg.sources import mega

        fetched = mega.fetch(spec, config.cache_dir() / "mega" / _key(spec))
    elif spec.startswith(_URL_PREFIXES):
        got = download(
            spec,
            config.cache_dir() / "downloads" / _key(spec),
            expected_sha256=sha256,
            progress=progress,
        )
        fetched = [
            Fetched(
                got.path, "url", spec, got.url_final, got.sha256, hints={"title": got.path.stem}
            )
        ]
    else:
        raise SourceError(
            f"not a remote spec: {spec!r}", hint="hf:OWNER/REPO, civitai:ID, or a URL"
        )
    if sha256 and not any(f.sha256 == sha256.lower() for f in fetched):
        raise SourceError(f"{spec}: no downloaded file has sha256 {sha256}")
    return fetched


def _is_mega(spec: str) -> bool:
    try:
        from tireg.sources.mega import is_mega_link
    except ImportError:
        return False
    return is_mega_link(spec)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def install_remote(
    catalogue: Catalogue,
    spec: str,
    *,
    sha256: str | None = None,
    progress: DownloadProgress | None = None,
    hf_endpoint: str | None = None,
) -> list[int]:
    """Download ``spec``, import every embedding it holds, and return their catalogue ids.

    ``sha256`` (``--sha256``) must match a downloaded file. All files are read before anything is
    written, and everything is recorded in one transaction.
    """
    fetched = fetch_remote(spec, sha256=sha256, progress=progress, hf_endpoint=hf_endpoint)
    read = [(item, _read(item.path)) for item in fetched]
    return record(catalogue, read)


def _read(path: Path) -> Embedding:
    try:
        return read_file(path)
    except TiregError as exc:
        raise exc.with_path(path) from None


def record(
    catalogue: Catalogue,
    items: Iterable[tuple[Fetched, Embedding]],
    *,
    store: ContentStore | None = None,
) -> list[int]:
    """Record fetched, already-read embeddings with their source and previews (one transaction)."""
    store = store if store is not None else ContentStore()
    items = list(items)
    for _, embedding in items:
        store.put(embedding)  # durable before the rows that point at it
    return catalogue.write(lambda session: _record_in(session, store, items))


def _record_in(
    session: Session, store: ContentStore, items: list[tuple[Fetched, Embedding]]
) -> list[int]:
    """The rows of :func:`record`, inside the caller's transaction (store files already put)."""
    ids: list[int] = []
    for item, embedding in items:
        source = upsert_source(session, item.kind, item.locator)
        _apply_hints(source, item)
        source.status = "fetched"
        source.status_reason = None
        source.synced_at = _now()
        session.flush()
        row, _ = import_embedding(
            session,
            embedding,
            location=item.location,
            original_sha256=item.sha256,
            source_id=source.id,
            revision=item.revision,
            hints=item.hints,
            store=store,
        )
        for path in item.previews:
            stored = _keep_preview(path)
            if stored is not None:
                _add_preview(session, row.id, str(stored[0]), stored[1])
        ids.append(row.id)
    return ids


def _apply_hints(source: SourceRow, item: Fetched) -> None:
    hints = item.hints
    source.revision = item.revision or source.revision
    for column, key in (
        ("title", "title"),
        ("trigger", "trigger"),
        ("concept_type", "concept_type"),
        ("licence", "licence"),
        ("description", "description"),
        ("base_model_hint", "base_model_hint"),
    ):
        if hints.get(key):
            setattr(source, column, hints[key])
    if hints.get("nsfw"):
        source.nsfw = hints["nsfw"] == "true"


def _keep_preview(path: Path) -> tuple[Path, str] | None:
    """Copy a preview into ``TIREG_HOME/previews/ab/<sha256><ext>``; None if unreadable."""
    try:
        data = read_capped(path)
    except OSError:
        return None
    sha = hashlib.sha256(data).hexdigest()
    target = config.home() / "previews" / sha[:2] / f"{sha}{path.suffix.lower()}"
    if not target.is_file():
        atomic_write_bytes(target, data)
    return target, sha


def _add_preview(session: Session, embedding_id: int, location: str, sha: str | None) -> None:
    exists = session.scalar(
        select(PreviewRow.id).where(
            PreviewRow.embedding_id == embedding_id, PreviewRow.location == location
        )
    )
    if exists is None:
        session.add(PreviewRow(embedding_id=embedding_id, location=location, sha256=sha))


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------- sync


@dataclass
class SyncReport:
    """What one ``tireg sync hf`` found and did."""

    author: str
    listed: int = 0
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    downloaded: list[str] = field(default_factory=list)
    gated: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (repo id, reason)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _RepoResult:
    summary: hf.RepoSummary
    facts: dict[str, str] = field(default_factory=dict)
    fetched: list[tuple[Fetched, Embedding]] = field(default_factory=list)
    error: str | None = None
    gated: bool = False


#: repos fetched at once by ``sync hf``: the work is waiting on the Hub (three small requests per
#: repo), so threads overlap round trips; the Hub's rate limits, not the CPU, set the ceiling
SYNC_CONCURRENCY = 32


def sync_hf(
    catalogue: Catalogue,
    author: str = "sd-concepts-library",
    *,
    download: bool = False,
    concurrency: int = SYNC_CONCURRENCY,
    progress: ItemProgress | None = None,
    endpoint: str | None = None,
) -> SyncReport:
    """List ``author``'s repos and record each as a source; with ``download``, import them.

    One listing call (paged) finds every repo's commit sha; only repos whose sha differs from the
    catalogue's (or, with ``download``, that were never fetched: gated ones too, once a Hub token
    is available) get further requests, run ``concurrency`` at a time; then everything is
    recorded, :data:`RECORD_BATCH` repos per transaction. Repos no longer listed are marked
    ``gone``; gated repos not fetched for want of a token are in ``report.gated`` on every sync.
    """
    report = SyncReport(author)
    summaries = list(hf.list_repos(author, endpoint_url=endpoint))
    report.listed = len(summaries)
    known = _known_hf_sources(catalogue, author)
    logged_in = any(s.gated for s in summaries) and hf.has_token()
    todo: list[hf.RepoSummary] = []
    for summary in summaries:
        revision, status = known.get(summary.repo_id, (None, None))
        locked_out = summary.gated and not logged_in
        if revision is None:
            report.new.append(summary.repo_id)
        elif revision != summary.sha:
            report.changed.append(summary.repo_id)
        elif download and status != "fetched" and not locked_out:
            pass  # listed before, never downloaded (gated then, perhaps; a token now): fetch it
        else:
            report.unchanged += 1
            if locked_out and status != "fetched":
                report.gated.append(summary.repo_id)  # still needs a login, on every sync
            continue
        todo.append(summary)
    listed = {s.repo_id for s in summaries}
    report.gone = sorted(set(known) - listed)

    store = ContentStore()

    def work(summary: hf.RepoSummary) -> _RepoResult:
        return _sync_one(summary, store, download=download, endpoint=endpoint, logged_in=logged_in)

    results: list[_RepoResult] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(work, summary) for summary in todo]
        for done, future in enumerate(as_completed(futures), 1):
            results.append(future.result())
            if progress:
                progress(done, len(todo), results[-1].summary.repo_id)
    # Recorded after the downloads, in large transactions: catalogue writes interleaved with busy
    # worker threads wait on the GIL at every SQLite call. A sync killed before this point has
    # its files in the caches, so the next run re-reads them without downloading.
    for start in range(0, len(results), RECORD_BATCH):
        _record_sync_results(
            catalogue, store, results[start : start + RECORD_BATCH], endpoint, report
        )
    if report.gone:
        with catalogue.transaction() as session:
            for source in session.scalars(
                select(SourceRow).where(SourceRow.kind == "hf", SourceRow.locator.in_(report.gone))
            ):
                source.status = "gone"
                source.status_reason = "no longer listed by the Hub"
    return report


def _known_hf_sources(catalogue: Catalogue, author: str) -> dict[str, tuple[str | None, str]]:
    with catalogue.reading() as session:
        rows = session.execute(
            select(SourceRow.locator, SourceRow.revision, SourceRow.status).where(
                SourceRow.kind == "hf", SourceRow.locator.startswith(f"{author}/", autoescape=True)
            )
        )
        return {locator: (revision, status) for locator, revision, status in rows}


def _sync_one(
    summary: hf.RepoSummary,
    store: ContentStore,
    *,
    download: bool,
    endpoint: str | None,
    logged_in: bool,
) -> _RepoResult:
    """Network, parsing and store writes for one repo (a worker thread; no catalogue access)."""
    result = _RepoResult(summary)
    try:
        if summary.gated and not logged_in:
            result.gated = True
            return result  # no token-less access to its files; the listing facts are recorded
        result.facts = hf.concept_facts(summary, endpoint_url=endpoint)
        if download:
            for item in hf.fetch(
                summary.repo_id, revision=summary.sha, endpoint_url=endpoint, previews=False
            ):
                embedding = _read(item.path)
                store.put(embedding)  # durable before the rows that point at it
                result.fetched.append((item, embedding))
    except TiregError as exc:
        result.error = str(exc)
    return result


def _record_sync_results(
    catalogue: Catalogue,
    store: ContentStore,
    results: list[_RepoResult],
    endpoint: str | None,
    report: SyncReport,
) -> None:
    with catalogue.transaction() as session:
        for result in results:
            _record_sync_result(session, store, result, endpoint, report)


def _record_sync_result(
    session: Session,
    store: ContentStore,
    result: _RepoResult,
    endpoint: str | None,
    report: SyncReport,
) -> None:
    summary = result.summary
    if result.error:
        report.failed.append((summary.repo_id, result.error))
    if result.gated:
        report.gated.append(summary.repo_id)
    fetched = bool(result.fetched) and not result.error
    if fetched:
        _record_in(session, store, result.fetched)
        report.downloaded.append(summary.repo_id)
    source = upsert_source(session, "hf", summary.repo_id)
    if not result.error:  # a failed repo keeps its old sha, so the next sync tries it again
        source.revision = summary.sha
    source.title = summary.repo_id.split("/", 1)[1]
    source.trigger = result.facts.get("trigger", source.trigger)
    source.concept_type = result.facts.get("concept_type", source.concept_type)
    source.licence = summary.licence
    source.base_model_hint = summary.base_model
    source.gated = summary.gated
    source.preview_urls = json.dumps(summary.preview_urls(hf.endpoint(endpoint)))
    source.extras = json.dumps({"last_modified": summary.last_modified})
    source.synced_at = _now()
    # only new, changed or never-fetched repos get here: unless fetched now, what the catalogue
    # holds (if anything) is from an older commit
    source.status = "fetched" if fetched else "available"
    source.status_reason = "gated: " + hf.LOGIN_HINT if result.gated else result.error


# ------------------------------------------------------------------------------ search, lookup


def search_remote(
    remote: str, query: str, *, base_model: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Search a remote (``civitai``) for textual inversions; one dict per result.

    Each has ``remote``, ``spec`` (what ``tireg install`` takes), ``name``, ``creator``,
    ``base_models``, ``trigger``, ``downloads``, ``nsfw`` and ``url``.
    """
    if remote not in REMOTES:
        raise SourceError(f"unknown remote {remote!r}", hint=f"remotes: {', '.join(REMOTES)}")
    results = []
    for item in civitai.search(query, base_model=base_model, limit=limit):
        versions = item.get("modelVersions") or []
        latest = versions[0] if versions else {}
        words = latest.get("trainedWords") or []
        results.append(
            {
                "remote": "civitai",
                "spec": f"civitai:{item['id']}" + (f"@{latest['id']}" if latest.get("id") else ""),
                "name": item.get("name"),
                "creator": (item.get("creator") or {}).get("username"),
                "base_models": sorted({v.get("baseModel") for v in versions if v.get("baseModel")}),
                "trigger": words[0] if words else None,
                "downloads": (item.get("stats") or {}).get("downloadCount"),
                "nsfw": bool(item.get("nsfw")),
                "url": f"https://civitai.com/models/{item['id']}",
            }
        )
    return results


@dataclass
class LookupResult:
    """What Civitai said about one local embedding file."""

    embedding_id: int | None
    sha256: str
    found: bool
    spec: str | None = None  # civitai:MODEL@VERSION
    name: str | None = None
    base_model: str | None = None
    trigger_words: list[str] = field(default_factory=list)
    preview_urls: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lookup(catalogue: Catalogue, spec: str) -> list[LookupResult]:
    """Find a local embedding on Civitai by the SHA256 of its file(s), and record what it says.

    ``spec`` is a file (imported first if the catalogue lacks it) or a catalogue name; for a
    name, every file the embedding was imported from is tried. A match adds a ``civitai``
    source, provenance, the trigger words, base model (a compat hint) and preview URLs.
    """
    path = Path(spec)
    if path.is_file():
        embedding = _read(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        candidates = [(sha, embedding, str(path.resolve()))]
    else:
        candidates = _catalogue_files(catalogue, spec)
    results = []
    for sha, embedding, location in candidates:
        found = civitai.by_hash(sha)
        if found is None:
            results.append(LookupResult(None, sha, False))
            continue
        facts = civitai.version_facts(found)
        urls = [
            f.get("downloadUrl")
            for f in found.get("files") or []
            if str((f.get("hashes") or {}).get("SHA256", "")).lower() == sha
        ]
        item = Fetched(
            path=Path(location),
            kind="civitai",
            locator=f"{facts.model_id}@{facts.version_id}",
            location=urls[0] if urls and urls[0] else location,
            sha256=sha,
            revision=str(facts.version_id),
            hints=facts.hints,
        )
        [embedding_id] = record(catalogue, [(item, embedding)])
        with catalogue.transaction() as session:
            for url in facts.preview_urls:
                _add_preview(session, embedding_id, url, None)
        results.append(
            LookupResult(
                embedding_id,
                sha,
                True,
                spec=f"civitai:{facts.model_id}@{facts.version_id}",
                name=facts.hints.get("title"),
                base_model=facts.hints.get("base_model_hint"),
                trigger_words=list(found.get("trainedWords") or []),
                preview_urls=facts.preview_urls,
            )
        )
    return results


def _catalogue_files(catalogue: Catalogue, name: str) -> list[tuple[str, Embedding, str]]:
    """(file sha256, embedding, location) for each file a catalogued embedding came from."""
    store = ContentStore()
    with catalogue.reading() as session:
        row = session.scalar(select(EmbeddingRow).where(EmbeddingRow.name == name))
        if row is None:
            raise TiregError(f"no embedding named {name!r} and no such file", hint="tireg list")
        embedding = store.get(row.vectors_sha256)
        files = session.execute(
            select(ProvenanceRow.original_sha256, ProvenanceRow.location).where(
                ProvenanceRow.embedding_id == row.id
            )
        ).all()
    seen: dict[str, str] = {}
    for sha, location in files:
        seen.setdefault(sha, location)
    return [(sha, embedding, location) for sha, location in seen.items()]
