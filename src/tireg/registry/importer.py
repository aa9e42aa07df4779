"""Importing embedding files into the catalogue: ``tireg add`` and every source's downloads.

Two levels:

* :func:`import_embedding` records one embedding already read (by a source client or by
  :func:`add_paths`) inside the caller's transaction: the embedding row keyed by its vectors, a
  provenance row for the file it came from, compatibility facts, tags, and its search-index row.
* :func:`add_paths` walks files and folders, reads each file with
  :func:`tireg.converters.read_file` (on threads, ahead), and stores and records them a batch
  at a time: the batch's store files made durable together (while the batch before is
  recorded), then one transaction of a handful of bulk statements, so a bad file, or a process
  killed half-way, never loses the files committed before it.
  Pictures beside an embedding (``name.preview.png``, A1111's ``name.png``,
  ``concept_images/``) become its previews.

Ordering is what makes a kill at any moment safe: the store file is written (atomically, and
durably) *before* the transaction that references it commits. A killed process can leave an
orphan store file, which is harmless (the next import of the same vectors reuses it), but never a
row pointing at a missing or partial file.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path, PurePath
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from tireg.converters import (
    MAX_READ_MEMORY,
    Embedding,
    NotAnEmbeddingError,
    ReadResult,
    UnsafePickleError,
    read_file_detailed,
)
from tireg.converters.walking import CONCEPT_IMAGES, WALK_EXTENSIONS, walk
from tireg.db.schema import (
    Base,
    CompatRow,
    EmbeddingRow,
    PreviewRow,
    ProvenanceRow,
    SourceRow,
    name_key,
)
from tireg.db.session import Catalogue, retried
from tireg.errors import TiregError
from tireg.files import SYNC_THREADS, sha256_file
from tireg.progress import ItemProgress
from tireg.registry import compat, naming, search_index, tags
from tireg.registry.store import ContentStore, relative_path

#: pictures that can be previews (jpg cannot hold an A1111 image embedding, png/webp can)
PICTURE_EXTENSIONS = frozenset({".png", ".webp", ".jpg", ".jpeg", ".jxl", ".avif"})
#: files recorded per transaction: large enough that commits cost little, small enough that a
#: concurrent writer waits a fraction of a second for the lock (the store files are written
#: before the transaction starts: it holds the lock for its statements alone)
BATCH_FILES = 256
#: threads reading files ahead of the batch that stores and records them
PREPARE_THREADS = 8
PREPARE_AHEAD = 2 * BATCH_FILES
#: memory the prepare threads may hold at once: a read in flight counts as the most reading one
#: file can take (a small hostile file can decode to that much), a read done as its vectors, until
#: the batch takes them. Without it, eight threads multiplied the worst case by eight.
PREPARE_MEMORY = MAX_READ_MEMORY
#: a batch is also committed once its vectors take this much memory (two are held at once: one
#: being stored while the one before is recorded)
BATCH_BYTES = MAX_READ_MEMORY // 4


IMPORTED, KNOWN, NOT_EMBEDDING, UNSAFE, ERROR, PREVIEW = (
    "imported",
    "known",
    "not_embedding",
    "unsafe",
    "error",
    "preview",
)


@dataclass
class FileOutcome:
    """What happened to one file."""

    path: str
    status: str  # imported | known | not_embedding | unsafe | error | preview
    reason: str | None = None
    embedding_id: int | None = None
    name: str | None = None
    vectors_sha256: str | None = None


@dataclass
class ImportReport:
    """The summary of one :func:`add_paths` run, one list per kind of outcome."""

    imported: list[FileOutcome] = field(default_factory=list)
    known: list[FileOutcome] = field(default_factory=list)
    not_embeddings: list[FileOutcome] = field(default_factory=list)
    unsafe: list[FileOutcome] = field(default_factory=list)
    errors: list[FileOutcome] = field(default_factory=list)
    previews: list[FileOutcome] = field(default_factory=list)
    skipped: int = 0  # files in walked folders whose extension no embedding uses

    def counts(self) -> dict[str, int]:
        return {
            "imported": len(self.imported),
            "already_known": len(self.known),
            "not_embeddings": len(self.not_embeddings),
            "refused_unsafe": len(self.unsafe),
            "errors": len(self.errors),
            "previews": len(self.previews),
            "skipped": self.skipped,
        }

    def to_dict(self) -> dict[str, Any]:
        lists = {
            "imported": self.imported,
            "already_known": self.known,
            "not_embeddings": self.not_embeddings,
            "refused_unsafe": self.unsafe,
            "errors": self.errors,
            "previews": self.previews,
        }
        return {"counts": self.counts(), **{k: [asdict(o) for o in v] for k, v in lists.items()}}

    def _add(self, outcome: FileOutcome) -> None:
        bucket = {
            IMPORTED: self.imported,
            KNOWN: self.known,
            NOT_EMBEDDING: self.not_embeddings,
            UNSAFE: self.unsafe,
            ERROR: self.errors,
            PREVIEW: self.previews,
        }[outcome.status]
        bucket.append(outcome)


# -- recording embeddings --------------------------------------------------------------------


def import_embedding(
    session: Session,
    embedding: Embedding,
    *,
    location: str,
    original_sha256: str | None = None,
    original_format: str | None = None,
    source_id: int | None = None,
    revision: str | None = None,
    hints: Mapping[str, str] | None = None,
    store: ContentStore | None = None,
) -> tuple[EmbeddingRow, bool]:
    """Record ``embedding`` (read from the file at ``location``) in the caller's transaction.

    Returns the embedding's row and whether it is new. The same vectors seen again, under any
    name or from any source, add a provenance row to the existing embedding; facts it lacked
    (description, licence, concept type, ...) are filled in from ``hints``, never overwritten.
    The store file is written here if it is not there yet, before the caller commits, and the
    search index is brought up to date.

    ``hints`` (strings; other keys are ignored): ``trigger`` (the word a source says to type;
    names a new embedding), ``concept_type`` (object | style), ``licence``, ``description``,
    ``base_model_hint`` ("SD 1.5": becomes a compat fact) with ``base_model_evidence`` (where it
    came from, e.g. "civitai baseModel"; default "source hint"), ``nsfw`` ("true"), ``tags``
    (comma-separated).
    """
    store = store if store is not None else ContentStore()
    sha = embedding.vectors_sha256()
    if sha not in store:
        store.put_hashed(sha, embedding)
    file = FileFacts(location, original_sha256, original_format, source_id, revision)
    (recorded,), changed = _record_many(session, [(embedding, file)], [sha], dict(hints or {}))
    search_index.reindex_many(session, changed)
    return session.get_one(EmbeddingRow, recorded.embedding_id), recorded.created


@dataclass
class FileFacts:
    """Where one file came from (the provenance row's columns), and what its source said."""

    location: str
    original_sha256: str | None = None
    original_format: str | None = None
    source_id: int | None = None
    revision: str | None = None
    hints: Mapping[str, str] | None = None  # as import_embedding takes them; None: the batch's


def import_embeddings(
    session: Session,
    files: Sequence[tuple[Embedding, FileFacts]],
    *,
    shas: Sequence[str] | None = None,
    store: ContentStore | None = None,
    reindex: bool = True,
) -> list[tuple[int, bool]]:
    """:func:`import_embedding` for many files at once, each with its own facts and hints:
    (embedding id, new?) per file. A handful of statements for them all, where one file at a
    time cost a handful each (a sync records hundreds of repos in one transaction). ``shas``
    are the embeddings' ``vectors_sha256()`` where the caller hashed them already (ingest did,
    to store them); else they are hashed here."""
    store = store if store is not None else ContentStore()
    if shas is None:
        shas = [embedding.vectors_sha256() for embedding, _ in files]
    for sha, (embedding, _) in zip(shas, files, strict=True):
        if sha not in store:
            store.put_hashed(sha, embedding)
    recorded, changed = _record_many(session, files, shas, {})
    if reindex:
        search_index.reindex_many(session, changed)
    return [(done.embedding_id, done.created) for done in recorded]


@dataclass(frozen=True)
class _Recorded:
    """What one file became in the catalogue."""

    embedding_id: int
    name: str
    vectors_sha256: str
    created: bool


#: the columns a later file or source may fill while the catalogue does not know them
_FILLABLE = ("concept_type", "description", "licence", "step", "trained_on_hash", "trained_on_name")


def _record_many(
    session: Session,
    files: Sequence[tuple[Embedding, FileFacts]],
    shas: Sequence[str],
    hints: Mapping[str, str],
) -> tuple[list[_Recorded], set[int]]:
    """Record embeddings whose store files are durable already, in the caller's transaction;
    ``shas`` are their ``vectors_sha256()``, which the caller computed for the store.

    Returns what each file became and the ids whose searchable texts changed (the caller
    reindexes them). A batch costs a handful of statements whatever its size, not a dozen per
    file: per-row ORM flushes were most of what an import cost.
    """
    each = [file.hints if file.hints is not None else hints for _, file in files]
    # 1. the embeddings catalogued already get the facts they lack; new ones are gathered, the
    #    first file naming each (a batch may hold the same vectors twice), later ones filling in
    query = select(EmbeddingRow).where(EmbeddingRow.vectors_sha256.in_(sorted(set(shas))))
    known = {row.vectors_sha256: row for row in session.scalars(query)}
    new: dict[str, dict[str, Any]] = {}
    changed: set[int] = set()
    for sha, (embedding, file), said in zip(shas, files, each, strict=True):
        if sha in known:
            row = known[sha]
            for column, value in _missing_facts(partial(getattr, row), embedding, said).items():
                setattr(row, column, value)
                changed.add(row.id)
            continue
        if sha not in new:
            new[sha] = _new_row(sha, embedding, file, said)
        new[sha].update(_missing_facts(new[sha].get, embedding, said))

    # 2. the new embeddings in one INSERT
    ids = {sha: row.id for sha, row in known.items()}
    if new:
        _insert_rows(session, EmbeddingRow, list(new.values()))
        added = select(EmbeddingRow.vectors_sha256, EmbeddingRow.id).where(
            EmbeddingRow.vectors_sha256.in_(list(new))
        )
        fresh: dict[str, int] = {sha: id_ for sha, id_ in session.execute(added)}
        ids.update(fresh)
        changed.update(fresh.values())

    # 3. a provenance row for each file not seen before, and the word A1111 types for it
    known_ids = {row.id for row in known.values()}
    provenance = _new_provenance(session, files, shas, ids, known_ids)
    if provenance:
        _insert_rows(session, ProvenanceRow, provenance)
        located = [(row["embedding_id"], row["location"]) for row in provenance]
        worded = naming.add_prompt_words(session, located)
        for row in known.values():
            if row.id in worded:
                session.expire(row, ["prompt_words"])  # the collection loaded before is stale
        changed.update(embedding_id for embedding_id, _ in located)

    # 4. compatibility facts and tags not there yet
    facts = {
        (ids[sha], *fact): None
        for sha, (embedding, _), said in zip(shas, files, each, strict=True)
        for fact in compat.implied_facts(
            embedding.family.value, embedding.trained_on_hash, [_base_model(said)]
        )
    }
    changed |= _add_compat_facts(session, list(facts))
    tagged: dict[str, set[int]] = {}
    for sha, said in zip(shas, each, strict=True):
        tagged.setdefault(said.get("tags", ""), set()).add(ids[sha])
    for text, tag_ids in tagged.items():
        changed |= tags.add_tags(session, tag_ids, tags.split_tags(text))

    recorded = []
    first: set[str] = set()
    for sha in shas:
        created = sha in new and sha not in first
        first.add(sha)
        name = new[sha]["name"] if sha in new else known[sha].name
        recorded.append(_Recorded(ids[sha], name, sha, created))
    return recorded, changed


def _insert_rows(session: Session, row_class: type[Base], rows: list[dict[str, Any]]) -> None:
    """One INSERT of ``rows`` (dicts of the same columns, None where a fact is missing) into
    ``row_class``'s table; its Python-side column defaults are still applied.

    Why not the ORM's bulk insert (``insert(row_class)``): it leaves each row's None values out,
    so a batch where some files carry a step and others not became one statement per run of
    alike rows, and it worked through every row in Python before the driver saw it.
    """
    session.execute(insert(cast(Table, row_class.__table__)), rows)


def _base_model(hints: Mapping[str, str]) -> tuple[str, str]:
    """The base model a source hinted at, with the evidence it gave (empty when none)."""
    return hints.get("base_model_hint", ""), hints.get("base_model_evidence") or "source hint"


def _new_row(
    sha: str, embedding: Embedding, file: FileFacts, hints: Mapping[str, str]
) -> dict[str, Any]:
    """The columns of a new embedding row (its facts filled by :func:`_missing_facts`)."""
    name = hints.get("trigger") or embedding.name or PurePath(file.location).stem
    return {
        "vectors_sha256": sha,
        "name": name,
        "name_key": name_key(name),  # what EmbeddingRow's validator sets; a bulk INSERT skips it
        "family": embedding.family.value,
        "num_vectors": embedding.num_vectors,
        "widths": ",".join(f"{key}:{width}" for key, width in embedding.widths.items()),
        "nsfw": False,
        "store_path": relative_path(sha),
        **dict.fromkeys(_FILLABLE),
    }


def _missing_facts(
    have: Callable[[str], Any], embedding: Embedding, hints: Mapping[str, str]
) -> dict[str, Any]:
    """The facts ``embedding`` and ``hints`` give that a row lacks (``have(column)`` reads the
    row): what is known is never overwritten."""
    found: dict[str, Any] = {}
    for column, value in zip(
        _FILLABLE,
        (
            hints.get("concept_type"),
            hints.get("description"),
            hints.get("licence"),
            embedding.step,
            embedding.trained_on_hash and embedding.trained_on_hash.lower(),
            embedding.trained_on_name,
        ),
        strict=True,
    ):
        if value not in (None, "") and have(column) is None:
            found[column] = value
    if hints.get("nsfw", "").strip().lower() in ("1", "true", "yes") and not have("nsfw"):
        found["nsfw"] = True
    return found


def _new_provenance(
    session: Session,
    files: Sequence[tuple[Embedding, FileFacts]],
    shas: Sequence[str],
    ids: Mapping[str, int],
    known_ids: set[int],
) -> list[dict[str, Any]]:
    """Provenance rows for the files whose (embedding, file hash, location) is not recorded yet;
    only embeddings catalogued before this batch (``known_ids``) are looked up."""
    seen: set[tuple[int, str, str]] = set()
    if known_ids:
        query = select(
            ProvenanceRow.embedding_id, ProvenanceRow.original_sha256, ProvenanceRow.location
        ).where(
            ProvenanceRow.embedding_id.in_(sorted(known_ids)),
            ProvenanceRow.location.in_(sorted({file.location for _, file in files})),
        )
        seen.update((i, sha, where) for i, sha, where in session.execute(query))
    rows = []
    for sha, (embedding, file) in zip(shas, files, strict=True):
        original_sha256 = file.original_sha256 or embedding.source_sha256 or sha
        key = (ids[sha], original_sha256, file.location)
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "embedding_id": ids[sha],
                "source_id": file.source_id,
                "location": file.location,
                "original_format": file.original_format or embedding.source_format or "tireg",
                "original_sha256": original_sha256,
                "name_in_file": embedding.name,
                "revision": file.revision,
            }
        )
    return rows


