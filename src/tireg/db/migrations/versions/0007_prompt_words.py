"""0007: ``prompt_words``, the names users type: the stems of the files an embedding came from.

Why: A1111 types a ``.pt``/``.bin``/``.safetensors`` embedding by its file stem and ignores the
name stored inside (``modules/textual_inversion/textual_inversion.py``,
``EmbeddingDatabase.load_from_file``), so ``bad_prompt_version2.pt`` is typed
``bad_prompt_version2`` although it holds ``bad_prompt``. The catalogue knew only the name
inside, so ``show``/``install`` refused the word users know, and listings showed another. Each
row is one such word, indexed by its folded key (``name_key``) so the naming rule finds it with
one B-tree lookup, as it finds names (0002).

Existing rows are filled from the provenance of every file already imported. The rule is copied,
not imported, because a migration is history and must not change when the code does.
"""

from __future__ import annotations

from pathlib import PurePath

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TENSOR_SUFFIXES = {".pt", ".bin", ".safetensors"}
_GENERIC_STEMS = {"learned_embeds", "learned_embeds_2"}


def _fold(name: str) -> str:
    folded = name.strip().casefold()
    if len(folded) > 2 and folded[0] == "<" and folded[-1] == ">":
        return folded[1:-1]
    return folded


def _word(location: str) -> str | None:
    path = PurePath(location.split("?", 1)[0])
    stem = path.stem.strip()
    if path.suffix.lower() not in _TENSOR_SUFFIXES or not stem or stem in _GENERIC_STEMS:
        return None
    return stem


def upgrade() -> None:
    op.create_table(
        "prompt_words",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "embedding_id",
            sa.Integer(),
            sa.ForeignKey("embeddings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("word", sa.String(), nullable=False),
        sa.Column("word_key", sa.String(), nullable=False),
        sa.UniqueConstraint("embedding_id", "word_key"),
    )
    op.create_index("ix_prompt_words_embedding_id", "prompt_words", ["embedding_id"])
    op.create_index("ix_prompt_words_word_key", "prompt_words", ["word_key"])
    bind = op.get_bind()
    seen: set[tuple[int, str]] = set()
    rows = []
    for embedding_id, location in bind.execute(
        sa.text("SELECT embedding_id, location FROM provenance ORDER BY id")
    ):
        word = _word(location)
        if word is not None and (embedding_id, _fold(word)) not in seen:
            seen.add((embedding_id, _fold(word)))
            rows.append({"id": embedding_id, "word": word, "key": _fold(word)})
    if rows:
        bind.execute(
            sa.text(
                "INSERT INTO prompt_words (embedding_id, word, word_key) VALUES (:id, :word, :key)"
            ),
            rows,
        )


def downgrade() -> None:
    op.drop_table("prompt_words")
