"""The catalogue's schema, in one place (SQLAlchemy 2.x declarative models).

Migrations under ``tireg/db/migrations`` create exactly these tables (plus the FTS5 index, which
SQLAlchemy cannot declare); change both together, as a new numbered migration.

Identity: an embedding *is* its vectors. ``Embedding.vectors_sha256`` (see
:meth:`tireg.converters.Embedding.vectors_sha256`) is unique, so the same vectors reached through
two files or sources are one row here with two :class:`Provenance` rows.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from tireg.db.keys import name_key as name_key  # the key columns' rule, named here too


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class EmbeddingRow(Base):
    """One embedding: its vectors live in the content store, its facts here."""

    __tablename__ = "embeddings"
    # listings go by name a page at a time (migration 0008 says why)
    __table_args__ = (
        Index("ix_embeddings_name_order", func.lower(text("name")), text("id")),
        Index("ix_embeddings_family_name_order", "family", func.lower(text("name")), text("id")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vectors_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String)  # the trigger typed in a prompt
    # name_key(name): what two colliding names share; indexed, so naming one is a B-tree lookup
    name_key: Mapped[str] = mapped_column(String, index=True, server_default="")
    family: Mapped[str] = mapped_column(String(16), index=True)  # sd1 | sd2 | sdxl | unknown
    num_vectors: Mapped[int] = mapped_column(Integer, index=True)
    widths: Mapped[str] = mapped_column(String)  # "clip_g:1280,clip_l:768"
    concept_type: Mapped[str | None] = mapped_column(String(16))  # object | style
    description: Mapped[str | None] = mapped_column(Text)
    licence: Mapped[str | None] = mapped_column(String)
    nsfw: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int | None] = mapped_column(Integer)
    trained_on_hash: Mapped[str | None] = mapped_column(String(64))
    trained_on_name: Mapped[str | None] = mapped_column(String)
    # relative to the store: "ab/abcd....safetensors"
    store_path: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    tags: Mapped[list[TagRow]] = relationship(
        back_populates="embedding", cascade="all, delete-orphan"
    )
    provenance: Mapped[list[ProvenanceRow]] = relationship(
        back_populates="embedding", cascade="all, delete-orphan"
    )
    previews: Mapped[list[PreviewRow]] = relationship(
        back_populates="embedding", cascade="all, delete-orphan"
    )
    compat: Mapped[list[CompatRow]] = relationship(
        back_populates="embedding", cascade="all, delete-orphan"
    )
    installs: Mapped[list[InstallRow]] = relationship(
        back_populates="embedding", cascade="all, delete-orphan"
    )
    prompt_words: Mapped[list[PromptWordRow]] = relationship(
        back_populates="embedding",
        cascade="all, delete-orphan",
        order_by="PromptWordRow.id",
        lazy="selectin",  # the name listings and messages show, wherever the row travels
    )

    @validates("name")
    def _keep_name_key(self, _key: str, name: str) -> str:
        self.name_key = name_key(name)
        return name


class TagRow(Base):
    __tablename__ = "tags"
    # tag filters compare case-folded (migration 0008 says why)
    __table_args__ = (Index("ix_tags_tag_lower", func.lower(text("tag"))),)

    embedding_id: Mapped[int] = mapped_column(
        ForeignKey("embeddings.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String, primary_key=True, index=True)

    embedding: Mapped[EmbeddingRow] = relationship(back_populates="tags")


class SourceRow(Base):
    """A place embeddings come from: a local folder, an HF repo, a git repo, a MEGA link, a URL,
    a Civitai model version, a rentry row. Remote sources may be known before anything is
    downloaded (``status = 'available'``)."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("kind", "locator"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(
        String(16), index=True
    )  # local|hf|git|mega|url|civitai|rentry
    locator: Mapped[str] = mapped_column(String)  # repo id, URL, path
    revision: Mapped[str | None] = mapped_column(String)  # commit sha, version id, etag
    title: Mapped[str | None] = mapped_column(String)
    trigger: Mapped[str | None] = mapped_column(String)
    concept_type: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    licence: Mapped[str | None] = mapped_column(String)
    gated: Mapped[bool] = mapped_column(Boolean, default=False)
    nsfw: Mapped[bool] = mapped_column(Boolean, default=False)
    base_model_hint: Mapped[str | None] = mapped_column(String)  # "Waifu Diffusion v1.2", "SD 1.5"
    preview_urls: Mapped[str | None] = mapped_column(Text)  # JSON list
    extras: Mapped[str | None] = mapped_column(Text)  # JSON object
    status: Mapped[str] = mapped_column(
        String(16), default="available"
    )  # available|fetched|manual|gone
    status_reason: Mapped[str | None] = mapped_column(String)
    synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    provenance: Mapped[list[ProvenanceRow]] = relationship(back_populates="source")


