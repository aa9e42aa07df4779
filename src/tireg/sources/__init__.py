"""Clients for the places embeddings come from. Pure transport: list, download, verify.

Each source module turns a *spec* (``hf:owner/repo@rev``, a URL, a MEGA link, ``civitai:123``, a
git URL) into downloaded files plus what the source says about them (:class:`Fetched`). Sources
know nothing of the catalogue; :mod:`tireg.registry` records what they return. Base URLs come from
environment variables (``HF_ENDPOINT``, ``TIREG_MEGA_API``, ``TIREG_CIVITAI_API``) so tests can
point every source at servers on 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tireg.errors import TiregError

#: the most one preview picture from a source (Hub concept images, Civitai previews) may weigh
MAX_PREVIEW_BYTES = 16 * 1024 * 1024


class SourceError(TiregError):
    """A source failed: unreachable, gone, over quota, or served something that is not a file."""


@dataclass
class Fetched:
    """One downloaded, verified file and the facts its source gave about it."""

    path: Path  # the downloaded file (complete, verified, renamed into place)
    kind: str  # hf | git | mega | url | civitai | rentry
    locator: str  # what identifies the source: repo id, URL, model version
    location: str  # URL (or repo path) of this very file
    sha256: str
    revision: str | None = None  # commit sha, version id
    # source facts: trigger, concept_type, licence, description, base_model_hint, title, ...
    hints: dict[str, str] = field(default_factory=dict)
    previews: list[Path] = field(default_factory=list)  # downloaded preview images
