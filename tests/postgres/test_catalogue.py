"""PostgreSQL twins of the SQLite-only catalogue tests: the search index's shape, the writer
lock, isolation, errors as one line, and search answers only PostgreSQL's index gives."""

from __future__ import annotations

import threading

import psycopg
import pytest
from sqlalchemy import select, text

from tests.postgres.server import Server
from tests.registry.test_query import add, make
from tireg.db import CatalogueError, open_catalogue
from tireg.db.schema import CheckpointRow, SourceRow
from tireg.db.session import WRITER_LOCK_KEY, Catalogue
from tireg.registry import query, search_index, search_text, tags
from tireg.registry.search_postgres import ts_query, vector

pytestmark = pytest.mark.postgresql_only


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def _raw(catalogue: Catalogue) -> psycopg.Connection:
    """A second session on the same database, outside tireg."""
    url = catalogue.engine.url
    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
    )


def test_search_index_is_a_gin_tsvector_and_a_trigram_index(catalogue: Catalogue) -> None:
    assert not catalogue.is_sqlite
    with catalogue.reading() as session:
        indexes = dict(
            session.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"),
                {"t": "embedding_search"},
            ).all()
        )
        extensions = session.scalars(text("SELECT extname FROM pg_extension")).all()
    assert "USING gin (words)" in indexes["embedding_search_words"]
    assert "gin_trgm_ops" in indexes["embedding_search_infix"]
    assert "pg_trgm" in extensions


def test_writers_queue_on_the_lock_readers_do_not(catalogue: Catalogue) -> None:
    """The twin of SQLite's BEGIN IMMEDIATE: a write transaction holds the catalogue's advisory
    lock from its first statement, and readers still read."""
    other = _raw(catalogue)
    try:
        with catalogue.transaction() as session:
            session.execute(text("SELECT 1"))
            taken = other.execute("SELECT pg_try_advisory_lock(%s)", [WRITER_LOCK_KEY]).fetchone()
            assert taken == (False,)
            assert other.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
        taken = other.execute("SELECT pg_try_advisory_lock(%s)", [WRITER_LOCK_KEY]).fetchone()
        assert taken == (True,)
        other.execute("SELECT pg_advisory_unlock(%s)", [WRITER_LOCK_KEY])
    finally:
        other.close()


def test_isolation_levels(catalogue: Catalogue) -> None:
    with catalogue.transaction() as session:
        assert session.scalar(text("SHOW transaction_isolation")) == "read committed"
    with catalogue.reading() as session:
        assert session.scalar(text("SHOW transaction_isolation")) == "repeatable read"


def test_a_reading_session_sees_one_snapshot(catalogue: Catalogue) -> None:
    with catalogue.reading() as session:
        assert session.scalars(select(SourceRow.locator)).all() == []
        done = threading.Event()

        def write() -> None:
            with catalogue.transaction() as writer:
                writer.add(SourceRow(kind="local", locator="/new", status="fetched"))
            done.set()

        threading.Thread(target=write).start()
        assert done.wait(30)
        assert session.scalars(select(SourceRow.locator)).all() == []  # still its snapshot
    with catalogue.reading() as session:
        assert session.scalars(select(SourceRow.locator)).all() == ["/new"]


def test_a_writer_waits_for_the_lock_then_sees_the_earlier_commit(catalogue: Catalogue) -> None:
    """READ COMMITTED after the lock: what the previous writer committed is visible."""
    other = _raw(catalogue)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [WRITER_LOCK_KEY])
        seen: list[list[str]] = []

        def write() -> None:
            with catalogue.transaction() as session:
                seen.append(list(session.scalars(select(SourceRow.locator))))

        waiter = threading.Thread(target=write)
        waiter.start()
        other.execute(
            "INSERT INTO sources (kind, locator, gated, nsfw, status) "
            "VALUES ('local', '/before', false, false, 'fetched')"
        )
        other.execute("SELECT pg_advisory_unlock(%s)", [WRITER_LOCK_KEY])
        waiter.join(30)
        assert seen == [["/before"]]
    finally:
        other.close()


def test_checkpoints_past_2_gib_fit(catalogue: Catalogue) -> None:
    with catalogue.transaction() as session:
        session.add(CheckpointRow(name="sdxl", family="sdxl", size=6_938_078_334))
    with catalogue.reading() as session:
        assert session.scalar(select(CheckpointRow.size)) == 6_938_078_334


def test_unreachable_server_is_one_line() -> None:
    with pytest.raises(CatalogueError) as err:
        open_catalogue("postgresql+psycopg://nobody@127.0.0.1:1/none")
    line = str(err.value)
    assert "cannot reach the catalogue's database server" in line and "\n" not in line


