"""Naming a checkpoint: which model a spec typed by a user (a path, a hash or a name) means.

``tireg check``, ``search --compatible-with``, ``install --model``, ``validate`` and ``train``
all take a model the same way, so the rule lives here, apart from judging what works on it
(:mod:`tireg.registry.compat`), which only needs the :class:`ModelRef` this module makes.

A spec resolves, in order, as:

* a checkpoint file or diffusers folder on disk: hashed through the hash cache, detected from its
  header, and recorded in the caller's transaction (:mod:`tireg.registry.models`);
* a hash (8 hex: A1111's old hash, 10: AutoV2, 64 or a prefix: SHA-256): looked up among the
  user's catalogued checkpoints, then the shipped table of well-known ones. An unknown hash
  still makes a model whose family is unknown, so a recorded hash can match it exactly;
* a name: a catalogued checkpoint's (or its file's), else the shipped table's.

Old A1111 hashes collide (8 hex of a small sample of the file), so one spec may stand for several
files: a :class:`ModelRef` keeps them all, and certain matches beat old-hash ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tireg.checkpoints import FAMILY_LABELS, hash_match, known_models, lookup_name, normalise_hash
from tireg.checkpoints.detect import UNKNOWN
from tireg.checkpoints.known_models import OLD_HASH
from tireg.db.schema import CheckpointRow
from tireg.errors import TiregError
from tireg.progress import Advance
from tireg.registry.models import KNOWN, inspect_checkpoint, record_checkpoint, row_hashes


class ModelNotFoundError(TiregError):
    """A model spec names no known checkpoint, or several different ones."""


@dataclass(frozen=True)
class ModelFile:
    """One file a model spec stands for, with the hashes that identify it."""

    name: str
    family: str
    old_hash: str | None = None
    autov2: str | None = None
    sha256: str | None = None
    path: str | None = None
    checkpoint_id: int | None = None
    origin: str = "hash"  # user (catalogued file) | known (shipped table) | hash (only a hash)

    def match(self, text: str) -> str | None:
        """How ``text`` identifies this file (old_hash / autov2 / sha256 / sha256_prefix, or
        path: a diffusers folder has no single file to hash, so a validation names it so)."""
        if self.path is not None and text == self.path:
            return "path"
        return hash_match(text, old_hash=self.old_hash, autov2=self.autov2, sha256=self.sha256)


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it: one file, or several that share the spec (the same
    old hash, or the same name in several containers)."""

    spec: str
    name: str
    family: str
    files: tuple[ModelFile, ...]
    evidence: str = ""  # how the family is known
    note: str | None = None

    @property
    def label(self) -> str:
        return FAMILY_LABELS.get(self.family, self.family)

    @property
    def sha256(self) -> str | None:
        return self.files[0].sha256 if self.files else None

    @property
    def old_hash(self) -> str | None:
        return self.files[0].old_hash if self.files else None

    @property
    def autov2(self) -> str | None:
        return self.files[0].autov2 if self.files else None

    @property
    def path(self) -> str | None:
        return self.files[0].path if self.files else None

    def match(self, text: str) -> tuple[ModelFile, str] | None:
        """The first of this model's files ``text`` identifies, and how."""
        for file in self.files:
            via = file.match(text)
            if via is not None:
                return file, via
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "name": self.name,
            "family": self.family,
            "label": self.label,
            "evidence": self.evidence,
            "note": self.note,
            "files": [vars(f) for f in self.files],
        }


def user_files(session: Session) -> list[ModelFile]:
    """The user's checkpoints: registered files, and models named by a hash alone."""
    rows = session.scalars(select(CheckpointRow).where(CheckpointRow.origin != KNOWN))
    return [
        ModelFile(
            name=r.name,
            family=r.family,
            old_hash=r.old_hash,
            autov2=autov2,
            sha256=sha256,
            path=r.path,
            checkpoint_id=r.id,
            origin="user",
        )
        for r in rows
        for autov2, sha256 in [row_hashes(r)]
    ]


