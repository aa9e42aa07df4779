"""0005: a trigram index beside the word index, for infix and CJK search.

Why: the word index (FTS5 ``unicode61``) splits text at spaces and punctuation, so it finds
whole words and word prefixes only. A CJK name has no spaces, and ``大猫板蓝根-100000`` is one
token to it: ``search 板蓝根`` found nothing, nor did ``search yuno`` find ``gasaiyuno``. FTS5's
``trigram`` tokenizer indexes every three-character window, so any substring of three or more
characters matches, in any script. It covers the columns people type from (name, triggers,
tags); descriptions stay word-indexed only, which keeps the index small.

Existing rows are copied from the word index, which holds the same texts.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE VIRTUAL TABLE embedding_search_trigram USING fts5("
        "name, triggers, tags, tokenize = 'trigram')"
    )
    op.execute(
        "INSERT INTO embedding_search_trigram (rowid, name, triggers, tags) "
        "SELECT rowid, name, triggers, tags FROM embedding_search"
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TABLE embedding_search_trigram")