def _add_compat_facts(session: Session, facts: list[tuple[int, str, str, str]]) -> set[int]:
    """Insert the ``(embedding_id, relation, model_ref, evidence)`` facts not recorded yet;
    return the ids that got one."""
    if not facts:
        return set()
    query = select(
        CompatRow.embedding_id, CompatRow.relation, CompatRow.model_ref, CompatRow.evidence
    ).where(CompatRow.embedding_id.in_(sorted({fact[0] for fact in facts})))
    recorded = {tuple(row) for row in session.execute(query)}
    missing = [fact for fact in facts if fact not in recorded]
    if missing:
        columns = ("embedding_id", "relation", "model_ref", "evidence")
        _insert_rows(session, CompatRow, [dict(zip(columns, f, strict=True)) for f in missing])
    return {fact[0] for fact in missing}


def upsert_source(session: Session, kind: str, locator: str) -> SourceRow:
    """The source row for (``kind``, ``locator``), added (status ``available``) on first use.

    Every source client (local folders, HF, git, MEGA, URLs, Civitai, rentry rows) records its
    origin through this one function, so the (kind, locator) uniqueness has one owner.
    """
    return upsert_sources(session, kind, [locator])[locator]


def upsert_sources(session: Session, kind: str, locators: Iterable[str]) -> dict[str, SourceRow]:
    """:func:`upsert_source` for many locators in one query (a sync records hundreds at once)."""
    wanted = set(locators)
    rows = session.scalars(
        select(SourceRow).where(SourceRow.kind == kind, SourceRow.locator.in_(sorted(wanted)))
    )
    found = {row.locator: row for row in rows}
    for locator in sorted(wanted - found.keys()):
        found[locator] = SourceRow(kind=kind, locator=locator, status="available")
        session.add(found[locator])
    return found