class ProvenanceRow(Base):
    """One file an embedding was read from: where, in which format, with which original hash."""

    __tablename__ = "provenance"
    __table_args__ = (UniqueConstraint("embedding_id", "original_sha256", "location"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_id: Mapped[int] = mapped_column(
        ForeignKey("embeddings.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL"), index=True
    )
    location: Mapped[str] = mapped_column(String)  # local path or URL of the file itself
    original_format: Mapped[str] = mapped_column(String(32))
    original_sha256: Mapped[str] = mapped_column(String(64), index=True)
    name_in_file: Mapped[str] = mapped_column(String)
    revision: Mapped[str | None] = mapped_column(String)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    embedding: Mapped[EmbeddingRow] = relationship(back_populates="provenance")
    source: Mapped[SourceRow | None] = relationship(back_populates="provenance")


class PromptWordRow(Base):
    """A word a prompt types for an embedding: the stem of a file it was read from.

    A1111 types a tensor file by its stem, not the name inside (see
    :mod:`tireg.prompt_words`), so ``bad_prompt_version2.pt`` holding the name
    ``bad_prompt`` is known to its users as ``bad_prompt_version2``. The first one recorded is
    what listings show; every one names the embedding (the naming rule in
    :mod:`tireg.registry.query`).
    """

    __tablename__ = "prompt_words"
    __table_args__ = (UniqueConstraint("embedding_id", "word_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_id: Mapped[int] = mapped_column(
        ForeignKey("embeddings.id", ondelete="CASCADE"), index=True
    )
    word: Mapped[str] = mapped_column(String)
    word_key: Mapped[str] = mapped_column(String, index=True)  # name_key(word)

    embedding: Mapped[EmbeddingRow] = relationship(back_populates="prompt_words")


class PreviewRow(Base):
    """A picture of what an embedding does (``.preview.png``, a concept image, a Civitai image)."""

    __tablename__ = "previews"
    __table_args__ = (UniqueConstraint("embedding_id", "location"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_id: Mapped[int] = mapped_column(
        ForeignKey("embeddings.id", ondelete="CASCADE"), index=True
    )
    location: Mapped[str] = mapped_column(String)  # stored path or URL
    sha256: Mapped[str | None] = mapped_column(String(64))

    embedding: Mapped[EmbeddingRow] = relationship(back_populates="previews")


class CheckpointRow(Base):
    """A checkpoint (model) tireg knows: the user's files and the shipped table of known models."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, index=True)
    path: Mapped[str | None] = mapped_column(String, unique=True)
    family: Mapped[str] = mapped_column(String(16))  # sd1|sd2|sdxl|sd3|flux|unknown...
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    old_hash: Mapped[str | None] = mapped_column(String(8), index=True)  # A1111 / AutoV1
    blake3: Mapped[str | None] = mapped_column(String(64))
    crc32: Mapped[str | None] = mapped_column(String(8))
    addnet_hash: Mapped[str | None] = mapped_column(String(64))
    # bytes; 64-bit on PostgreSQL (checkpoints exceed 2 GiB), SQLite's INTEGER is 64-bit already
    size: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    origin: Mapped[str] = mapped_column(String(16), default="user")  # user | known
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CompatRow(Base):
    """A compatibility fact, with its evidence: "trained on 7460a6fa (A1111 sd_checkpoint)"."""

    __tablename__ = "compat"
    __table_args__ = (UniqueConstraint("embedding_id", "relation", "model_ref", "evidence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_id: Mapped[int] = mapped_column(
        ForeignKey("embeddings.id", ondelete="CASCADE"), index=True
    )
    relation: Mapped[str] = mapped_column(
        String(24)
    )  # trained_on | base_model_hint | family | validated
    model_ref: Mapped[str] = mapped_column(
        String
    )  # a hash (8/10/64 hex), a model name, or a family
    evidence: Mapped[str] = mapped_column(String)  # "a1111 sd_checkpoint", "civitai baseModel", ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    embedding: Mapped[EmbeddingRow] = relationship(back_populates="compat")


class InstallRow(Base):
    """A file tireg wrote into a UI's embeddings folder (or any folder)."""

    __tablename__ = "installs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_id: Mapped[int] = mapped_column(
        ForeignKey("embeddings.id", ondelete="CASCADE"), index=True
    )
    target: Mapped[str] = mapped_column(String(16))  # a1111 | forge | comfyui | invokeai | dir
    format: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String, unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    installed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    embedding: Mapped[EmbeddingRow] = relationship(back_populates="installs")


class ValidationRow(Base):
    """One ``tireg validate`` run: the settings every image was rendered with, and its grid.

    ``settings`` is a JSON object (prompt, steps, sampler, size...) and ``seeds`` a JSON list,
    stored as text because they are read back whole, never queried by field."""

    __tablename__ = "validations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float] = mapped_column(Float)
    settings: Mapped[str] = mapped_column(Text)
    seeds: Mapped[str] = mapped_column(Text)
    out_dir: Mapped[str] = mapped_column(String)
    grid_path: Mapped[str] = mapped_column(String)
    grid_sha256: Mapped[str] = mapped_column(String(64))
    tireg_version: Mapped[str] = mapped_column(String)

    models: Mapped[list[ValidationModelRow]] = relationship(
        back_populates="validation",
        cascade="all, delete-orphan",
        order_by="ValidationModelRow.position",
    )
    images: Mapped[list[ValidationImageRow]] = relationship(
        back_populates="validation", cascade="all, delete-orphan", order_by="ValidationImageRow.id"
    )


class ValidationModelRow(Base):
    """A checkpoint one validation run rendered on, with every hash that names it."""

    __tablename__ = "validation_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    validation_id: Mapped[int] = mapped_column(
        ForeignKey("validations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # its row block in the grid, from 0
    name: Mapped[str] = mapped_column(String)
    path: Mapped[str | None] = mapped_column(String)
    family: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    autov2: Mapped[str | None] = mapped_column(String(10))
    old_hash: Mapped[str | None] = mapped_column(String(8))
    seconds: Mapped[float] = mapped_column(Float)  # loading and rendering on this model

    validation: Mapped[ValidationRow] = relationship(back_populates="models")


class ValidationImageRow(Base):
    """One image of a validation run. ``embedding_vectors_sha256`` is null for the row rendered
    without any embedding; ``embedding_id`` becomes null if the embedding is removed later."""

    __tablename__ = "validation_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    validation_id: Mapped[int] = mapped_column(
        ForeignKey("validations.id", ondelete="CASCADE"), index=True
    )
    model_id: Mapped[int] = mapped_column(
        ForeignKey("validation_models.id", ondelete="CASCADE"), index=True
    )
    embedding_id: Mapped[int | None] = mapped_column(
        ForeignKey("embeddings.id", ondelete="SET NULL"), index=True
    )
    embedding_vectors_sha256: Mapped[str | None] = mapped_column(String(64))
    prompt_word: Mapped[str | None] = mapped_column(String)
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String)
    sha256: Mapped[str] = mapped_column(String(64))
    cached: Mapped[bool] = mapped_column(Boolean, default=False)  # reused from the on-disk cache

    validation: Mapped[ValidationRow] = relationship(back_populates="images")
    model: Mapped[ValidationModelRow] = relationship()


class LineageRow(Base):
    """How an embedding was made from a run or from other embeddings: the entries of one
    training run (one ``run_id``) are its versions, each linked to the save before it."""

    __tablename__ = "lineage"
    __table_args__ = (UniqueConstraint("embedding_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_id: Mapped[int] = mapped_column(
        ForeignKey("embeddings.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("embeddings.id", ondelete="SET NULL"))
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    operation: Mapped[str] = mapped_column(String(16))  # train (later: mix | merge | trim)
    step: Mapped[int | None] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    settings: Mapped[str | None] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