def test_a_serialization_failure_is_one_line(catalogue: Catalogue) -> None:
    """Not something tireg's own writers raise (they queue), but a server or another program
    can; the user gets one line, and nothing was written."""
    with pytest.raises(CatalogueError) as err, catalogue.transaction() as session:
        session.add(SourceRow(kind="local", locator="/lost", status="fetched"))
        session.execute(text("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$"))
    assert "nothing was written" in str(err.value) and "\n" not in str(err.value)
    with catalogue.reading() as session:
        assert session.scalars(select(SourceRow.locator)).all() == []


def test_query_and_vector_are_built_from_the_same_tokens() -> None:
    assert ts_query("Cat-Toy  ÉCLAIR") == "('cat' <-> 'toy') & ('eclair':*)"
    assert ts_query("\"' :* & | ! <-> ()") is None  # no letters: nothing reaches tsquery
    assert ts_query("o'brien") == "('o' <-> 'brien':*)"
    typed = search_text.TYPED_COLUMNS  # name, triggers, tags: weights A, B, C only
    assert ts_query("cat toy", typed) == "('cat':ABC) & ('toy':ABC*)"
    doc = {"name": "cat-toy", "triggers": "cat-toy", "tags": "", "description": "a", "sources": ""}
    assert vector(doc) == "'cat':1A 'toy':2A 'cat':4B 'toy':5B 'a':7D"


def test_ranking_prefers_name_over_triggers_tags_and_description(catalogue: Catalogue) -> None:
    ids = {
        "name": add(catalogue, make("zephyr", 1)),
        "tags": add(catalogue, make("other-b", 2)),
        "description": add(catalogue, make("other-c", 3), hints={"description": "zephyr wind"}),
    }
    tags.tag(catalogue, "other-b", ["zephyr"])
    with catalogue.reading() as session:
        found = [s.id for s in query.search(session, "zephyr")]
        assert found == [ids["name"], ids["tags"], ids["description"]]
        # a word only in a description is found by the second, every-column pass
        assert [s.id for s in query.search(session, "wind")] == [ids["description"]]
        assert search_index.has_index(session)


def test_a_catalogue_from_0005_gets_its_index_and_doctor_completes_it(
    postgres_server: Server,
) -> None:
    """Migration 0006 fills the index from what SQL sees; ``doctor --repair`` adds the rest."""
    from alembic import command
    from sqlalchemy import create_engine

    from tireg.db.session import alembic_config
    from tireg.registry import doctor

    postgres_server.admin("CREATE DATABASE from_0005")
    url = postgres_server.url("from_0005")
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0005")
        connection.execute(
            text(
                "INSERT INTO embeddings (id, vectors_sha256, name, name_key, family, num_vectors,"
                " widths, nsfw, store_path, created_at, updated_at) VALUES (1, 'ab', 'Old-Cat',"
                " 'old-cat', 'sd1', 1, 'clip_l:768', false, 'ab/ab.safetensors', now(), now())"
            )
        )
        connection.execute(text("INSERT INTO tags (embedding_id, tag) VALUES (1, 'furry')"))
        connection.execute(
            text(
                "INSERT INTO provenance (embedding_id, location, original_format, original_sha256,"
                " name_in_file, imported_at) VALUES (1, '/x/kitten-v2.pt', 'a1111-pt', 'cd',"
                " 'oc', now())"
            )
        )
    engine.dispose()
    with open_catalogue(url) as catalogue:
        with catalogue.reading() as session:
            assert [s.name for s in query.search(session, "furry")] == ["Old-Cat"]
            assert [s.name for s in query.search(session, "ld-c")] == ["Old-Cat"]  # infix
        assert doctor.examine(catalogue).index_drift == 1  # triggers and sources were unknown
        doctor.examine(catalogue, repair=True)
        assert doctor.examine(catalogue).index_drift == 0
        with catalogue.reading() as session:  # the file's stem is a trigger now
            assert [s.name for s in query.search(session, "kitten-v2")] == ["Old-Cat"]
    postgres_server.drop_database("from_0005")


def test_a_role_that_may_only_read_gets_one_line_when_writing(
    catalogue: Catalogue, postgres_server: Server
) -> None:
    add(catalogue, make("cat-toy", 1))
    database = catalogue.engine.url.database
    postgres_server.admin(
        "DO $$ BEGIN CREATE ROLE reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    other = _raw(catalogue)
    try:
        other.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
    finally:
        other.close()
    url = postgres_server.url(database or "").replace("postgres@", "reader@")
    with open_catalogue(url) as reader:
        with reader.reading() as session:
            assert [s.name for s in query.search(session, "cat")] == ["cat-toy"]
        with pytest.raises(CatalogueError) as err, reader.transaction() as session:
            session.add(SourceRow(kind="local", locator="/x", status="fetched"))
    line = str(err.value)
    assert "the database refused: permission denied" in line and "\n" not in line
