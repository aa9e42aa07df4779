"""Remote specs and the HF library: install a spec, sync the HF library, search, look up.

Every file goes through :mod:`tireg.registry.ingest` (fetch, read, store, record); this module
says *what* to fetch. Specs: ``hf:OWNER/REPO[@REV]``, ``civitai:MODEL[@VERSION]``, ``https://...``
(any URL), and MEGA links (``https://mega.nz/...``). Each install is one transaction: a file that
cannot be read leaves the catalogue as it was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tireg import config
from tireg.converters import Embedding
from tireg.db.schema import ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.files import sha256_file
from tireg.progress import DownloadProgress, ItemProgress
from tireg.registry import ingest, naming, search_index, sync_workers
from tireg.registry.importer import upsert_sources
from tireg.registry.ingest import SourceOutcome, SyncReport
from tireg.registry.store import ContentStore
from tireg.sources import Fetched, SourceError, civitai, hf
from tireg.sources.mega import is_mega_link

#: the sites :func:`search_remote` can search
REMOTES = ("civitai",)
#: repos recorded per catalogue transaction by :func:`sync_hf`
RECORD_BATCH = 200
_URL_PREFIXES = ("http://", "https://")


def is_remote_spec(spec: str) -> bool:
    """True for what :func:`install_remote` takes: ``hf:``, ``civitai:``, http(s) and MEGA URLs."""
    return spec.startswith(("hf:", "civitai:", *_URL_PREFIXES))


# ------------------------------------------------------------------------------------ install


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """A remote spec -> (source kind, locator, revision or None)."""
    if spec.startswith("hf:"):
        repo_id, revision = hf.parse_spec(spec)
        return "hf", repo_id, revision
    if spec.startswith("civitai:"):
        civitai.parse_spec(spec)  # refuses a malformed spec before any request
        return "civitai", spec.removeprefix("civitai:"), None
    if is_mega_link(spec):
        return "mega", spec, None
    if spec.startswith(_URL_PREFIXES):
        return "url", spec, None
    raise SourceError(f"not a remote spec: {spec!r}", hint="hf:OWNER/REPO, civitai:ID, or a URL")


def fetch_remote(
    spec: str,
    *,
    sha256: str | None = None,
    progress: DownloadProgress | None = None,
    hf_endpoint: str | None = None,
) -> ingest.Fetch:
    """Download what ``spec`` names (verified by its source); nothing is recorded yet."""
    kind, locator, revision = parse_spec(spec)
    fetched = ingest.fetch(
        kind, locator, revision=revision, sha256=sha256, progress=progress, hf_endpoint=hf_endpoint
    )
    if sha256 and not any(f.sha256 == sha256.lower() for f in fetched.files):
        raise SourceError(f"{spec}: no downloaded file has sha256 {sha256}")
    return fetched


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
    try:
        store = ContentStore()
        prepared = ingest.prepare(fetched, store, strict=True)
        return ingest.record(catalogue, prepared, store=store).embedding_ids
    finally:
        fetched.cleanup()


# --------------------------------------------------------------------------------------- sync


#: repos fetched at once by ``sync hf``: the work is waiting on the Hub (a few small requests per
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
    processes: int | None = None,
) -> SyncReport:
    """List ``author``'s repos and record each as a source; with ``download``, import them.

    One listing call (paged) finds every repo's commit sha; only repos whose sha differs from the
    catalogue's (or, with ``download``, that were never fetched: gated ones too, once a Hub token
    is available) get further requests, run ``concurrency`` at a time, and are recorded as they
    finish, :data:`RECORD_BATCH` repos per transaction. Repos no longer listed are marked
    ``gone``; gated repos not fetched for want of a token are in ``report.gated`` on every sync.
    ``processes`` overrides how many processes share a download
    (:func:`tireg.registry.sync_workers.processes_for`).
    """
    # 1. the listing, against what the catalogue knows
    report = SyncReport(f"tireg sync hf --author {author}")
    summaries = list(hf.list_repos(author, endpoint_url=endpoint))
    report.listed = len(summaries)
    known = _known_hf_sources(catalogue, author)
    logged_in = any(s.gated for s in summaries) and hf.has_token()
    todo: list[tuple[hf.RepoSummary, str | None]] = []
    for summary in summaries:
        revision, status = known.get(summary.repo_id, (None, None))
        locked_out = summary.gated and not logged_in
        listing = "new" if revision is None else "changed" if revision != summary.sha else None
        if listing is None and not (download and status != "fetched" and not locked_out):
            gated = locked_out and status != "fetched"  # still needs a login, on every sync
            report.sources.append(SourceOutcome("hf", summary.repo_id, "unchanged", gated=gated))
            continue
        todo.append((summary, listing))
    gone = sorted(set(known) - {s.repo_id for s in summaries})
    for repo_id in gone:
        report.sources.append(
            SourceOutcome("hf", repo_id, "gone", listing="unlisted", message=_UNLISTED)
        )

    # 2. each repo to do, on threads (and for a large download, in worker processes too):
    #    facts, and with ``download`` its files read and stored; recorded a batch at a time as
    #    they finish (3.), so the catalogue's work overlaps the fetching, which the workers'
    #    share of the board takes over while this process records
    store = ContentStore()
    settings = sync_workers.Settings(download, endpoint, logged_in)
    pending: list[sync_workers.RepoResult] = []  # fetched, not yet recorded
    count = 0

    def done(result: sync_workers.RepoResult) -> None:
        nonlocal count
        count += 1
        if progress:
            progress(count, len(todo), result.summary.repo_id)
        pending.append(result)
        if len(pending) == RECORD_BATCH:
            _record_batch(catalogue, pending, store, endpoint, report)
            pending.clear()

    sync_workers.fetch_all(
        todo,
        store,
        settings,
        concurrency=concurrency,
        processes=sync_workers.processes_for(len(todo), settings, processes),
        done=done,
    )
    if pending:
        _record_batch(catalogue, pending, store, endpoint, report)
    if gone:
        with catalogue.transaction() as session:
            for source in session.scalars(
                select(SourceRow).where(SourceRow.kind == "hf", SourceRow.locator.in_(gone))
            ):
                source.status, source.status_reason = "gone", _UNLISTED
    return report


_UNLISTED = "no longer listed by the Hub"


def _record_batch(
    catalogue: Catalogue,
    batch: list[sync_workers.RepoResult],
    store: ContentStore,
    endpoint: str | None,
    report: SyncReport,
) -> None:
    """3. One transaction for a batch of fetched repos: it looks their sources up in one query,
    records all their embeddings together and reindexes them for search once (one repo at a
    time, those statements were most of what recording cost). A sync killed before a batch is
    recorded has its files in the caches, so the next run re-reads them without downloading."""
    with catalogue.transaction() as session:
        sources = upsert_sources(session, "hf", [r.summary.repo_id for r in batch])
        session.flush()  # new sources get their ids
        fetched = [(r.summary.repo_id, r.prepared) for r in batch if r.prepared is not None]
        recorded = ingest.record_many_in(
            session,
            [(prepared, sources[repo_id].id) for repo_id, prepared in fetched],
            store=store,
            reindex=False,
        )
        by_repo = {repo_id: d for (repo_id, _), d in zip(fetched, recorded, strict=True)}
        for result in batch:
            source = sources[result.summary.repo_id]
            outcome = _record_repo(result, endpoint, source, by_repo.get(result.summary.repo_id))
            report.sources.append(outcome)
        search_index.reindex_many(session, [i for d in recorded for i in d.embedding_ids])


def _known_hf_sources(catalogue: Catalogue, author: str) -> dict[str, tuple[str | None, str]]:
    with catalogue.reading() as session:
        rows = session.execute(
            select(SourceRow.locator, SourceRow.revision, SourceRow.status).where(
                SourceRow.kind == "hf", SourceRow.locator.startswith(f"{author}/", autoescape=True)
            )
        )
        return {locator: (revision, status) for locator, revision, status in rows}


def _record_repo(
    result: sync_workers.RepoResult,
    endpoint: str | None,
    source: SourceRow,
    done: ingest.Recorded | None,
) -> SourceOutcome:
    """What the listing said about one repo, on its ``source`` row, after its files' rows
    (``done``, when it was fetched) were recorded."""
    summary = result.summary
    outcome = SourceOutcome(
        "hf", summary.repo_id, "available", listing=result.listing, gated=result.gated
    )
    if result.error:
        outcome.status, outcome.message = "failed", result.error
    elif done is not None:
        outcome.status, outcome.id = "synced", done.source_id
        outcome.imported, outcome.known = done.imported, done.known
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
    source.synced_at = ingest.now()
    # only new, changed or never-fetched repos get here: unless fetched now, what the catalogue
    # holds (if anything) is from an older commit
    source.status = "fetched" if outcome.status == "synced" else "available"
    source.status_reason = "gated: " + hf.LOGIN_HINT if result.gated else result.error
    return outcome


# ------------------------------------------------------------------------------ search, lookup


def search_remote(
    remote: str,
    query: str,
    *,
    base_model: str | None = None,
    limit: int = 20,
    catalogue: Catalogue | None = None,
) -> list[dict[str, Any]]:
    """Search a remote (``civitai``) for textual inversions; one dict per result.

    Each has ``remote``, ``spec`` (what ``tireg install`` takes), ``name``, ``creator``,
    ``base_models``, ``trigger``, ``downloads``, ``nsfw`` and ``url``. Given a ``catalogue``
    (one that can be written), the results are remembered there as available sources, in one
    transaction, as ``sync hf`` remembers the concepts it lists: the catalogue's own search
    then finds them, marked available, with the spec ``install`` takes.
    """
    if remote not in REMOTES:
        raise SourceError(f"unknown remote {remote!r}", hint=f"remotes: {', '.join(REMOTES)}")
    found = civitai.search(query, base_model=base_model, limit=limit)
    results = [
        {
            "remote": "civitai",
            "spec": model.spec(),
            "name": model.facts.name,
            "creator": model.facts.creator,
            "base_models": sorted({v.base_model for v in model.versions if v.base_model}),
            "trigger": model.versions[0].trigger if model.versions else None,
            "downloads": model.facts.download_count,
            "nsfw": bool(model.facts.nsfw),
            "url": f"https://civitai.com/models/{model.id}",
        }
        for model in found
    ]
    if catalogue is not None and not catalogue.read_only:
        _remember_available(catalogue, results)
    return results


def _remember_available(catalogue: Catalogue, results: list[dict[str, Any]]) -> None:
    """Record remote search results as ``civitai`` sources with nothing fetched (their facts
    filled in only while nothing is: a fetched source keeps what its download recorded)."""
    by_locator = {r["spec"].removeprefix("civitai:"): r for r in results}
    with catalogue.transaction() as session:
        for locator, source in upsert_sources(session, "civitai", by_locator).items():
            if source.status != "available":
                continue
            result = by_locator[locator]
            source.title, source.trigger = result["name"], result["trigger"]
            source.base_model_hint = ", ".join(result["base_models"]) or None
            source.description = f"by {result['creator']}" if result["creator"] else None


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

    ``spec`` is a file (imported first if the catalogue lacks it) or a name under the naming
    rule (:mod:`tireg.registry.naming`); for a name, every file the embedding was imported from
    is tried. A match goes through the ingest path as a ``civitai`` source: provenance, trigger
    words, base model (a compat hint) and preview URLs, in one transaction. On a read-only
    catalogue (a read-only mount) the answer is given but not recorded (``embedding_id`` None).
    """
    store = ContentStore()
    path = Path(spec)
    results = []
    for sha, location, embedding in _lookup_files(catalogue, store, path, spec):
        version = civitai.by_hash(sha)
        if version is None:
            results.append(LookupResult(None, sha, False))
            continue
        facts = civitai.version_facts(version)
        urls = [f.download_url for f in version.files_with_sha256(sha) if f.download_url]
        item = Fetched(
            path=path if embedding is None else Path(location),
            kind="civitai",
            locator=facts.locator,
            location=urls[0] if urls else location,
            sha256=sha,
            revision=str(facts.version_id),
            hints=facts.hints,
        )
        fetched = ingest.Fetch(
            "civitai",
            facts.locator,
            files=[item],
            revision=item.revision,
            facts=facts.hints,
            preview_urls=facts.preview_urls,
            offline=config.offline(),
        )
        embedding_id = None
        if not catalogue.read_only:  # a read-only catalogue still hears what Civitai says
            if embedding is None:  # a file: read like any fetched one
                prepared = ingest.prepare(fetched, store, strict=True)
            else:  # a catalogued embedding: its vectors are in the store already
                prepared = ingest.Prepared(fetched, [(item, embedding, embedding.vectors_sha256())])
            [embedding_id] = ingest.record(catalogue, prepared, store=store).embedding_ids
        results.append(
            LookupResult(
                embedding_id,
                sha,
                True,
                spec=f"civitai:{facts.locator}",
                name=facts.hints.get("title"),
                base_model=version.base_model,
                trigger_words=list(version.trained_words),
                preview_urls=facts.preview_urls,
            )
        )
    return results


def _lookup_files(
    catalogue: Catalogue, store: ContentStore, path: Path, spec: str
) -> list[tuple[str, str, Embedding | None]]:
    """(file sha256, location, embedding or None) to look up: the file ``spec`` names (read
    later, through the ingest path), else each file the embedding ``spec`` names came from."""
    if path.is_file():
        return [(sha256_file(path), str(path.resolve()), None)]
    with catalogue.reading() as session:
        row = naming.resolve(session, spec)
        files = session.execute(
            select(ProvenanceRow.original_sha256, ProvenanceRow.location)
            .where(ProvenanceRow.embedding_id == row.id)
            .order_by(ProvenanceRow.id)
        ).all()
        vectors_sha256 = row.vectors_sha256
    embedding = store.get(vectors_sha256)
    seen: dict[str, str] = {}
    for sha, location in files:
        if sha:
            seen.setdefault(sha, location)
    return [(sha, location, embedding) for sha, location in seen.items()]
