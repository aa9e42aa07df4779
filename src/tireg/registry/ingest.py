"""The one way remote files enter the catalogue: fetch, verify, read, store, record.

Every source goes through here, whoever asks: ``tireg install SPEC`` (:mod:`.remote`), ``tireg
sync hf --download`` (:mod:`.remote`), ``tireg lookup`` (a local file Civitai knows), and ``tireg
source sync`` (:mod:`.source_sync`). Before this module each of them had its own copy of the
pipeline, with read wrappers that named the same bad file three ways and two caches for plain
URLs; now a bad file reads the same whatever brought it, and each kind of source has one cache:

1. :func:`fetch` hands the source (kind, locator, revision, extras) to its client in
   :mod:`tireg.sources`, which downloads into that kind's cache and verifies (hashes, MACs,
   sizes): ``cache/hf/repos/...``, ``cache/civitai/VERSION``, ``cache/mega/...`` (MEGA's own
   cache, no second copy), ``cache/downloads/KEY`` for plain URLs, and a scratch folder copied
   out of the cached clone for git (removed once recorded).
2. :func:`prepare` reads every file through the converters (pickles through the allow-list
   unpickler, never executed) and puts each embedding in the content store, so the store file
   is durable before any row points at it. A file that cannot be read is a *problem* with one
   wording (:func:`read`); ``strict`` callers (installs) turn the first into an error.
3. :func:`record_in` writes one source's rows inside the caller's transaction: the source row
   (facts the source gave fill what the row lacks), each embedding with its provenance and the
   source's facts as hints, previews. :func:`record` is that in one transaction of its own;
   :func:`record_many_in` records many sources' embeddings together (``sync hf``).

Fetching and reading touch no database, so callers run them in worker threads; recording runs on
the caller's thread.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tireg import config
from tireg.converters import Embedding, read_file
from tireg.errors import TiregError
from tireg.files import atomic_write_bytes, read_capped
from tireg.progress import DownloadProgress
from tireg.registry.store import ContentStore
from tireg.sources import Fetched, SourceError, civitai, git, hf, mega
from tireg.sources.http import download

if TYPE_CHECKING:  # recording's imports: a sync's worker processes only fetch, read and store,
    # and start without the database layer (see the imports inside the recording functions)
    from sqlalchemy.orm import Session

    from tireg.db.schema import SourceRow
    from tireg.db.session import Catalogue

#: source kinds :func:`fetch` knows
FETCHABLE = ("hf", "civitai", "git", "mega", "url")
#: the one cache of plain-URL downloads (``cache/downloads/<key of the URL>``)
URL_CACHE = "downloads"
#: source columns a fetch's facts fill when the row lacks them
_SOURCE_FACTS = ("title", "trigger", "concept_type", "licence", "description", "base_model_hint")
#: file hints the importer records with an embedding (see ``importer.import_embedding``)
_EMBEDDING_HINTS = ("trigger", "concept_type", "licence", "description", "nsfw", "tags")


class UnreadableError(SourceError):
    """A fetched file is not an embedding tireg can read (corrupt, unsafe pickle, not one)."""


@dataclass
class Fetch:
    """What fetching one source gave: verified files in their cache, and what the source said."""

    kind: str
    locator: str
    files: list[Fetched] = field(default_factory=list)
    revision: str | None = None  # commit, version id; None where each file has its own
    facts: dict[str, str] = field(default_factory=dict)  # about the source: title, trigger...
    preview_urls: list[str] = field(default_factory=list)  # previews recorded by URL only
    blobs: dict[str, str] | None = None  # git: blob id per path, so a re-sync skips the same
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why it was skipped)
    offline: bool = False
    scratch: tempfile.TemporaryDirectory[str] | None = None

    def cleanup(self) -> None:
        """Remove the scratch folder (git's copies), once what it held is recorded."""
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None


@dataclass
class Prepared:
    """A fetch whose files were read and stored: ready for :func:`record_in`. Each item is a
    file, what it holds and that embedding's ``vectors_sha256()`` (its store name), hashed once
    for both the store and the catalogue."""

    fetch: Fetch
    items: list[tuple[Fetched, Embedding, str]] = field(default_factory=list)

    @property
    def problems(self) -> list[tuple[str, str]]:
        return self.fetch.problems


# ------------------------------------------------------------------------------------- 1. fetch


def url_cache(url: str) -> Path:
    """The cache folder of one plain URL (each URL its own, so offline finds its one file)."""
    return config.cache_dir() / URL_CACHE / hashlib.sha256(url.encode()).hexdigest()[:24]


def fetch(
    kind: str,
    locator: str,
    *,
    revision: str | None = None,
    extras: dict[str, Any] | None = None,
    sha256: str | None = None,
    progress: DownloadProgress | None = None,
    hf_endpoint: str | None = None,
    previews: bool = True,
    hf_summary: hf.RepoSummary | None = None,
) -> Fetch:
    """Download and verify what the source (``kind``, ``locator``) holds; nothing is recorded.

    ``revision`` pins an HF repo's commit; ``extras`` are a git source's ``ref``, ``path`` and
    known ``blobs``; ``sha256`` is checked while a plain URL downloads (nothing wrong is kept);
    ``previews=False`` skips an HF repo's concept images; ``hf_summary`` is what a listing said
    about the repo (its commit and files), so no ``model_info`` is asked for.
    """
    extras = extras or {}
    result = Fetch(kind, locator, offline=config.offline())
    if kind == "hf":
        result.files = hf.fetch(
            locator,
            revision=revision,
            endpoint_url=hf_endpoint,
            previews=previews,
            summary=hf_summary,
            progress=progress,
        )
        result.revision = result.files[0].revision
    elif kind == "civitai":
        result.files = civitai.fetch(locator, progress=progress)
        result.locator, result.revision = result.files[0].locator, result.files[0].revision
    elif kind == "mega":
        result.files = mega.fetch(locator, progress=progress)
    elif kind == "url":
        got = download(locator, url_cache(locator), expected_sha256=sha256, progress=progress)
        result.files = [
            Fetched(got.path, "url", locator, got.url_final, got.sha256, got.sha256, {})
        ]
    elif kind == "git":
        result.scratch = tempfile.TemporaryDirectory(prefix="tireg-git-")
        try:
            synced = git.sync(
                locator,
                result.scratch.name,
                ref=extras.get("ref"),
                path=extras.get("path"),
                known_blobs=extras.get("blobs"),
                progress=progress,
            )
        except BaseException:
            result.cleanup()
            raise
        result.files, result.revision = synced.files, synced.commit
        skipped = {name for name, _ in synced.skipped}
        result.blobs = {k: v for k, v in synced.blobs.items() if k not in skipped}
        result.problems += synced.skipped
        result.offline = synced.offline
    else:
        raise SourceError(f"cannot fetch a {kind} source", hint=f"kinds: {', '.join(FETCHABLE)}")
    if result.files and kind in ("hf", "civitai"):
        said = result.files[0].hints
        result.facts = {k: v for k, v in said.items() if k in (*_SOURCE_FACTS, "nsfw")}
    if kind in ("url", "mega") and len(result.files) == 1:
        result.facts = {"title": result.files[0].path.stem}
    return result


# -------------------------------------------------------------------------------------- 2. read


def read(item: Fetched) -> Embedding:
    """Read one fetched file through the converters; every failure is an
    :class:`UnreadableError` worded the same way, naming the file by its location."""
    try:
        return read_file(item.path)
    except TiregError as exc:
        reason = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    except OSError as exc:
        reason = f"cannot read file: {exc.strerror or exc}"
    except (ValueError, TypeError, KeyError, IndexError, MemoryError) as exc:
        # a reader bug or a structure no reader anticipated: this file fails, the others go on
        reason = f"unreadable ({type(exc).__name__}: {exc})"
    raise UnreadableError(reason, path=item.location)


def prepare(fetched: Fetch, store: ContentStore, *, strict: bool) -> Prepared:
    """Read every file of ``fetched`` and put each embedding in ``store``.

    ``strict``: the first unreadable file raises (an install records all or nothing); else it
    joins ``fetched.problems`` and the other files go on (a sync).
    """
    prepared = Prepared(fetched)
    for item in fetched.files:
        try:
            embedding = read(item)
        except UnreadableError as exc:
            if strict:
                raise
            fetched.problems.append((item.location, exc.message))
            continue
        sha = embedding.vectors_sha256()
        store.put_hashed(sha, embedding)  # durable before the rows that point at it
        prepared.items.append((item, embedding, sha))
    return prepared


# ------------------------------------------------------------------------------------ 3. record


@dataclass
class Recorded:
    """What :func:`record_in` did for one source."""

    source_id: int
    embedding_ids: list[int] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)  # locations of new embeddings
    known: list[str] = field(default_factory=list)  # locations of embeddings already known


