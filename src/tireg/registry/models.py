"""Checkpoints in the catalogue: the user's files (``tireg model add``) and the shipped table.

Why checkpoints are catalogued at all: ``tireg check`` / ``search --compatible-with`` /
``install --model`` accept a model by name or hash, and an embedding's recorded A1111 hash only
names a model if some table knows it. The user's files are hashed once (through the hash cache)
and detected once, then answered from here. Rows of the shipped table
(:func:`tireg.checkpoints.known_models`) are mirrored with ``origin = "known"`` so one listing
shows both; the package data stays the authority and the mirror is refreshed when it differs.

Hashing happens *before* the transaction that records a file: a multi-GB file must never hold
the catalogue's write lock while it is being read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tireg.checkpoints import (
    FAMILY_LABELS,
    CheckpointError,
    Detection,
    FileHashes,
    HashCache,
    detect_family,
    known_models,
    lookup_hash,
    normalise_hash,
)
from tireg.db.schema import CheckpointRow
from tireg.db.session import Catalogue, retried
from tireg.progress import Advance

USER, KNOWN = "user", "known"


@dataclass(frozen=True)
class CheckpointFacts:
    """What tireg learns from a checkpoint on disk, before anything is recorded."""

    path: Path
    detection: Detection
    hashes: FileHashes | None  # None for a diffusers folder (no single file to hash)
    cached: bool = False  # the hashes came from the hash cache

    @property
    def known_as(self) -> list[str]:
        """Names in the shipped table for this exact file (by SHA-256)."""
        if self.hashes is None:
            return []
        return [m.model.name for m in lookup_hash(self.hashes.sha256)]


def inspect_checkpoint(
    path: str | os.PathLike[str],
    *,
    cache: HashCache | None = None,
    refresh: bool = False,
    progress: Advance | None = None,
) -> CheckpointFacts:
    """Detect a checkpoint's family (header only) and hash it (cached); touches no catalogue."""
    target = Path(path).expanduser().resolve()
    if not target.exists():
        raise CheckpointError("no such file or folder", path=path)
    detection = detect_family(target)
    if target.is_dir():
        return CheckpointFacts(target, detection, None)
    if cache is None:
        with HashCache() as own:
            result = own.hashes(target, refresh=refresh, progress=progress)
    else:
        result = cache.hashes(target, refresh=refresh, progress=progress)
    return CheckpointFacts(target, detection, result.hashes, result.cached)


def record_checkpoint(
    session: Session, facts: CheckpointFacts, *, name: str | None = None
) -> CheckpointRow:
    """Insert or update the row for ``facts.path`` in the caller's transaction."""
    row = session.scalar(select(CheckpointRow).where(CheckpointRow.path == str(facts.path)))
    if row is None:
        row = CheckpointRow(path=str(facts.path), origin=USER, name=name or facts.path.stem)
        if facts.path.is_dir():
            row.name = name or facts.path.name
        session.add(row)
    elif name:
        row.name = name
    row.family = facts.detection.family
    hashes = facts.hashes
    row.sha256 = hashes.sha256 if hashes else None
    row.old_hash = hashes.old_hash if hashes and hashes.old_hash_meaningful else None
    row.blake3 = hashes.blake3 if hashes else None
    row.crc32 = hashes.crc32 if hashes else None
    row.addnet_hash = hashes.addnet if hashes else None
    row.size = hashes.size if hashes else None
    session.flush()
    return row


def sync_known_models(session: Session) -> int:
    """Mirror the shipped table into ``checkpoints`` (``origin = "known"``); return rows changed."""
    wanted = {(m.name, m.old_hash, m.sha256): m for m in known_models()}
    have = {
        (r.name, r.old_hash, r.sha256): r
        for r in session.scalars(select(CheckpointRow).where(CheckpointRow.origin == KNOWN))
    }
    changed = 0
    for key, row in have.items():
        if key not in wanted:
            session.delete(row)
            changed += 1
    for key, model in wanted.items():
        if key not in have:
            session.add(
                CheckpointRow(
                    name=model.name,
                    path=None,
                    family=model.family,
                    sha256=model.sha256,
                    old_hash=model.old_hash,
                    origin=KNOWN,
                )
            )
            changed += 1
    if changed:
        session.flush()
    return changed


@dataclass(frozen=True)
class AddedModel:
    """One checkpoint ``add_models`` recorded."""

    row_id: int
    facts: CheckpointFacts
    name: str

    def to_dict(self) -> dict[str, Any]:
        facts = self.facts
        return {
            "id": self.row_id,
            "name": self.name,
            "path": str(facts.path),
            **facts.detection.to_dict(),
            "hashes": facts.hashes.to_dict() if facts.hashes else None,
            "hashes_cached": facts.cached,
            "known_as": facts.known_as,
        }


