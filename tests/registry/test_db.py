"""The catalogue database: migrations equal the models, pragmas, transactions, newer catalogues.

Tests about SQLite itself are ``sqlite_only``; tests/postgres/ has their PostgreSQL twins."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text

from tireg.db import CatalogueError, head_revision, open_catalogue
from tireg.db.schema import Base, EmbeddingRow, SourceRow
from tireg.db.session import include_name


@pytest.mark.sqlite_only
def test_default_catalogue_lives_under_tireg_home(tireg_home: Path) -> None:
    with open_catalogue() as cat:
        assert cat.is_sqlite
    assert (tireg_home / "catalogue.sqlite").is_file()


@pytest.mark.sqlite_only
def test_db_url_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "a" / "explicit.sqlite"
    with open_catalogue(f"sqlite:///{explicit}"):
        pass
    assert explicit.is_file()
    env = tmp_path / "b" / "env.sqlite"
    monkeypatch.setenv("TIREG_DATABASE_URL", f"sqlite:///{env}")
    with open_catalogue():
        pass
    assert env.is_file()


def test_migrated_schema_equals_the_models() -> None:
    with open_catalogue() as cat, cat.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == head_revision()


@pytest.mark.sqlite_only
def test_fts_table_exists() -> None:
    with open_catalogue() as cat, cat.reading() as session:
        names = session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table'")).all()
    assert "embedding_search" in names


@pytest.mark.sqlite_only
def test_pragmas_on_every_connection() -> None:
    with open_catalogue() as cat, cat.reading() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert session.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000


def _source(locator: str) -> SourceRow:
    return SourceRow(kind="local", locator=locator, status="fetched")


def test_transaction_commits_or_rolls_back_as_one() -> None:
    with open_catalogue() as cat:
        with cat.transaction() as session:
            session.add(_source("/a"))
        with pytest.raises(RuntimeError), cat.transaction() as session:
            session.add(_source("/b"))
            session.flush()
            raise RuntimeError("boom")
        with cat.reading() as session:
            assert session.scalars(select(SourceRow.locator)).all() == ["/a"]


def test_foreign_keys_are_enforced() -> None:
    from sqlalchemy.exc import IntegrityError

    with open_catalogue() as cat:
        with pytest.raises(IntegrityError), cat.transaction() as session:
            session.execute(text("INSERT INTO tags (embedding_id, tag) VALUES (4242, 'x')"))
        with cat.reading() as session:
            assert session.scalar(select(func.count()).select_from(EmbeddingRow)) == 0


@pytest.mark.sqlite_only
def test_write_transactions_take_the_lock_at_begin(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    with open_catalogue(f"sqlite:///{db}") as cat, cat.transaction() as session:
        session.execute(text("SELECT 1"))
        other = sqlite3.connect(db, timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            # readers are never blocked (WAL)
            assert other.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
        finally:
            other.close()


@pytest.mark.sqlite_only
def test_catalogue_from_a_newer_tireg_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite"
    with open_catalogue(f"sqlite:///{db}"):
        pass
    raw = sqlite3.connect(db)
    raw.execute("UPDATE alembic_version SET version_num = '9999'")
    raw.commit()
    raw.close()
    with pytest.raises(CatalogueError) as err:
        open_catalogue(f"sqlite:///{db}")
    line = str(err.value)
    assert "newer tireg (revision 9999)" in line and "upgrade tireg" in line
    assert "\n" not in line


@pytest.mark.sqlite_only
def test_unwritable_catalogue_folder_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CatalogueError) as err:
        open_catalogue(f"sqlite:///{blocker}/sub/c.sqlite")
    assert "cannot create the catalogue's folder" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.sqlite_only
def test_migration_files_are_numbered_by_their_revision() -> None:
    from alembic.script import ScriptDirectory

    from tireg.db.session import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    for revision in script.walk_revisions():
        assert Path(revision.path).name.startswith(f"{revision.revision}_")
        assert (revision.module.__doc__ or "").strip(), f"{revision.path} must say why it exists"
    assert script.get_current_head() == head_revision()


@pytest.mark.sqlite_only
def test_upgrade_from_0001_fills_name_keys(tmp_path: Path) -> None:
    """A catalogue written at revision 0001 is migrated on open, its existing rows keyed."""
    from alembic import command
    from sqlalchemy import create_engine

    from tireg.db.session import alembic_config

    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(
            text(
                "INSERT INTO embeddings (vectors_sha256, name, family, num_vectors, widths, nsfw,"
                " store_path, created_at, updated_at) VALUES ('ab', '<Cat-Toy>', 'sd1', 1,"
                " 'clip_l:768', 0, 'ab/ab.safetensors', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()
    with open_catalogue(f"sqlite:///{path}") as catalogue, catalogue.reading() as session:
        row = session.scalars(select(EmbeddingRow)).one()
        assert (row.name, row.name_key) == ("<Cat-Toy>", "cat-toy")
        version = session.scalar(text("SELECT version_num FROM alembic_version"))
        assert version == head_revision()
