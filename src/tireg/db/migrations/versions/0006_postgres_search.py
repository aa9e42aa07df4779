"""0006: PostgreSQL catalogues get a ranked search index, and checkpoint sizes past 2 GiB.

Why: on PostgreSQL search fell back to an unranked ``LIKE`` scan, since FTS5 is SQLite's. The
twin built here is a plain table ``embedding_search`` (one row per embedding, ``id =
embeddings.id``) holding the same five texts as the FTS5 table, plus

* ``words``, a ``tsvector`` whose lexemes carry a weight per column (name A, triggers B, tags C,
  description and sources D), under a GIN index: word and prefix matches ranked by
  ``ts_rank_cd``, as FTS5 ranks by BM25;
* ``infix``, name, triggers and tags in one text under a ``pg_trgm`` GIN index: any substring of
  three or more characters, in any script, as FTS5's trigram twin (migration 0005).

``pg_trgm`` ships with PostgreSQL and is a trusted extension, so the catalogue's owner may create
it. :mod:`tireg.registry.search_index` keeps the rows in step; the foreign key only makes sure a
deleted embedding never leaves a row behind. Rows of an existing catalogue are filled from what
SQL can see (name, description, tags); ``tireg doctor --repair`` adds the triggers and sources.

``checkpoints.size`` was a 32-bit ``INTEGER`` on PostgreSQL, too small for the 2-7 GB
checkpoints people have; SQLite's integers are 64-bit already, so only PostgreSQL changes.

This file is history: it must never import the models, which will move on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.alter_column("checkpoints", "size", type_=sa.BigInteger(), existing_nullable=True)
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        "CREATE TABLE embedding_search ("
        " id integer PRIMARY KEY REFERENCES embeddings (id) ON DELETE CASCADE,"
        " name text NOT NULL, triggers text NOT NULL, description text NOT NULL,"
        " tags text NOT NULL, sources text NOT NULL,"
        " words tsvector NOT NULL, infix text NOT NULL)"
    )
    op.execute("CREATE INDEX embedding_search_words ON embedding_search USING gin (words)")
    op.execute(
        "CREATE INDEX embedding_search_infix ON embedding_search USING gin (infix gin_trgm_ops)"
    )
    op.execute(
        "INSERT INTO embedding_search"
        " (id, name, triggers, description, tags, sources, words, infix)"
        " SELECT e.id, e.name, e.name, coalesce(e.description, ''), coalesce(t.tags, ''), '',"
        "  setweight(to_tsvector('simple', lower(e.name)), 'A')"
        "  || setweight(to_tsvector('simple', lower(coalesce(t.tags, ''))), 'C')"
        "  || setweight(to_tsvector('simple', lower(coalesce(e.description, ''))), 'D'),"
        "  e.name || E'\\n' || coalesce(t.tags, '')"
        " FROM embeddings e LEFT JOIN ("
        "  SELECT embedding_id, string_agg(tag, E'\\n' ORDER BY tag) AS tags"
        "  FROM tags GROUP BY embedding_id) t ON t.embedding_id = e.id"
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE embedding_search")
    op.alter_column("checkpoints", "size", type_=sa.Integer(), existing_nullable=True)
