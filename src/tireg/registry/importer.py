"""Importing embedding files into the catalogue: ``tireg add`` and every source's downloads.

Two levels:

* :func:`import_embedding` records one embedding already read (by a source client or by
  :func:`add_paths`) inside the caller's transaction: the embedding row keyed by its vectors, a
  provenance row for the file it came from, compatibility facts, tags, and its search-index row.
* :func:`add_paths` walks files and folders, reads each file with
  :func:`tireg.converters.read_file`, stores it, and records it in **its own transaction**, so a
  bad file, or a process killed half-way, never loses the files before it. Pictures beside an
  embedding (``name.preview.png``, A1111's ``name.png``, ``concept_images/``) become its previews.

Ordering is what makes a kill at any moment safe: the store file is written (atomically, and
durably) *before* the transaction that references it commits. A killed process can leave an
orphan store file, which is harmless (the next import of the same vectors reuses it), but never a
row pointing at a missing or partial file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tireg.converters import (
    Embedding,
    NotAnEmbeddingError,
    UnsafePickleError,
    read_file,
)
from tireg.db.models import CompatRow, EmbeddingRow, PreviewRow, ProvenanceRow, SourceRow, TagRow
from tireg.db.session import Catalogue
from tireg.errors import TiregError
from tireg.registry import search_index
from tireg.registry.store import ContentStore, relative_path

#: extensions tried when walking a folder; a file named on the command line is always tried
#: (readers decide by content, so a misnamed embedding given explicitly is still found)
WALK_EXTENSIONS = frozenset(
    {".pt", ".pth", ".bin", ".safetensors", ".png", ".webp", ".jxl", ".avif"}
)
#: pictures that can be previews (jpg cannot hold an A1111 image embedding, png/webp can)
PICTURE_EXTENSIONS = frozenset({".png", ".webp", ".jpg", ".jpeg", ".jxl", ".avif"})
#: the sd-concepts-library layout keeps example pictures in this folder beside the embedding
CONCEPT_IMAGES = "concept_images"

#: keys a source (or ``tireg add --tag``) may pass as hints; all values are strings
HINT_KEYS = (
    "trigger",  # the word a source says to type; names a new embedding
    "concept_type",  # object | style
    "licence",
    "description",
    "base_model_hint",  # "SD 1.5", "Waifu Diffusion v1.2": becomes a compat fact
    "base_model_evidence",  # where that hint came from ("civitai baseModel"); default "source hint"
    "nsfw",  # "true" / "false"
    "tags",  # comma-separated
)

IMPORTED, KNOWN, NOT_EMBEDDING, UNSAFE, ERROR, PREVIEW = (
    "imported",
    "known",
    "not_embedding",
    "unsafe",
    "error",
    "preview",
)

Progress = Callable[[int, int, str], None]
"""``progress(done, total, path)``, called after each file."""


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

    def to_json(self) -> dict[str, Any]:
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


# -- one embedding ---------------------------------------------------------------------------


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
    The store file is written here if it is not there yet, before the caller commits.
    """
    hints = dict(hints or {})
    sha = embedding.vectors_sha256()
    store = store if store is not None else ContentStore()
    store_path = relative_path(sha) if sha in store else store.put(embedding)
    row = session.scalar(select(EmbeddingRow).where(EmbeddingRow.vectors_sha256 == sha))
    created = row is None
    if row is None:
        row = EmbeddingRow(
            vectors_sha256=sha,
            name=hints.get("trigger") or embedding.name or PurePath(location).stem,
            family=embedding.family.value,
            num_vectors=embedding.num_vectors,
            widths=",".join(f"{key}:{width}" for key, width in embedding.widths.items()),
            nsfw=False,
            store_path=store_path,
        )
        session.add(row)
    _fill_facts(row, embedding, hints)
    session.flush()

    original_sha256 = original_sha256 or embedding.source_sha256 or sha
    if (
        session.scalar(
            select(ProvenanceRow.id).where(
                ProvenanceRow.embedding_id == row.id,
                ProvenanceRow.original_sha256 == original_sha256,
                ProvenanceRow.location == location,
            )
        )
        is None
    ):
        session.add(
            ProvenanceRow(
                embedding_id=row.id,
                source_id=source_id,
                location=location,
                original_format=original_format or embedding.source_format or "tireg",
                original_sha256=original_sha256,
                name_in_file=embedding.name,
                revision=revision,
            )
        )
    for relation, model_ref, evidence in _compat_facts(embedding, hints):
        _add_fact(session, row.id, relation, model_ref, evidence)
    add_tags(session, row.id, split_tags(hints.get("tags", "")))
    search_index.reindex(session, row.id)
    return row, created


def _fill_facts(row: EmbeddingRow, embedding: Embedding, hints: Mapping[str, str]) -> None:
    """Fill facts the row does not have yet; what is known is never overwritten."""
    for column, value in (
        ("concept_type", hints.get("concept_type")),
        ("description", hints.get("description")),
        ("licence", hints.get("licence")),
        ("step", embedding.step),
        ("trained_on_hash", embedding.trained_on_hash and embedding.trained_on_hash.lower()),
        ("trained_on_name", embedding.trained_on_name),
    ):
        if value not in (None, "") and getattr(row, column) is None:
            setattr(row, column, value)
    if hints.get("nsfw", "").strip().lower() in ("1", "true", "yes"):
        row.nsfw = True


def _compat_facts(embedding: Embedding, hints: Mapping[str, str]) -> list[tuple[str, str, str]]:
    facts = [("family", embedding.family.value, "vector widths")]
    if embedding.trained_on_hash:
        facts.append(("trained_on", embedding.trained_on_hash.lower(), "a1111 sd_checkpoint"))
    if hints.get("base_model_hint"):
        evidence = hints.get("base_model_evidence") or "source hint"
        facts.append(("base_model_hint", hints["base_model_hint"], evidence))
    return facts


