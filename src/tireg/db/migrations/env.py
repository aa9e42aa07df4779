"""Alembic's entry point, called by :func:`tireg.db.session._migrate`.

tireg runs migrations only through code, on a connection it has already opened inside a
``BEGIN IMMEDIATE`` transaction (so concurrent first opens migrate once); this file therefore
supports only that "online, given a connection" mode.
"""

from __future__ import annotations

from alembic import context

from tireg.db.schema import Base
from tireg.db.session import include_name


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("tireg's migrations run through tireg.db.open_catalogue()")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
