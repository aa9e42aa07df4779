"""0003: validation runs, their models and their images (``tireg validate``).

Why: an embedding is worth keeping only if it works on the model a user runs, and the strongest
evidence of that is a picture rendered on that very model. ``tireg validate`` renders a grid
(a row without any embedding, a row per embedding, per model) and records here what it did, so
``tireg show`` can point at the grid, ``tireg validations`` can list runs, and ``tireg check``
can rank "validated on this model" above every other kind of evidence:

* ``validations``: one row per run: its settings (JSON, exactly what went into the infotext),
  seeds, the grid file and its sha256, the output folder, the time taken, tireg's version;
* ``validation_models``: the checkpoints of a run with every hash that names them (the SHA-256
  for caches and exact matches, AutoV2 and the old A1111 hash for what UIs show);
* ``validation_images``: every single image with its sha256, seed, prompt, model and embedding.
  ``embedding_id`` is set null when the embedding is removed from the catalogue, but the
  vectors hash and prompt word stay, so the record keeps saying what was rendered. A null
  ``embedding_vectors_sha256`` marks the row rendered without any embedding.

This file is history: it must never import the models, which will move on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "validations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("seeds", sa.Text(), nullable=False),
        sa.Column("out_dir", sa.String(), nullable=False),
        sa.Column("grid_path", sa.String(), nullable=False),
        sa.Column("grid_sha256", sa.String(length=64), nullable=False),
        sa.Column("tireg_version", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "validation_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("validation_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=True),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("autov2", sa.String(length=10), nullable=True),
        sa.Column("old_hash", sa.String(length=8), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["validation_id"], ["validations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_validation_models_validation_id", "validation_models", ["validation_id"])
    op.create_index("ix_validation_models_sha256", "validation_models", ["sha256"])
    op.create_table(
        "validation_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("validation_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("embedding_id", sa.Integer(), nullable=True),
        sa.Column("embedding_vectors_sha256", sa.String(length=64), nullable=True),
        sa.Column("prompt_word", sa.String(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["validation_id"], ["validations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["validation_models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["embedding_id"], ["embeddings.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_validation_images_validation_id", "validation_images", ["validation_id"])
    op.create_index("ix_validation_images_model_id", "validation_images", ["model_id"])
    op.create_index("ix_validation_images_embedding_id", "validation_images", ["embedding_id"])


def downgrade() -> None:
    op.drop_table("validation_images")
    op.drop_table("validation_models")
    op.drop_table("validations")
