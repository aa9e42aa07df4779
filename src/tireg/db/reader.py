"""A SQLite catalogue read through Python's ``sqlite3`` alone, and what opening one needs that
SQLAlchemy does not (shared with :mod:`tireg.db.session`).

Why a second way in: importing SQLAlchemy costs more CPU than all the rest of ``tireg list``
(about 730 million instructions of the 2,400 ``list`` took with the ORM; ``--help`` takes 840),
so the commands that only read, and run far more often than any other, cannot reach a
0.3-second start through it. :func:`connect_for_reading` opens the common case, an existing
SQLite file already at this tireg's schema revision, with the same per-connection settings
:mod:`tireg.db.session` applies (they are defined here, once, and both use them) and in one
read transaction, so every statement sees one snapshot, as ``Catalogue.reading()`` does.
Anything else (another backend, a URL with options, a missing file, a catalogue to migrate or
from a newer tireg) returns ``None``: the caller then opens it through
:func:`tireg.db.session.open_catalogue`, which creates, migrates, refuses or reports exactly as
before.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: seconds SQLite itself waits for a lock before reporting "database is locked"
BUSY_TIMEOUT_S = 30.0
#: further attempts at BEGIN IMMEDIATE after SQLite's own wait ran out
LOCK_RETRIES = 5

#: the only URL form read here: a SQLite file by path, as :func:`tireg.config.database_url`
#: writes it. Anything with options (``?mode=``, ``file:`` URIs), escapes (``%``) or another
#: driver goes through SQLAlchemy's URL parser in :mod:`tireg.db.session`.
_PLAIN_SQLITE = "sqlite:///"

#: runs one SQL statement with named parameters (``:name``) and returns its rows: how code that
#: must also run without SQLAlchemy (:mod:`tireg.registry.listing`) queries either connection
Execute = Callable[[str, Mapping[str, Any]], Sequence[Sequence[Any]]]


def head_revision() -> str:
    """The newest migration this tireg ships.

    Migrations are numbered and a file's revision id is its number (``0001_initial.py`` is
    revision ``0001``; a test holds every file to it), so the head is known without importing
    Alembic, which would add a third of a second to every command that opens the catalogue.
    """
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))


def unwritable(path: Path) -> bool:
    """Whether tireg may not write the catalogue file ``path`` or its folder (then it is opened
    read-only: :func:`read_only_uri`)."""
    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


def read_only_uri(path: Path) -> str:
    """The ``file:`` URI that opens ``path`` read-only (sqlite3's ``uri=True``).

    SQLite can read a WAL database read-only when its -wal and -shm files exist or can be
    created; failing both, ``immutable`` (sqlite.org "URI filenames") reads the file alone,
    which is exact because a cleanly closed catalogue has no -wal left to miss.
    """
    path = path.expanduser().resolve()
    leftovers = any(Path(f"{path}{end}").exists() for end in ("-wal", "-shm"))
    immutable = "" if leftovers or os.access(path.parent, os.W_OK) else "&immutable=1"
    return f"file:{quote(str(path))}?mode=ro{immutable}"


def on_connect(dbapi_connection: sqlite3.Connection) -> None:
    """Per-connection settings; WAL is persistent in the file, the others are not."""
    dbapi_connection.isolation_level = None  # BEGIN is emitted by hand (session.py: why)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        with_lock_retries(lambda: cursor.execute("PRAGMA journal_mode = WAL"))
    finally:
        cursor.close()


def on_read_only_connect(dbapi_connection: sqlite3.Connection) -> None:
    """Settings for a read-only catalogue: no journal-mode change, which would be a write."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA query_only = ON")


def is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


def with_lock_retries(
    action: Callable[[], Any], errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
) -> None:
    """Run ``action``, retrying with jittered backoff while another process holds the lock.

    SQLite's busy handler already waited :data:`BUSY_TIMEOUT_S` before each failure, so the
    retries only matter for a writer that holds the lock unusually long; they are bounded.
    ``errors`` are the exceptions a lock failure arrives as (SQLAlchemy wraps sqlite3's).
    """
    for attempt in range(LOCK_RETRIES + 1):
        try:
            action()
            return
        except errors as exc:
            if attempt == LOCK_RETRIES or not is_lock_error(exc):
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))  # noqa: S311


def executor(conn: sqlite3.Connection) -> Execute:
    """:data:`Execute` on a sqlite3 connection (``tireg.db.session.executor``: on a session)."""
    return lambda statement, params: conn.execute(statement, params).fetchall()


def plain_sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL without options or escapes; ``None`` for any other
    URL (those are read through SQLAlchemy, whose parser knows every form)."""
    if not url.startswith(_PLAIN_SQLITE):
        return None
    database = url[len(_PLAIN_SQLITE) :]
    if not database or database == ":memory:" or any(c in database for c in "?#%"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database).expanduser()


def connect_for_reading(url: str) -> sqlite3.Connection | None:
    """A connection to the SQLite catalogue at ``url`` inside one read transaction (roll it
    back, or close it, when done), or ``None`` where :func:`tireg.db.session.open_catalogue`
    must open it (see the module docstring).

    Errors are never reported from here: a catalogue that cannot be read this way is read
    through the session, which says what is wrong in the words it always has.
    """
    path = plain_sqlite_file(url)
    if path is None or not path.is_file():
        return None
    read_only = unwritable(path)
    try:
        if read_only:
            conn = sqlite3.connect(
                read_only_uri(path), uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
            on_read_only_connect(conn)
        else:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            on_connect(conn)
    except sqlite3.Error:
        return None
    try:
        with_lock_retries(lambda: conn.execute("BEGIN"))
        (stamped,) = conn.execute("SELECT version_num FROM alembic_version").fetchone() or (None,)
    except sqlite3.Error:
        stamped = None  # no alembic_version yet: a new catalogue, which the session migrates
    if stamped != head_revision():
        conn.close()
        return None
    return conn
