"""A transaction the server rolls back on a conflict runs again (``db/session.py``).

Against the real throwaway PostgreSQL: a real serialization failure (two sessions at REPEATABLE
READ updating one row, the second one's snapshot older than the first one's commit) fails the
first run and the retry writes; server-raised SQLSTATEs 40001 and 40P01 are retried, nested
retrying calls re-run from the outermost, and a conflict that never clears is one line.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tireg.db import CatalogueError, open_catalogue
from tireg.db.schema import SourceRow
from tireg.db.session import (
    CONFLICT_ATTEMPTS,
    Catalogue,
    ConflictError,
    retried,
    retry_conflicts,
)

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
def catalogue(backend: str) -> Catalogue:
    cat = open_catalogue()
    assert not cat.is_sqlite
    with cat.transaction() as session:
        session.add(SourceRow(kind="local", locator="/row", status="fetched", title="first"))
    yield cat
    cat.close()


def _raw(catalogue: Catalogue, *, autocommit: bool) -> psycopg.Connection:
    """A session on the same database outside tireg."""
    url = catalogue.engine.url
    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=autocommit
    )


def _title(catalogue: Catalogue) -> str | None:
    with catalogue.reading() as session:
        return session.scalar(select(SourceRow.title))


def _wait_for_lock_wait(watcher: psycopg.Connection, database: str) -> None:
    """Until a session of ``database`` waits for a row lock (bounded)."""
    for _ in range(600):
        waiting = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            [database],
        ).fetchone()
        if waiting is not None and waiting[0] > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the tireg writer never waited for the row lock")


def _raise_sqlstate(session: Session, sqlstate: str) -> None:
    session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '{sqlstate}'; END $$"))


def test_a_real_serialization_failure_is_retried_and_the_write_lands(
    catalogue: Catalogue,
) -> None:
    """Two REPEATABLE READ sessions update one row: the second waits for the first's row lock,
    and when the first commits the server fails the second with 40001 (its snapshot predates
    that commit). The retry runs the whole unit again on a fresh snapshot and writes."""
    other = _raw(catalogue, autocommit=False)
    watcher = _raw(catalogue, autocommit=True)
    failures: list[str | None] = []
    runs: list[str | None] = []

    def work(session: Session) -> None:
        runs.append(session.scalar(select(SourceRow.title)))  # the snapshot starts here
        if len(runs) == 1:
            blocked.set()
        try:
            session.execute(text("UPDATE sources SET title = 'tireg' WHERE locator = '/row'"))
        except DBAPIError as exc:
            failures.append(getattr(exc.orig, "sqlstate", None))
            raise

    blocked = threading.Event()
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            catalogue.write(work, isolation="REPEATABLE READ")
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    try:
        other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        other.execute("UPDATE sources SET title = 'other' WHERE locator = '/row'")
        writer = threading.Thread(target=write)
        writer.start()
        assert blocked.wait(30)
        _wait_for_lock_wait(watcher, catalogue.engine.url.database or "")
        other.commit()
        writer.join(60)
        assert outcome == [None]
    finally:
        other.close()
        watcher.close()
    assert failures == ["40001"]  # a real serialization failure, raised by the server
    assert runs == ["first", "other"]  # the second run read the other session's commit
    assert _title(catalogue) == "tireg"


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_conflicts_raised_by_the_server_are_retried(catalogue: Catalogue, sqlstate: str) -> None:
    runs = []

    def work(session: Session) -> int:
        runs.append(1)
        session.execute(text("UPDATE sources SET title = 'again' WHERE locator = '/row'"))
        if len(runs) < 3:
            _raise_sqlstate(session, sqlstate)
        return len(runs)

    assert catalogue.write(work) == 3
    assert _title(catalogue) == "again"


def test_a_conflict_that_never_clears_is_one_line_and_writes_nothing(
    catalogue: Catalogue,
) -> None:
    runs = []

    def work(session: Session) -> None:
        runs.append(1)
        session.execute(text("UPDATE sources SET title = 'lost' WHERE locator = '/row'"))
        _raise_sqlstate(session, "40001")

    with pytest.raises(ConflictError) as err:
        catalogue.write(work)
    assert len(runs) == CONFLICT_ATTEMPTS
    line = str(err.value)
    assert f"{CONFLICT_ATTEMPTS} times running" in line and "nothing was written" in line
    assert "\n" not in line and isinstance(err.value, CatalogueError)
    assert _title(catalogue) == "first"


def test_only_the_outermost_retrying_call_runs_again(catalogue: Catalogue) -> None:
    """A conflict in an inner unit re-runs the outer one whole: what the inner one wrote may
    depend on what the outer one read."""
    outer_runs, inner_runs = [], []

    @retried
    def inner() -> None:
        inner_runs.append(1)
        with catalogue.transaction() as session:
            if len(inner_runs) == 1:
                _raise_sqlstate(session, "40P01")

    def outer() -> None:
        outer_runs.append(1)
        with catalogue.transaction() as session:
            session.execute(text("UPDATE sources SET title = 'outer' WHERE locator = '/row'"))
        inner()

    retry_conflicts(outer)
    assert (len(outer_runs), len(inner_runs)) == (2, 2)
    assert _title(catalogue) == "outer"
