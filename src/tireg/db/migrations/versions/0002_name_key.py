"""0002: an indexed ``embeddings.name_key``.

Why: naming an embedding (``tireg show NAME``, ``install NAME``...) compares names case-folded
and without ``<...>`` brackets. Without a column holding that form, each lookup went through the
FTS index and then filtered in Python; with common words in a name that cost tens of
milliseconds at 100,000 embeddings. An indexed key makes it one B-tree lookup.

Existing rows are filled here. The folding rule is copied, not imported, because a migration is
history and must not change when :func:`tireg.db.schema.name_key` does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _fold(name: str) -> str:
    folded = name.strip().casefold()
    if len(folded) > 2 and folded[0] == "<" and folded[-1] == ">":
        return folded[1:-1]
    return folded


def upgrade() -> None:
    op.add_column(
        "embeddings", sa.Column("name_key", sa.String(), server_default="", nullable=False)
    )
    op.create_index("ix_embeddings_name_key", "embeddings", ["name_key"])
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, name FROM embeddings")).all()
    if rows:
        bind.execute(
            sa.text("UPDATE embeddings SET name_key = :key WHERE id = :id"),
            [{"key": _fold(name), "id": row_id} for row_id, name in rows],
        )


def downgrade() -> None:
    op.drop_index("ix_embeddings_name_key", table_name="embeddings")
    op.drop_column("embeddings", "name_key")