def add_models(
    catalogue: Catalogue,
    paths: Iterable[str | os.PathLike[str]],
    *,
    name: str | None = None,
    refresh: bool = False,
    progress: Advance | None = None,
) -> list[AddedModel]:
    """Register checkpoints (files or diffusers folders): detect, hash, then record each in its
    own short transaction. Every path is inspected before the first is recorded, so a bad path
    fails the command with nothing half-done.

    Example: ``add_models(open_catalogue(), ["~/models/v1-5-pruned-emaonly.safetensors"])``."""
    items = list(paths)
    if name and len(items) != 1:
        raise CheckpointError("--name needs exactly one checkpoint")
    with HashCache() as cache:
        inspected = [
            inspect_checkpoint(p, cache=cache, refresh=refresh, progress=progress) for p in items
        ]
    added = []
    for facts in inspected:
        with catalogue.transaction() as session:
            sync_known_models(session)
            row = record_checkpoint(session, facts, name=name)
            added.append(AddedModel(row.id, facts, row.name))
    return added


@retried
def add_model_hash(catalogue: Catalogue, value: str, *, name: str, family: str) -> dict[str, Any]:
    """Name a checkpoint known only by a hash (no file): ``tireg model add --hash``.

    An A1111 embedding records the hash of the model it was trained on; when that model is not
    in the shipped table, this is how the user tells tireg what it is, so ``tireg check`` and
    :func:`tireg.registry.model_refs.resolve_model` show the user's name and judge by the family.
    ``value`` is an old A1111 hash (8 hex), an AutoV2 (10 hex) or a SHA-256 (64 hex); the row
    is a ``user`` checkpoint without a path. Naming the same hash again renames it.

    Example: ``add_model_hash(open_catalogue(), "0badf00d", name="my merge", family="sd1")``.
    """
    text = normalise_hash(value)
    if text is None or len(text) not in (8, 10, 64):
        raise CheckpointError(
            f"{value!r} is not a model hash",
            hint="give an old A1111 hash (8 hex), an AutoV2 (10 hex) or a SHA-256 (64 hex)",
        )
    if family not in FAMILY_LABELS:
        raise CheckpointError(
            f"unknown family {family!r}", hint=f"choose one of {', '.join(FAMILY_LABELS)}"
        )
    if not name.strip():
        raise CheckpointError("a hash needs a name", hint="pass --name")
    column = CheckpointRow.old_hash if len(text) == 8 else CheckpointRow.sha256
    with catalogue.transaction() as session:
        sync_known_models(session)
        rows = list(
            session.scalars(
                select(CheckpointRow).where(CheckpointRow.origin == USER, column == text)
            )
        )
        with_file = [r for r in rows if r.path is not None]
        if with_file:
            raise CheckpointError(
                f"{text} is the hash of the registered file {with_file[0].path} "
                f"({with_file[0].name})",
                hint="rename it with: tireg model add PATH --name NAME",
            )
        row = rows[0] if rows else None
        if row is None:
            row = CheckpointRow(path=None, origin=USER, name=name, family=family)
            if len(text) == 8:
                row.old_hash = text
            else:
                row.sha256 = text  # 64 hex, or an AutoV2: see row_hashes()
            session.add(row)
        row.name, row.family = name.strip(), family
        session.flush()
        return model_record(row)


def row_hashes(row: CheckpointRow) -> tuple[str | None, str | None]:
    """``(autov2, sha256)`` of a checkpoint row. The ``sha256`` column holds the SHA-256 or, for
    a model named by its AutoV2 alone (:func:`add_model_hash`), those 10 hex digits: AutoV2 is
    the SHA-256's first 10, so prefix matching stays true either way."""
    if not row.sha256:
        return None, None
    return row.sha256[:10], (row.sha256 if len(row.sha256) == 64 else None)


@retried
def list_models(catalogue: Catalogue, *, origin: str | None = None) -> list[dict[str, Any]]:
    """Catalogued checkpoints as records (:func:`model_record`), the user's first, then the
    shipped table (mirrored first, so it is always complete); ``origin`` filters."""
    with catalogue.transaction() as session:
        sync_known_models(session)
        query = select(CheckpointRow)
        if origin is not None:
            query = query.where(CheckpointRow.origin == origin)
        rows = sorted(
            session.scalars(query), key=lambda r: (r.origin != USER, r.name.lower(), r.id)
        )
        return [model_record(r) for r in rows]


def _known_autov2(row: CheckpointRow) -> str | None:
    """AutoV2 of a mirrored row whose table entry publishes it without a SHA-256 (the table has
    no column for it)."""
    for model in known_models():
        if (model.name, model.old_hash, model.sha256) == (row.name, row.old_hash, row.sha256):
            return model.autov2
    return None


def model_record(row: CheckpointRow) -> dict[str, Any]:
    """A checkpoint row as JSON-ready facts (``autov2`` derived from the SHA-256)."""
    autov2, sha256 = row_hashes(row)
    if autov2 is None and row.origin == KNOWN:
        autov2 = _known_autov2(row)
    return {
        "id": row.id,
        "name": row.name,
        "origin": row.origin,
        "family": row.family,
        "path": row.path,
        "old_hash": row.old_hash,
        "autov2": autov2,
        "sha256": sha256,
        "crc32": row.crc32,
        "blake3": row.blake3,
        "addnet_hash": row.addnet_hash,
        "size": row.size,
    }