def record(
    catalogue: Catalogue,
    prepared: Prepared,
    *,
    store: ContentStore,
    source_id: int | None = None,
) -> Recorded:
    """:func:`record_in` in one transaction of its own."""
    return catalogue.write(
        lambda session: record_in(session, prepared, store=store, source_id=source_id)
    )


def record_in(
    session: Session,
    prepared: Prepared,
    *,
    store: ContentStore,
    source_id: int | None = None,
) -> Recorded:
    """One source's rows, inside the caller's transaction: :func:`record_many_in` of one."""
    [done] = record_many_in(session, [(prepared, source_id)], store=store)
    return done


def record_many_in(
    session: Session,
    sources: Sequence[tuple[Prepared, int | None]],
    *,
    store: ContentStore,
    reindex: bool = True,
) -> list[Recorded]:
    """Sources' rows, inside the caller's transaction (store files already put), one
    :class:`Recorded` each; their embeddings are recorded together (a sync records hundreds of
    repos per transaction, and one at a time that was most of what it cost).

    Each source row is the given id's, else the one for the fetch's (kind, locator). With
    ``reindex=False`` the caller reindexes the ``embedding_ids`` for search before it commits.
    Steps:
    """
    from tireg.db.schema import SourceRow
    from tireg.registry.importer import FileFacts, import_embeddings, upsert_source

    # 1. each source row: what the source said about itself fills what the row lacks
    rows: list[SourceRow] = []
    for prepared, source_id in sources:
        fetched = prepared.fetch
        source = session.get(SourceRow, source_id) if source_id is not None else None
        if source is None:
            source = upsert_source(session, fetched.kind, fetched.locator)
        for column in _SOURCE_FACTS:
            if fetched.facts.get(column) and not getattr(source, column):
                setattr(source, column, fetched.facts[column])
        if "nsfw" in fetched.facts:  # a yes or no, never missing: the source's word stands
            source.nsfw = fetched.facts["nsfw"] == "true"
        rows.append(source)
    session.flush()
    # 2. every embedding, with its source's facts where the file gave none
    files: list[tuple[Embedding, FileFacts]] = []
    shas: list[str] = []
    extras = [source_extras(source) for source in rows]
    for (prepared, _), source, said in zip(sources, rows, extras, strict=True):
        for item, embedding, sha in prepared.items:
            hints = _embedding_hints(source, said, item, prepared.fetch.facts)
            facts = FileFacts(
                item.location,
                original_sha256=item.sha256,
                source_id=source.id,
                revision=item.revision,
                hints=hints,
            )
            files.append((embedding, facts))
            shas.append(sha)
    recorded = iter(import_embeddings(session, files, shas=shas, store=store, reindex=reindex))
    results = []
    for (prepared, _), source, said in zip(sources, rows, extras, strict=True):
        fetched = prepared.fetch
        done = Recorded(source.id)
        for item, _embedding, _sha in prepared.items:
            embedding_id, created = next(recorded)
            done.embedding_ids.append(embedding_id)
            (done.imported if created else done.known).append(item.location)
            # 3. its previews: downloaded pictures kept by content, others by URL
            for path in item.previews:
                kept = _keep_preview(path)
                if kept is not None:
                    _add_preview(session, embedding_id, str(kept[0]), kept[1])
            for url in fetched.preview_urls:
                _add_preview(session, embedding_id, url, None)
        # 4. the source's state: fetched now (offline, a cached copy changes nothing)
        if not fetched.offline:
            source.status, source.status_reason = "fetched", None
            source.synced_at = now()
        single = prepared.items[0][0].revision if len(prepared.items) == 1 else None
        source.revision = fetched.revision or single or source.revision
        if fetched.blobs is not None:
            said["blobs"] = fetched.blobs
            source.extras = json.dumps(said)
        results.append(done)
    return results


