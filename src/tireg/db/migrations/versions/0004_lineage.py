"""0004: lineage, the embeddings made from other embeddings (``tireg train`` first).

Why: a training run saves an embedding every few hundred steps, and those saves are versions of
one thing, not strangers that happen to share a name. ``lineage`` links each entry to the run
(or operation) that made it and to the entry it came from, so ``tireg show`` can list every
version of a run with its step and loss, and the settings that produced it are kept beside it.

One row per made embedding: ``run_id`` groups the entries of one run; ``operation`` says what
made it (``train`` now; mixing, merging and trimming later reuse the same table);
``parent_id`` is the entry it was made from (the previous save of the run), set null when that
entry is removed; ``step`` and ``loss`` where the operation has them; ``settings`` is JSON.

This file is history: it must never import the models, which will move on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedding_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("settings", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["embedding_id"], ["embeddings.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["embeddings.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("embedding_id", "run_id"),
    )
    op.create_index("ix_lineage_run_id", "lineage", ["run_id"])
    op.create_index("ix_lineage_embedding_id", "lineage", ["embedding_id"])


def downgrade() -> None:
    op.drop_index("ix_lineage_embedding_id", table_name="lineage")
    op.drop_index("ix_lineage_run_id", table_name="lineage")
    op.drop_table("lineage")
