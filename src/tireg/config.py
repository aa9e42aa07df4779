"""Where tireg keeps its state, and which environment variables move it.

``TIREG_HOME`` moves everything (catalogue, content store, caches); without it tireg uses the
platform's user data directory. ``TIREG_DATABASE_URL`` points the catalogue at any SQLAlchemy URL
(a team's PostgreSQL server); ``TIREG_STORE`` moves the content store alone, so the machines
writing that catalogue can share one store folder (a network mount) while each keeps its caches.
``TIREG_OFFLINE`` (or huggingface_hub's ``HF_HUB_OFFLINE``) forbids network access.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

_TRUE = {"1", "true", "yes", "on"}


def home() -> Path:
    """The directory holding all of tireg's state."""
    env = os.environ.get("TIREG_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("tireg", appauthor=False))


def store_dir() -> Path:
    """The content-addressed store of internal-format embedding files: ``TIREG_STORE``, else
    ``store`` under home. Every machine sharing a catalogue must see the same store."""
    env = os.environ.get("TIREG_STORE")
    if env:
        return Path(env).expanduser()
    return home() / "store"


def cache_dir() -> Path:
    """Regenerable caches (hashes, downloads in flight)."""
    return home() / "cache"


def database_url(override: str | None = None) -> str:
    """The catalogue URL: ``--db``, then ``TIREG_DATABASE_URL``, then SQLite in home."""
    if override:
        return override
    env = os.environ.get("TIREG_DATABASE_URL")
    if env:
        return env
    return f"sqlite:///{home() / 'catalogue.sqlite'}"


def offline() -> bool:
    """True when no network access is allowed (``TIREG_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("TIREG_OFFLINE", "HF_HUB_OFFLINE")
    )