def _embedding_hints(
    source: SourceRow, extras: dict[str, Any], item: Fetched, facts: dict[str, str]
) -> dict[str, str]:
    """The file's own facts, then the source row's where the file said nothing.

    A title describes the embedding only when someone gave it (a rentry row's name, the
    ``title`` of ``add_source``), not when this fetch itself said it (a repo name, a file stem).
    """
    hints = {k: v for k, v in item.hints.items() if k in _EMBEDDING_HINTS}
    base_model = source.base_model_hint or item.hints.get("base_model_hint")
    if base_model:
        hints["base_model_hint"] = base_model
        hints["base_model_evidence"] = item.hints.get("base_model_evidence") or (
            "rentry Model column" if "rentry_page" in extras else "source hint"
        )
    given_title = source.title if source.title != facts.get("title") else None
    if "description" not in hints and (source.description or given_title):
        details = extras.get("details")
        text = source.description or str(given_title)
        hints["description"] = f"{text} (details: {details})" if details else text
    return hints


def source_extras(source: SourceRow) -> dict[str, Any]:
    """A source row's ``extras`` JSON as a dict (an unreadable one counts as empty)."""
    try:
        value = json.loads(source.extras or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
    from sqlalchemy import select

    from tireg.db.schema import PreviewRow

    exists = session.scalar(
        select(PreviewRow.id).where(
            PreviewRow.embedding_id == embedding_id, PreviewRow.location == location
        )
    )
    if exists is None:
        session.add(PreviewRow(embedding_id=embedding_id, location=location, sha256=sha))


def now() -> datetime:
    return datetime.now(timezone.utc)


# ------------------------------------------------------------------------------------ reporting


@dataclass
class SourceOutcome:
    """What one sync did with one source (a hand-added source, or a repo an HF listing showed)."""

    kind: str
    locator: str
    #: synced (fetched and recorded) | unchanged | available (recorded, not downloaded) |
    #: manual | failed | gone (dead link, or no longer listed)
    status: str
    id: int | None = None
    listing: str | None = None  # what a listing showed: new | changed | unlisted
    gated: bool = False  # needs a login the sync did not have
    imported: list[str] = field(default_factory=list)  # locations of new embeddings
    known: list[str] = field(default_factory=list)  # locations of embeddings already known
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why not imported)
    message: str | None = None
    offline: bool = False


