"""The shipped table of well-known checkpoints, and the rule for matching a hash to a model.

Why: A1111 records only a bare hash in an embedding (``sd_checkpoint``: the old 8-hex model hash
in 2022 builds, the 10-hex AutoV2 from 2023), so naming the model needs a table of published
hashes. ``known_models.csv`` (package data) holds them with their sources; see the project's
reference notes for the citations behind each row.

**Matching rule** (:func:`hash_match`, also used against the user's own checkpoints):

* 8 hex  -> the old A1111 hash. Collisions are real (merges that leave the bytes at 1 MiB alone
  share it), so such a match means "probably this model", never proof;
* 10 hex -> AutoV2, i.e. the first 10 hex of the SHA-256;
* 64 hex -> the SHA-256;
* any other length from 6 hex -> a prefix of the SHA-256.

Comparison ignores case (Civitai prints upper case) and surrounding ``[...]``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

OLD_HASH, AUTOV2, SHA256, SHA256_PREFIX = "old_hash", "autov2", "sha256", "sha256_prefix"
MIN_PREFIX = 6
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class KnownModel:
    """One published checkpoint file."""

    name: str
    file: str | None
    family: str
    old_hash: str | None
    sha256: str | None
    autov2: str | None  # the stored value, or the SHA-256's first 10 hex
    note: str | None
    sources: str

    def to_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "file": self.file,
            "family": self.family,
            "old_hash": self.old_hash,
            "sha256": self.sha256,
            "autov2": self.autov2,
            "note": self.note,
            "sources": self.sources,
        }


@dataclass(frozen=True)
class ModelMatch:
    """A known model a hash points at, and how."""

    model: KnownModel
    via: str  # old_hash | autov2 | sha256 | sha256_prefix

    @property
    def certain(self) -> bool:
        """False for an old-hash match: that hash collides by construction."""
        return self.via != OLD_HASH


def normalise_hash(text: str) -> str | None:
    """Lower-case hex without brackets or spaces, or None when ``text`` is not a hash at all."""
    value = text.strip().strip("[]").strip().lower()
    return value if len(value) >= MIN_PREFIX and _HEX.fullmatch(value) else None


def hash_match(
    text: str, *, old_hash: str | None, autov2: str | None, sha256: str | None
) -> str | None:
    """How ``text`` identifies a model with these hashes (see the module's rule), or None."""
    value = normalise_hash(text)
    if value is None:
        return None
    sha = sha256.lower() if sha256 else None
    short = (autov2 or (sha[:10] if sha else "")).lower() or None
    if len(value) == 8:
        return OLD_HASH if old_hash and old_hash.lower() == value else None
    if len(value) == 10:
        return AUTOV2 if value == short else None
    if len(value) == 64:
        return SHA256 if value == sha else None
    return SHA256_PREFIX if sha and sha.startswith(value) else None


def _blank(value: str) -> str | None:
    value = value.strip()
    return value or None


@cache
def known_models() -> tuple[KnownModel, ...]:
    """Every row of the shipped table, in file order."""
    text = resources.files("tireg.checkpoints").joinpath("known_models.csv").read_text("utf-8")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        sha = _blank(row["sha256"])
        rows.append(
            KnownModel(
                name=row["name"].strip(),
                file=_blank(row["file"]),
                family=row["family"].strip(),
                old_hash=_blank(row["old_hash"]),
                sha256=sha,
                autov2=_blank(row["autov2"]) or (sha[:10] if sha else None),
                note=_blank(row["note"]),
                sources=row["sources"].strip(),
            )
        )
    return tuple(rows)


def lookup_hash(text: str) -> list[ModelMatch]:
    """Known models ``text`` (8/10/64 hex or a SHA-256 prefix) names; several for a collision.

    Example: ``lookup_hash("7460A6FA")[0].model.name == "Stable Diffusion 1.4"``."""
    matches = []
    for model in known_models():
        via = hash_match(text, old_hash=model.old_hash, autov2=model.autov2, sha256=model.sha256)
        if via is not None:
            matches.append(ModelMatch(model, via))
    return matches


def lookup_name(text: str) -> list[KnownModel]:
    """Known models whose name or file name is ``text`` (ignoring case), else contains it."""
    wanted = text.strip().lower()
    if not wanted:
        return []
    exact = [m for m in known_models() if wanted in (m.name.lower(), (m.file or "").lower())]
    if exact:
        return exact
    return [
        m for m in known_models() if wanted in m.name.lower() or wanted in (m.file or "").lower()
    ]


def describe_embedding(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`tireg.converters.describe` plus the known models the trained-on hash names.

    A1111 records only a hash (``sd_checkpoint``) and a file name users rename freely, so
    ``trained_on.known`` lists ``{"name", "certain"}`` for each shipped model the hash matches
    (an 8-hex old hash is never certain: it collides by construction).
    """
    from tireg.converters import describe  # numpy and the readers, only when describing a file

    record = describe(path)
    trained = record.get("trained_on")
    if trained and trained.get("hash"):
        trained["known"] = [
            {"name": match.model.name, "certain": match.certain}
            for match in lookup_hash(trained["hash"])
        ]
    return record