def _known_files() -> list[ModelFile]:
    return [
        ModelFile(
            name=m.name,
            family=m.family,
            old_hash=m.old_hash,
            autov2=m.autov2,
            sha256=m.sha256,
            origin=KNOWN,
        )
        for m in known_models()
    ]


def _combine(spec: str, files: Sequence[ModelFile], evidence: str) -> ModelRef:
    families = {f.family for f in files}
    family = families.pop() if len(families) == 1 else UNKNOWN
    names = list(dict.fromkeys(f.name for f in files))
    note = None
    if len(names) > 1:
        note = f"{spec} names {len(names)} different files: {', '.join(names)}"
    return ModelRef(spec, names[0], family, tuple(files), evidence, note)


def _files_for_hash(value: str, user: Sequence[ModelFile]) -> list[ModelFile]:
    """Catalogued files first, then the shipped table; certain matches beat old-hash ones."""
    matches = [(f, via) for f in [*user, *_known_files()] if (via := f.match(value))]
    certain = [f for f, via in matches if via != OLD_HASH]
    return certain or [f for f, _ in matches]


def _hash_only(value: str) -> ModelFile:
    return ModelFile(
        name=value,
        family=UNKNOWN,
        old_hash=value if len(value) == 8 else None,
        autov2=value if len(value) == 10 else None,
        sha256=value if len(value) == 64 else None,
    )


def resolve_model(session: Session, spec: str, *, progress: Advance | None = None) -> ModelRef:
    """The model ``spec`` names (see the module docstring for the order tried).

    Raises :class:`ModelNotFoundError` for an unknown name or one that names several models.

    Example: ``resolve_model(session, "7460a6fa").name == "Stable Diffusion 1.4"``."""
    path = Path(spec).expanduser()
    if path.exists():
        # before any statement, so hashing a new file never holds the catalogue's write lock
        facts = inspect_checkpoint(path, progress=progress)
        row = record_checkpoint(session, facts)
        hashes = facts.hashes
        file = ModelFile(
            name=row.name,
            family=row.family,
            old_hash=row.old_hash,
            autov2=hashes.autov2 if hashes else None,
            sha256=row.sha256,
            path=row.path,
            checkpoint_id=row.id,
            origin="user",
        )
        known_as = facts.known_as
        note = f"known as {', '.join(known_as)}" if known_as else None
        return ModelRef(spec, row.name, row.family, (file,), facts.detection.evidence, note)

    value = normalise_hash(spec)
    if value is not None:
        files = _files_for_hash(value, user_files(session))
        if files:
            return _combine(spec, files, "catalogue / known-models table")
        return ModelRef(
            spec,
            value,
            UNKNOWN,
            (_hash_only(value),),
            "",
            "hash not in the catalogue or the known-models table",
        )

    wanted = spec.strip().lower()
    user = [
        f
        for f in user_files(session)
        if wanted in (f.name.lower(), Path(f.path or "").name.lower())
    ]
    if user:
        return _combine(spec, user, "catalogued checkpoint")
    known = lookup_name(spec)
    names = list(dict.fromkeys(m.name for m in known))
    if len(names) > 1:
        raise ModelNotFoundError(
            f"{spec!r} names {len(names)} models: {'; '.join(names)}",
            hint="give the full name, a hash, or a path",
        )
    if known:
        files = [f for f in _known_files() if f.name == names[0]]
        return _combine(spec, files, "known-models table")
    raise ModelNotFoundError(
        f"no model named {spec!r}",
        hint="give a checkpoint path, a hash, or register it with: tireg model add PATH",
    )


def names_for_hash(value: str, user: Sequence[ModelFile]) -> list[str]:
    """Names of the models a recorded hash points at among ``user`` files and the shipped
    table (several for an old-hash collision; none for text that is not a hash)."""
    if normalise_hash(value) is None:
        return []
    return list(dict.fromkeys(f.name for f in _files_for_hash(value, user)))


def name_hash(session: Session, value: str) -> list[str]:
    """:func:`names_for_hash` among the catalogue's checkpoints.

    Example: ``name_hash(session, "e6e8e1fc") == ["NovelAI anime, full, latest"]``."""
    return names_for_hash(value, user_files(session))