@dataclass
class SyncReport:
    """The one report of every sync (``tireg sync hf``, ``tireg source sync``): an outcome per
    source, and, for a listing, how many it showed."""

    title: str
    sources: list[SourceOutcome] = field(default_factory=list)
    listed: int | None = None

    def _where(self, **wanted: object) -> list[str]:
        return [
            o.locator for o in self.sources if all(getattr(o, k) == v for k, v in wanted.items())
        ]

    @property
    def failed(self) -> list[SourceOutcome]:
        """Sources that could not be fetched (a repo merely no longer listed is not one)."""
        return [
            o
            for o in self.sources
            if o.status == "failed" or (o.status == "gone" and o.listing != "unlisted")
        ]

    @property
    def new(self) -> list[str]:
        return self._where(listing="new")

    @property
    def changed(self) -> list[str]:
        return self._where(listing="changed")

    @property
    def unchanged(self) -> int:
        return len(self._where(status="unchanged"))

    @property
    def downloaded(self) -> list[str]:
        return self._where(status="synced")

    @property
    def gated(self) -> list[str]:
        return self._where(gated=True)

    @property
    def gone(self) -> list[str]:
        return self._where(status="gone")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"imported": sum(len(s.imported) for s in self.sources)}
        for outcome in self.sources:
            out[outcome.status] = out.get(outcome.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "listed": self.listed,
            "counts": self.counts(),
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "downloaded": self.downloaded,
            "gated": self.gated,
            "gone": self.gone,
            "failed": [[o.locator, o.message] for o in self.failed],
            "sources": [asdict(s) for s in self.sources],
        }