def local_source(session: Session, folder: Path) -> int:
    """The id of the ``local`` source for ``folder``, created on first use."""
    source = upsert_source(session, "local", str(folder))
    if source.id is None:
        source.title, source.status = folder.name, "fetched"
        session.flush()
    return source.id


# -- files and folders -----------------------------------------------------------------------


@dataclass
class _Candidate:
    path: Path
    source_id: int | None  # given by the caller, or
    folder: Path  # the folder named on the command line: its ``local`` source


def _read(path: Path) -> ReadResult | FileOutcome:
    """Read one file, or say why it is not imported. Never raises for a bad file."""
    where = str(path)
    try:
        return read_file_detailed(path)
    except UnsafePickleError as exc:
        # the outcome already names the file: keep the message and its advice, not the path
        reason = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        return FileOutcome(where, UNSAFE, reason)
    except NotAnEmbeddingError as exc:
        return FileOutcome(where, NOT_EMBEDDING, exc.message)
    except TiregError as exc:
        return FileOutcome(where, ERROR, exc.message)
    except OSError as exc:
        return FileOutcome(where, ERROR, f"cannot read file: {exc.strerror or exc}")
    except (ValueError, TypeError, KeyError, IndexError, MemoryError) as exc:
        # a reader bug or a structure no reader anticipated: this file fails, the others go on
        return FileOutcome(where, ERROR, f"unreadable ({type(exc).__name__}: {exc})")