def _add_fact(
    session: Session, embedding_id: int, relation: str, model_ref: str, evidence: str
) -> None:
    exists = session.scalar(
        select(CompatRow.id).where(
            CompatRow.embedding_id == embedding_id,
            CompatRow.relation == relation,
            CompatRow.model_ref == model_ref,
            CompatRow.evidence == evidence,
        )
    )
    if exists is None:
        session.add(
            CompatRow(
                embedding_id=embedding_id, relation=relation, model_ref=model_ref, evidence=evidence
            )
        )


def split_tags(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def add_tags(session: Session, embedding_id: int, tags: Iterable[str]) -> None:
    """Attach tags not already on the embedding (the caller reindexes)."""
    have = set(session.scalars(select(TagRow.tag).where(TagRow.embedding_id == embedding_id)))
    for tag in tags:
        if tag not in have:
            session.add(TagRow(embedding_id=embedding_id, tag=tag))
            have.add(tag)


def local_source(session: Session, folder: Path) -> int:
    """The id of the ``local`` source for ``folder``, created on first use."""
    locator = str(folder)
    found = session.scalar(
        select(SourceRow.id).where(SourceRow.kind == "local", SourceRow.locator == locator)
    )
    if found is not None:
        return found
    source = SourceRow(kind="local", locator=locator, title=folder.name, status="fetched")
    session.add(source)
    session.flush()
    return source.id


# -- files and folders -----------------------------------------------------------------------


@dataclass
class _Candidate:
    path: Path
    source_id: int | None  # given by the caller, or
    folder: Path  # the folder named on the command line: its ``local`` source


def _walk(root: Path) -> tuple[list[Path], int]:
    """Candidate files under ``root`` (sorted), and how many other files were skipped.

    Hidden folders (``.git``, ``.cache``) and ``concept_images`` (pictures, recorded as previews)
    are not entered.
    """
    found: list[Path] = []
    skipped = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != CONCEPT_IMAGES)
        for name in sorted(files):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in WALK_EXTENSIONS:
                found.append(Path(folder) / name)
            else:
                skipped += 1
    return found, skipped


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(path: Path) -> Embedding | FileOutcome:
    """Read one file, or say why it is not imported. Never raises for a bad file."""
    where = str(path)
    try:
        return read_file(path)
    except UnsafePickleError as exc:
        return FileOutcome(where, UNSAFE, str(exc))
    except NotAnEmbeddingError as exc:
        return FileOutcome(where, NOT_EMBEDDING, exc.message)
    except TiregError as exc:
        return FileOutcome(where, ERROR, exc.message)
    except OSError as exc:
        return FileOutcome(where, ERROR, f"cannot read file: {exc.strerror or exc}")
    except (ValueError, TypeError, KeyError, IndexError, MemoryError) as exc:
        # a reader bug or a structure no reader anticipated: this file fails, the others go on
        return FileOutcome(where, ERROR, f"unreadable ({type(exc).__name__}: {exc})")


def _import_file(
    catalogue: Catalogue,
    store: ContentStore,
    candidate: _Candidate,
    hints: Mapping[str, str],
) -> FileOutcome:
    path = candidate.path
    read = _read(path)
    if isinstance(read, FileOutcome):
        return read
    embedding = read
    try:
        file_sha = _file_sha256(path)
    except OSError as exc:
        return FileOutcome(str(path), ERROR, f"cannot read file: {exc.strerror or exc}")
    # a tireg-format file carries its original's hash; this file is then a re-encoding
    reencoded = embedding.source_sha256 is not None and embedding.source_sha256 != file_sha
    store.put(embedding)  # durable before the row that points at it commits
    with catalogue.transaction() as session:
        source_id = candidate.source_id
        if source_id is None:
            source_id = local_source(session, candidate.folder)
        row, created = import_embedding(
            session,
            embedding,
            location=str(path),
            original_sha256=file_sha,
            original_format="tireg" if reencoded else embedding.source_format,
            source_id=source_id,
            hints=hints,
            store=store,
        )
        return FileOutcome(
            str(path), IMPORTED if created else KNOWN, None, row.id, row.name, row.vectors_sha256
        )


def add_paths(
    catalogue: Catalogue,
    paths: Iterable[str | os.PathLike[str]],
    *,
    progress: Progress | None = None,
    source_id: int | None = None,
    hints: Mapping[str, str] | None = None,
    store: ContentStore | None = None,
) -> ImportReport:
    """Import every embedding in ``paths`` (files, and folders walked recursively).

    Each file is read, stored and recorded in its own transaction; a file that cannot be read is
    reported with its reason and the others go on. Without ``source_id`` each folder named (or
    the folder of each file named) becomes a ``local`` source, when a file is first imported
    from it. Failures of the catalogue or the
    store themselves (a full disk, no permission) stop the run with one :class:`TiregError`;
    files imported before it stay imported.
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
            files, skipped = _walk(root)
            report.skipped += skipped
        else:
            files = [root]
        for file in files:
            if file not in seen:
                seen.add(file)
                candidates.append(_Candidate(file, source_id, folder))

    outcomes: dict[Path, FileOutcome] = {}
    for done, candidate in enumerate(candidates, 1):
        # StoreError / CatalogueError propagate: every further file would fail the same way
        outcomes[candidate.path] = _import_file(catalogue, store, candidate, hints)
        if progress is not None:
            progress(done, len(candidates), str(candidate.path))

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
                    hashes[picture] = _file_sha256(picture)
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
