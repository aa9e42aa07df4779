"""A catalogue as an older tireg left it, for the tests of the migration that upgrades it.

Each such test downgrades a fresh catalogue to the revision before its migration, writes rows
in plain SQL (the ORM describes today's schema, not that revision's) and opens it again, which
upgrades it to head; then it asks what the migration should have filled in.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from alembic import command

from tireg.db import open_catalogue
from tireg.db.session import alembic_config


@contextlib.contextmanager
def catalogue_at(path: Path, revision: str, name: str) -> Iterator[sqlite3.Connection]:
    """A SQLite catalogue at ``path``, at ``revision``, holding embedding 1 (sd1, one vector)
    named ``name``; yields a plain connection in one transaction to add the rows a test needs.
    Open ``sqlite:///PATH`` afterwards to upgrade it."""
    with open_catalogue(f"sqlite:///{path}") as cat, cat.engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)
    raw = sqlite3.connect(path)
    try:
        with raw:
            raw.execute(
                "INSERT INTO embeddings (id, vectors_sha256, name, name_key, family, num_vectors,"
                " widths, nsfw, store_path, created_at, updated_at) VALUES (1, 'ab', ?, ?, 'sd1',"
                " 1, 'clip_l:768', 0, 'a/ab', '2024-01-01', '2024-01-01')",
                (name, name),
            )
            yield raw
    finally:
        raw.close()