@dataclass
class _Batch:
    """The files one transaction decides: every candidate, those read (``ready``), the bytes
    their vectors hold, and the futures of their store files being written."""

    candidates: list[_Candidate] = field(default_factory=list)
    ready: list[_Ready] = field(default_factory=list)
    size: int = 0
    writes: list[Future[list[str]]] = field(default_factory=list)


@dataclass
class _Ready:
    """A file read and hashed, waiting for its batch to be stored and recorded."""

    candidate: _Candidate
    embedding: Embedding
    vectors_sha256: str  # hashed once, on the reading thread, for the store and the catalogue
    file: FileFacts
    size: int  # what its vectors hold in memory (see _held)


def _held(embedding: Embedding | None) -> int:
    """The bytes an embedding's vectors hold in memory (at most what its read was allowed)."""
    if embedding is None:
        return 0
    return min(MAX_READ_MEMORY, sum(arr.nbytes for arr in embedding.vectors.values()))


class _MemoryBudget:
    """Bytes shared by the prepare threads: taken before a read starts, given back as it ends."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._lock = threading.Lock()

    def try_take(self, size: int) -> bool:
        with self._lock:
            if self.free < size:
                return False
            self.free -= size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.free += size


def _prepare(candidate: _Candidate, budget: _MemoryBudget) -> _Ready | FileOutcome:
    """Everything that needs neither the store nor the catalogue: read, and hash the vectors.

    Holds :data:`MAX_READ_MEMORY` of ``budget`` (taken by the caller) while reading; keeps only
    what its result holds, which the caller gives back when it takes the result.
    """
    path = candidate.path
    read: ReadResult | FileOutcome | None = None
    try:
        read = _read(path)
    finally:
        kept = _held(read.embedding if isinstance(read, ReadResult) else None)
        budget.give(MAX_READ_MEMORY - kept)
    if isinstance(read, FileOutcome):
        return read
    embedding = read.embedding
    # a tireg-format file carries its original's hash; this file is then a re-encoding
    reencoded = embedding.source_sha256 is not None and embedding.source_sha256 != read.sha256
    facts = FileFacts(str(path), read.sha256, "tireg" if reencoded else embedding.source_format)
    return _Ready(candidate, embedding, embedding.vectors_sha256(), facts, kept)


def _prepared(candidates: list[_Candidate]) -> Iterator[tuple[_Candidate, _Ready | FileOutcome]]:
    """:func:`_prepare` every candidate on a few threads, yielding results in order.

    Files are read ahead while the caller stores and records earlier batches (waiting on the
    disk's fsyncs and on the catalogue, both of which release the GIL). At most
    :data:`PREPARE_AHEAD` results wait in memory, however large the folder, and reads start
    only while :data:`PREPARE_MEMORY` allows (see :class:`_MemoryBudget`): when it does not, the
    oldest result is handed on first, which frees its share.
    """
    budget = _MemoryBudget(PREPARE_MEMORY)
    pending: deque[tuple[_Candidate, Future[_Ready | FileOutcome]]] = deque()

    def oldest() -> tuple[_Candidate, _Ready | FileOutcome]:
        first, future = pending.popleft()
        result = future.result()
        if isinstance(result, _Ready):
            budget.give(result.size)
        return first, result

    with ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="tireg-add") as pool:
        try:
            for candidate in candidates:
                while not budget.try_take(MAX_READ_MEMORY):
                    yield oldest()  # frees its share; with none pending, all of it is free
                pending.append((candidate, pool.submit(_prepare, candidate, budget)))
                if len(pending) >= PREPARE_AHEAD:
                    yield oldest()
            while pending:
                yield oldest()
        finally:
            for _, future in pending:
                future.cancel()


def _commit(
    catalogue: Catalogue, batch: list[_Ready], hints: Mapping[str, str]
) -> list[FileOutcome]:
    """Record a batch of stored files in one transaction: one outcome per file, in order.

    Should the catalogue refuse one of them (a constraint no file should break), the batch is
    rolled back whole and recorded again one file per transaction, so only that file fails.
    """
    try:
        return _commit_together(catalogue, batch, hints)
    except (IntegrityError, DataError) as exc:
        if len(batch) == 1:
            # PostgreSQL appends DETAIL lines (the whole row); the first line says what broke
            reason = f"the catalogue refused it: {str(exc.orig).splitlines()[0]}"
            return [FileOutcome(str(batch[0].candidate.path), ERROR, reason)]
    return [out for ready in batch for out in _commit(catalogue, [ready], hints)]


@retried
def _commit_together(
    catalogue: Catalogue, batch: list[_Ready], hints: Mapping[str, str]
) -> list[FileOutcome]:
    with catalogue.transaction() as session:
        sources: dict[Path, int] = {}
        files = []
        shas = [ready.vectors_sha256 for ready in batch]
        for ready in batch:
            source_id = ready.candidate.source_id
            if source_id is None:
                folder = ready.candidate.folder
                if folder not in sources:
                    sources[folder] = local_source(session, folder)
                source_id = sources[folder]
            files.append((ready.embedding, replace(ready.file, source_id=source_id)))
        recorded, changed = _record_many(session, files, shas, hints)
        search_index.reindex_many(session, changed)
    return [
        FileOutcome(
            file.location,
            IMPORTED if r.created else KNOWN,
            None,
            r.embedding_id,
            r.name,
            r.vectors_sha256,
        )
        for (_, file), r in zip(files, recorded, strict=True)
    ]


def add_paths(
    catalogue: Catalogue,
    paths: Iterable[str | os.PathLike[str]],
    *,
    progress: ItemProgress | None = None,
    source_id: int | None = None,
    hints: Mapping[str, str] | None = None,
    store: ContentStore | None = None,
) -> ImportReport:
    """Import every embedding in ``paths`` (files, and folders walked recursively).

    Files are read and stored outside any lock (on a few threads), then recorded
    :data:`BATCH_FILES` at a time in one transaction: a file that cannot be read (or that the
    catalogue refuses) is reported with its reason and the others go on, and a killed process
    loses at most the two batches not yet committed (one being stored, one being recorded),
    which the next run imports again. Without ``source_id`` each folder named (or the folder of
    each file named) becomes a ``local`` source when a file is first imported from it. Failures
    of the catalogue or the store themselves (a full disk, no permission) stop the run with one
    :class:`TiregError`; batches committed before it stay imported.
    """
    store = store if store is not None else ContentStore()
    hints = dict(hints or {})
    report = ImportReport()
    candidates: list[_Candidate] = []
    seen: set[Path] = set()
    for given in map(Path, paths):
        if not given.exists():
            report._add(FileOutcome(str(given), ERROR, "no such file or folder"))
            continue
        root = given.resolve()
        folder = root if root.is_dir() else root.parent
        if root.is_dir():
            files, skipped = walk(root)
            report.skipped += skipped
        else:
            files = [root]
        for file in files:
            if file not in seen:
                seen.add(file)
                candidates.append(_Candidate(file, source_id, folder))

    # 1. files are read ahead on threads (_prepared), a batch at a time stored on a pool of
    #    threads, and recorded once stored: the stores of one batch run while the batch before
    #    is recorded, and a batch's stores start once the batch before is stored, so where two
    #    files hold the same vectors, the store keeps the same copy however the threads ran
    outcomes: dict[Path, FileOutcome] = {}
    done = 0
    current, stored = _Batch(), _Batch()

    def record(batch: _Batch) -> None:
        """Record a batch whose store files are durable; report its files' progress, once per
        batch and right after its commit: a Ctrl-C that lands between the two (a few bytecodes,
        not a loop over the batch) is all that can make the count lag what was kept."""
        nonlocal done
        recorded = _commit(catalogue, batch.ready, hints) if batch.ready else []
        done += len(batch.candidates)
        if progress is not None and batch.candidates:
            progress(done, len(candidates), str(batch.candidates[-1].path))
        for ready, outcome in zip(batch.ready, recorded, strict=True):  # one per file, in order
            outcomes[ready.candidate.path] = outcome

    def advance(pool: ThreadPoolExecutor) -> None:
        """Start storing the current batch and record the one stored before it."""
        nonlocal current, stored
        for future in stored.writes:
            future.result()  # durable now; a StoreError stops the run here
        previous, stored, current = stored, current, _Batch()
        stored.writes = store.put_many(
            ((ready.vectors_sha256, ready.embedding) for ready in stored.ready), pool, SYNC_THREADS
        )
        record(previous)

    with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="tireg-store") as pool:
        for candidate, ready in _prepared(candidates):
            current.candidates.append(candidate)
            if isinstance(ready, FileOutcome):
                outcomes[candidate.path] = ready
            else:
                current.ready.append(ready)
                current.size += ready.size
            if len(current.candidates) >= BATCH_FILES or current.size >= BATCH_BYTES:
                advance(pool)
        advance(pool)  # the last batch is stored,
        advance(pool)  # and recorded

    _record_previews(catalogue, outcomes)
    for outcome in outcomes.values():
        report._add(outcome)
    return report


# -- previews --------------------------------------------------------------------------------


def _preview_target_names(stem: str) -> list[str]:
    return [f"{stem}.preview{ext}" for ext in sorted(PICTURE_EXTENSIONS)] + [
        f"{stem}{ext}" for ext in sorted(PICTURE_EXTENSIONS)
    ]


def _is_picture(path: Path, outcomes: Mapping[Path, FileOutcome]) -> bool:
    """A picture, not an embedding: decided by this run's outcome, or by reading it now."""
    if path in outcomes:
        return outcomes[path].status in (NOT_EMBEDDING, PREVIEW)
    if path.suffix.lower() not in WALK_EXTENSIONS:
        return True  # jpg and friends cannot hold an embedding
    return isinstance(read := _read(path), FileOutcome) and read.status == NOT_EMBEDDING


def _previews_of(
    embedding_file: Path, outcomes: Mapping[Path, FileOutcome], listings: dict[Path, set[str]]
) -> list[Path]:
    folder = embedding_file.parent
    if folder not in listings:
        try:
            listings[folder] = {p.name for p in folder.iterdir()}
        except OSError:
            listings[folder] = set()
    present = listings[folder]
    pictures = [
        folder / name
        for name in _preview_target_names(embedding_file.stem)
        if name in present and folder / name != embedding_file
    ]
    if CONCEPT_IMAGES in present and (folder / CONCEPT_IMAGES).is_dir():
        pictures += sorted(
            p for p in (folder / CONCEPT_IMAGES).iterdir() if p.suffix.lower() in PICTURE_EXTENSIONS
        )
    return [p for p in pictures if p.is_file() and _is_picture(p, outcomes)]


@retried
def _record_previews(catalogue: Catalogue, outcomes: dict[Path, FileOutcome]) -> None:
    """Attach pictures beside imported embeddings as their previews (one transaction)."""
    links: list[tuple[int, Path]] = []
    listings: dict[Path, set[str]] = {}
    for path, outcome in list(outcomes.items()):
        if outcome.status in (IMPORTED, KNOWN) and outcome.embedding_id is not None:
            links += [(outcome.embedding_id, p) for p in _previews_of(path, outcomes, listings)]
    if not links:
        return
    hashes: dict[Path, str] = {}
    with catalogue.transaction() as session:
        for embedding_id, picture in links:
            location = str(picture)
            if picture not in hashes:
                try:
                    hashes[picture] = sha256_file(picture)
                except OSError:
                    continue
            exists = session.scalar(
                select(PreviewRow.id).where(
                    PreviewRow.embedding_id == embedding_id, PreviewRow.location == location
                )
            )
            if exists is None:
                session.add(
                    PreviewRow(embedding_id=embedding_id, location=location, sha256=hashes[picture])
                )
            if picture in outcomes:
                outcomes[picture].status = PREVIEW
                outcomes[picture].reason = None
                outcomes[picture].embedding_id = embedding_id
