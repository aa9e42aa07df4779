"""Opening the catalogue: engine, SQLite pragmas, automatic migrations, and transactions.

Why it is built this way:

* **WAL, synchronous=NORMAL, a generous busy timeout.** Readers never block the writer and a
  killed process cannot corrupt the file; NORMAL is durable against process death (the case
  that matters for a CLI) at a fraction of FULL's fsyncs.
* **Every write transaction starts with ``BEGIN IMMEDIATE``.** A deferred transaction that reads
  first and writes later must *upgrade* its lock, and two such processes deadlock: SQLite then
  fails one of them at once with "database is locked", whatever the busy timeout. Taking the
  write lock at BEGIN makes concurrent writers queue instead. pysqlite's own transaction
  handling is switched off (``isolation_level = None``) so SQLAlchemy's BEGIN is the only one.
* **Migrations run when the catalogue is opened**, under that same write lock, so four processes
  opening a fresh catalogue at once migrate it exactly once. A catalogue stamped with a revision
  this tireg does not know was written by a newer tireg and is refused, never "downgraded".
* **A catalogue tireg cannot write is opened read-only** (a read-only mount, a shared drive, a
  file owned by someone else): SQLite's ``mode=ro`` URI, plus ``immutable=1`` when not even the
  folder is writable, since WAL readers otherwise need to create the ``-shm`` file. ``list``,
  ``search`` and ``show`` then work; a command that writes gets one line saying so.

On **PostgreSQL** (``TIREG_DATABASE_URL=postgresql+psycopg://...``) the same rules hold by other
means:

* **Writers take one transaction-scoped advisory lock first** (``pg_advisory_xact_lock``), the
  twin of ``BEGIN IMMEDIATE``: tireg's write transactions run one at a time across every machine,
  while readers are never blocked (MVCC). The code above the catalogue reads before it writes
  (the naming rule, "is this vectors hash known?", tag and provenance de-duplication, the search
  documents) and does file work inside its transactions (store files, installs into UI
  folders), so running writers one at a time keeps all of it exact with no upsert races, and
  four machines adding the same files queue rather than conflict and redo each other's work.
  The lock stays for that reason: without it those races would be unique-key violations at
  READ COMMITTED, or a storm of retried serialization failures at SERIALIZABLE.
* **Writers run at READ COMMITTED**: every statement takes a fresh snapshot, and the lock is the
  first statement, so each writer sees every write committed before it got the lock.
  REPEATABLE READ or SERIALIZABLE would take their snapshot as the lock statement starts, i.e.
  *before* the wait, and then fail with a serialization error after every wait.
* **Readers run at REPEATABLE READ**: one snapshot for the whole ``reading()`` session, as a
  SQLite read transaction gives; read-only transactions never fail to serialize.
* **A transaction the server rolls back on a conflict is run again** (SQLSTATE 40001
  serialization_failure, 40P01 deadlock_detected: a session outside tireg holding rows, a
  migration's locks, a writer that asked for a stronger isolation): :func:`retry_conflicts`
  re-runs the whole unit of work, reads included, in a fresh transaction, up to
  :data:`CONFLICT_ATTEMPTS` times with jittered exponential backoff, then gives one line saying
  nothing was written. Python cannot re-run the body of a ``with`` block, so the unit is a
  function: :meth:`Catalogue.write` takes one, and :func:`retried` wraps the registry functions
  that own a ``with catalogue.transaction()``; only the outermost retries, so a conflict in a
  nested one re-runs everything around it. Their bodies may be re-run, which their file work
  allows: store files and installs are written whole, atomically, and to the same bytes.
* The lock wait is bounded (:data:`LOCK_WAIT_S`, about what SQLite's busy timeout and retries
  add up to).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from tireg import config
from tireg.db.reader import (
    BUSY_TIMEOUT_S,
    LOCK_RETRIES,
    MIGRATIONS_DIR,
    Execute,
    head_revision,
    on_connect,
    on_read_only_connect,
    read_only_uri,
    unwritable,
    with_lock_retries,
)
from tireg.errors import TiregError

if TYPE_CHECKING:
    from alembic.config import Config

_IMMEDIATE = "tireg_begin_immediate"

#: PostgreSQL: the advisory lock every write transaction takes first ("tireg" in ASCII)
WRITER_LOCK_KEY = 0x7469726567
#: PostgreSQL's SQLSTATE for a privilege the role lacks
INSUFFICIENT_PRIVILEGE = "42501"
#: PostgreSQL: the longest a writer waits for that lock before giving up with one line
LOCK_WAIT_S = BUSY_TIMEOUT_S * (LOCK_RETRIES + 1)
#: PostgreSQL's SQLSTATEs for a transaction rolled back so that it can be run again:
#: serialization_failure and deadlock_detected
CONFLICTS = ("40001", "40P01")
#: runs of a unit of work that keeps conflicting before the conflict is reported
CONFLICT_ATTEMPTS = 6
#: the first backoff after a conflict (seconds), doubled per attempt up to CONFLICT_BACKOFF_MAX
CONFLICT_BACKOFF_S = 0.05
CONFLICT_BACKOFF_MAX_S = 2.0
#: per backend: execution options of write and read sessions (see the module docstring)
_WRITE_OPTIONS: dict[str, dict[str, Any]] = {"postgresql": {"isolation_level": "READ COMMITTED"}}
_READ_OPTIONS: dict[str, dict[str, Any]] = {"postgresql": {"isolation_level": "REPEATABLE READ"}}

#: the FTS5 search index; migrations create it (and SQLite its shadow tables) by hand, since
#: SQLAlchemy models cannot declare virtual tables
FTS_TABLE = "embedding_search"
#: its trigram twin over name, triggers and tags, for infix and CJK matches (the trigram migration)
TRIGRAM_TABLE = "embedding_search_trigram"


class CatalogueError(TiregError):
    """The catalogue cannot be opened or written: permissions, a full disk, a newer schema."""


class ConflictError(CatalogueError):
    """The server rolled a transaction back on a conflict with another session (see
    :data:`CONFLICTS`); nothing of it was written, and running it again may well succeed."""


_T = TypeVar("_T")
_P = ParamSpec("_P")
#: whether a retrying call is already running in this context (then only it retries)
_RETRYING: contextvars.ContextVar[bool] = contextvars.ContextVar("tireg_retrying", default=False)


def retry_conflicts(work: Callable[[], _T], attempts: int = CONFLICT_ATTEMPTS) -> _T:
    """Run ``work`` (one or more whole transactions), again while it fails on a conflict.

    Between runs it sleeps a jittered exponential backoff, so two sessions that conflicted do
    not collide again in step. Inside another retrying call it runs once: the outermost call
    re-runs everything, since what an inner transaction read may depend on the outer one.
    """
    if _RETRYING.get():
        return work()
    token = _RETRYING.set(True)
    try:
        for attempt in range(1, attempts):
            try:
                return work()
            except ConflictError:
                backoff = min(CONFLICT_BACKOFF_MAX_S, CONFLICT_BACKOFF_S * 2 ** (attempt - 1))
                time.sleep(backoff * (0.5 + random.random()))  # noqa: S311
        try:
            return work()
        except ConflictError as exc:
            raise ConflictError(
                f"another session changed the same catalogue rows {attempts} times running; "
                "nothing was written",
                path=exc.path,
                hint="run the same command again when the other writer is done",
            ) from exc
    finally:
        _RETRYING.reset(token)


def retried(function: Callable[_P, _T]) -> Callable[_P, _T]:
    """``function`` (which owns its catalogue transactions) run by :func:`retry_conflicts`."""

    @functools.wraps(function)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return retry_conflicts(lambda: function(*args, **kwargs))

    return run


class Catalogue:
    """An open catalogue: an engine plus the two ways to use it.

    :meth:`transaction` for anything that writes (one all-or-nothing transaction);
    :meth:`reading` for queries (a consistent snapshot that never blocks writers).
    """

    def __init__(self, url: str, engine: Engine, *, read_only: bool = False) -> None:
        self.url = url
        self.engine = engine
        #: opened through SQLite's ``mode=ro`` because the file or its folder is not writable
        self.read_only = read_only
        dialect = engine.dialect.name
        self._writer = engine.execution_options(
            **{_IMMEDIATE: True}, **_WRITE_OPTIONS.get(dialect, {})
        )
        reader = engine.execution_options(**_READ_OPTIONS.get(dialect, {}))
        self._write_sessions = sessionmaker(bind=self._writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(bind=reader, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session whose changes commit together on clean exit, or not at all.

        The transaction holds the write lock from its first statement (SQLite's ``BEGIN
        IMMEDIATE``, PostgreSQL's advisory lock), so concurrent writers, in this process or on
        other machines, wait for each other (a bounded time) instead of failing.
        """
        with self._translate_errors(), self._write_sessions() as session, session.begin():
            yield session

    def write(self, work: Callable[[Session], _T], *, isolation: str | None = None) -> _T:
        """``work`` in one transaction (as :meth:`transaction`), run again on a conflict.

        ``isolation`` (PostgreSQL) is for a writer that wants one snapshot for all it reads,
        ``"REPEATABLE READ"`` or ``"SERIALIZABLE"``: its snapshot is taken before it waits for
        the writers' lock, so a row another writer changed meanwhile fails it, and it runs again
        on a fresh one.
        """

        def once() -> _T:
            if isolation is None or self.is_sqlite:
                with self.transaction() as session:
                    return work(session)
            # from the engine itself: options chained on ``_writer`` would have its isolation
            # level applied after this one
            writer = self.engine.execution_options(**{_IMMEDIATE: True}, isolation_level=isolation)
            with self._translate_errors(), Session(writer) as session, session.begin():
                return work(session)

        return retry_conflicts(once)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """Yield a session for queries; it is rolled back on exit (nothing it does is kept)."""
        with self._translate_errors(), self._read_sessions() as session:
            yield session

    def close(self) -> None:
        """Release every pooled connection (the file stays as it is)."""
        self.engine.dispose()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalogue({make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise _catalogue_error(exc, self.url) from exc
        except ProgrammingError as exc:
            # a bug in a statement stays a traceback; a privilege the server's role lacks is the
            # user's to fix (a read-only role, pg_trgm the owner may not create)
            if getattr(exc.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise
            raise CatalogueError(
                f"the database refused: {_first_line(exc)}",
                path=_display(self.url),
                hint="read-only commands (list, search, show) work; ask the catalogue's owner "
                "for write access (or to run CREATE EXTENSION pg_trgm once)",
            ) from exc


def executor(session: Session) -> Execute:
    """:data:`~tireg.db.reader.Execute` in ``session``'s transaction: SQL text that also runs
    through sqlite3 alone (:mod:`tireg.registry.listing`) runs here on any backend."""
    return lambda statement, params: session.execute(text(statement), params).all()


def open_catalogue(url: str | None = None) -> Catalogue:
    """Open (creating and migrating if needed) the catalogue at ``url``.

    ``url`` is any SQLAlchemy URL; ``None`` means ``TIREG_DATABASE_URL`` or, failing that,
    ``catalogue.sqlite`` under tireg's home (see :func:`tireg.config.database_url`).
    """
    resolved = config.database_url(url)
    read_only = _read_only_file(resolved)
    engine = _make_engine(resolved, read_only=read_only is not None)
    catalogue = Catalogue(resolved, engine, read_only=read_only is not None)
    try:
        with catalogue._translate_errors():
            _migrate(catalogue)
    except BaseException:
        engine.dispose()
        raise
    return catalogue


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration, built in code (tireg ships no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


# -- engine ----------------------------------------------------------------------------------


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite catalogue URL (``None`` for other databases and in-memory ones)."""
    sa_url = make_url(url)
    database = sa_url.database or ""
    if sa_url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None  # a URI the user wrote: they chose its mode themselves
    return Path(database).expanduser()


def _read_only_file(url: str) -> Path | None:
    """The catalogue file when it exists but tireg may not write it (or its folder)."""
    path = _sqlite_file(url)
    if path is None or not path.is_file() or not unwritable(path):
        return None
    return path


def _make_engine(url: str, *, read_only: bool = False) -> Engine:
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "postgresql":
        engine = create_engine(sa_url, pool_pre_ping=True, isolation_level="READ COMMITTED")
        event.listen(engine, "begin", _on_postgres_begin)
        return engine
    if sa_url.get_backend_name() != "sqlite":
        return create_engine(sa_url, pool_pre_ping=True)
    database = sa_url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if read_only:
        sa_url = make_url(f"sqlite:///{read_only_uri(Path(database))}&uri=true")
    elif not in_memory:
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogueError(
                f"cannot create the catalogue's folder: {exc.strerror}",
                path=path.parent,
                hint="check permissions, or set TIREG_HOME / --db to a writable place",
            ) from exc
    engine = create_engine(
        sa_url,
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
        # one in-memory database must be one connection, or every session sees an empty one
        **({"poolclass": StaticPool} if in_memory else {}),
    )
    event.listen(engine, "connect", _on_sqlite_read_only if read_only else _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    """Per-connection settings (:func:`tireg.db.reader.on_connect`); SQLAlchemy emits BEGIN
    (see :func:`_on_sqlite_begin`)."""
    on_connect(dbapi_connection)


def _on_sqlite_read_only(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    """Settings for a read-only catalogue (:func:`tireg.db.reader.on_read_only_connect`)."""
    on_read_only_connect(dbapi_connection)


def _on_sqlite_begin(conn: Connection) -> None:
    """Emit BEGIN ourselves: IMMEDIATE for writers (see module docstring), deferred for readers."""
    statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN"
    _with_lock_retries(lambda: conn.exec_driver_sql(statement))


def _on_postgres_begin(conn: Connection) -> None:
    """Writers queue on the catalogue's advisory lock (see module docstring); readers do not."""
    if conn.get_execution_options().get(_IMMEDIATE):
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(LOCK_WAIT_S)}s'")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK_KEY})")


def _with_lock_retries(action: Callable[[], Any]) -> None:
    """:func:`tireg.db.reader.with_lock_retries` for a lock failure as sqlite3 or SQLAlchemy
    raises it."""
    with_lock_retries(action, (sqlite3.OperationalError, OperationalError))


# -- migrations ------------------------------------------------------------------------------


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic filter: compare everything but the FTS index, which the models do not declare."""
    return not (type_ == "table" and name is not None and name.startswith(FTS_TABLE))


def _stamped_revision(conn: Connection) -> str | None:
    """The revision the catalogue is at (``None`` for a new, empty one)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _migrate(catalogue: Catalogue) -> None:
    """Bring the schema to head; refuse a catalogue from a newer tireg."""
    head = head_revision()
    with catalogue.engine.connect() as conn:
        stamped = _stamped_revision(conn)
    if stamped == head:
        return  # the common case: no lock taken, Alembic not even imported
    if catalogue.read_only:
        raise CatalogueError(
            f"the catalogue is read-only and at revision {stamped}, this tireg needs {head}",
            path=_display(catalogue.url),
            hint="open it once with write access to upgrade it, or use the matching tireg",
        )
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    script = ScriptDirectory.from_config(alembic_config())
    # Under the write lock: another process may have migrated meanwhile, so look again.
    with catalogue._writer.connect() as conn, conn.begin():
        current = _stamped_revision(conn)
        if current == head:
            return
        if current is not None:
            try:
                script.get_revision(current)
            except CommandError as exc:
                raise CatalogueError(
                    f"catalogue was written by a newer tireg (revision {current}); upgrade tireg",
                    path=_display(catalogue.url),
                ) from exc
        command.upgrade(alembic_config(conn), "head")


# -- errors ----------------------------------------------------------------------------------


def _display(url: str) -> str:
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite" and sa_url.database:
        return sa_url.database
    return sa_url.render_as_string(hide_password=True)


def _first_line(exc: DBAPIError) -> str:
    """The driver's message without the detail lines PostgreSQL appends."""
    return (str(exc.orig if exc.orig is not None else exc).strip().splitlines() or [""])[0]


def _catalogue_error(exc: DBAPIError, url: str) -> CatalogueError:
    """One line the user can act on, for the operational failures worth naming."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    where = _display(url)
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""  # PostgreSQL's error code
    if sqlstate in CONFLICTS:
        return ConflictError(
            "another session changed the same catalogue rows at once; nothing was written",
            path=where,
            hint="run the same command again",
        )
    if sqlstate.startswith("08") or "connection failed" in text or "could not connect" in text:
        return CatalogueError(
            f"cannot reach the catalogue's database server: {_first_line(exc)}",
            path=where,
            hint="check that the server runs and TIREG_DATABASE_URL names it",
        )
    if "readonly" in text or "read-only" in text or "query_only" in text:
        return CatalogueError(
            "the catalogue is read-only here, so this command cannot change it",
            path=where,
            hint="read-only commands (list, search, show) work; run this one with write access",
        )
    if sqlstate == "55P03" or "locked" in text or "busy" in text:
        return CatalogueError(
            "the catalogue stayed locked by another tireg process",
            path=where,
            hint="wait for it to finish and try again",
        )
    if "disk is full" in text or "disk i/o error" in text:
        return CatalogueError(
            "cannot write the catalogue: disk full or file too large",
            path=where,
            hint="free some space and try again; nothing was half-written",
        )
    if "unable to open" in text or "permission" in text:
        return CatalogueError(
            f"cannot open the catalogue for writing: {_first_line(exc)}",
            path=where,
            hint="check permissions, or set TIREG_HOME / --db to a writable place",
        )
    return CatalogueError(f"catalogue error: {_first_line(exc)}", path=where)
