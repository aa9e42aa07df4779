"""0001: the first catalogue schema.

Why: creates every table of :mod:`tireg.db.schema` as it stood at tireg 0.1 (embeddings by vectors
hash, tags, sources, provenance, previews, checkpoints, compatibility facts, installs), plus
``embedding_search``, the FTS5 index over name, triggers, description, tags and sources.

The FTS table holds its own copy of the text (not external-content) because its columns aggregate
several tables; :mod:`tireg.registry.search_index` keeps the row whose rowid is ``embeddings.id``
in step, inside the same transaction as the change it reflects. ``prefix='2 3'`` makes short
prefix queries (``xxs*``) index lookups rather than scans.

This file is history: it must never import the models, which will move on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _embedding_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["embedding_id"], ["embeddings.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vectors_sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("num_vectors", sa.Integer(), nullable=False),
        sa.Column("widths", sa.String(), nullable=False),
        sa.Column("concept_type", sa.String(length=16), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("licence", sa.String(), nullable=True),
        sa.Column("nsfw", sa.Boolean(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("trained_on_hash", sa.String(length=64), nullable=True),
        sa.Column("trained_on_name", sa.String(), nullable=True),
        sa.Column("store_path", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vectors_sha256"),
    )
    op.create_index("ix_embeddings_family", "embeddings", ["family"])
    op.create_index("ix_embeddings_num_vectors", "embeddings", ["num_vectors"])

    op.create_table(
        "tags",
        sa.Column("embedding_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        _embedding_fk(),
        sa.PrimaryKeyConstraint("embedding_id", "tag"),
    )
    op.create_index("ix_tags_tag", "tags", ["tag"])

    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("locator", sa.String(), nullable=False),
        sa.Column("revision", sa.String(), nullable=True),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("trigger", sa.String(), nullable=True),
        sa.Column("concept_type", sa.String(length=16), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("licence", sa.String(), nullable=True),
        sa.Column("gated", sa.Boolean(), nullable=False),
        sa.Column("nsfw", sa.Boolean(), nullable=False),
        sa.Column("base_model_hint", sa.String(), nullable=True),
        sa.Column("preview_urls", sa.Text(), nullable=True),
        sa.Column("extras", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "locator"),
    )
    op.create_index("ix_sources_kind", "sources", ["kind"])

    op.create_table(
        "provenance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedding_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("location", sa.String(), nullable=False),
        sa.Column("original_format", sa.String(length=32), nullable=False),
        sa.Column("original_sha256", sa.String(length=64), nullable=False),
        sa.Column("name_in_file", sa.String(), nullable=False),
        sa.Column("revision", sa.String(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        _embedding_fk(),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("embedding_id", "original_sha256", "location"),
    )
    op.create_index("ix_provenance_embedding_id", "provenance", ["embedding_id"])
    op.create_index("ix_provenance_original_sha256", "provenance", ["original_sha256"])
    op.create_index("ix_provenance_source_id", "provenance", ["source_id"])

    op.create_table(
        "previews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedding_id", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        _embedding_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("embedding_id", "location"),
    )
    op.create_index("ix_previews_embedding_id", "previews", ["embedding_id"])

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=True),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("old_hash", sa.String(length=8), nullable=True),
        sa.Column("blake3", sa.String(length=64), nullable=True),
        sa.Column("crc32", sa.String(length=8), nullable=True),
        sa.Column("addnet_hash", sa.String(length=64), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_checkpoints_name", "checkpoints", ["name"])
    op.create_index("ix_checkpoints_old_hash", "checkpoints", ["old_hash"])
    op.create_index("ix_checkpoints_sha256", "checkpoints", ["sha256"])

    op.create_table(
        "compat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedding_id", sa.Integer(), nullable=False),
        sa.Column("relation", sa.String(length=24), nullable=False),
        sa.Column("model_ref", sa.String(), nullable=False),
        sa.Column("evidence", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _embedding_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("embedding_id", "relation", "model_ref", "evidence"),
    )
    op.create_index("ix_compat_embedding_id", "compat", ["embedding_id"])

    op.create_table(
        "installs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedding_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        _embedding_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_installs_embedding_id", "installs", ["embedding_id"])

    if op.get_context().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE embedding_search USING fts5("
            "name, triggers, description, tags, sources, "
            "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TABLE embedding_search")
    for table in ("installs", "compat", "checkpoints", "previews", "provenance", "sources", "tags"):
        op.drop_table(table)
    op.drop_table("embeddings")
