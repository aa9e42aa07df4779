"""What the shell offers when a user presses Tab: embedding refs and model names from the catalogue.

Completion runs on every Tab press, so it asks one indexed question (a ``name_key`` prefix, the
same folding the naming rule uses) and returns refs exactly as listings show them: a bare name, or
``NAME@HEX`` where names collide.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tireg.db.schema import CheckpointRow, EmbeddingRow, name_key
from tireg.registry.query import refs

#: at most this many suggestions; a shell shows no more than a screenful anyway
LIMIT = 50


def _like_prefix(text: str) -> str:
    """``text`` as a LIKE prefix pattern, its own wildcards taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def embedding_refs(session: Session, incomplete: str) -> list[str]:
    """Refs of the embeddings whose name starts with ``incomplete`` (case and ``<`` ignored)."""
    folded = name_key(incomplete.lstrip("<")) if incomplete.strip("<") else ""
    rows = session.scalars(
        select(EmbeddingRow)
        .where(EmbeddingRow.name_key.like(_like_prefix(folded), escape="\\"))
        .order_by(EmbeddingRow.name_key, EmbeddingRow.id)
        .limit(LIMIT)
    ).all()
    shown = refs(session, rows)
    return list(dict.fromkeys(shown[r.id] for r in rows))


def model_names(session: Session, incomplete: str) -> list[str]:
    """Names of the user's checkpoints (``tireg model add``) starting with ``incomplete``."""
    return list(
        session.scalars(
            select(CheckpointRow.name)
            .where(
                CheckpointRow.origin == "user",
                func.lower(CheckpointRow.name).like(_like_prefix(incomplete.lower()), escape="\\"),
            )
            .distinct()
            .order_by(CheckpointRow.name)
            .limit(LIMIT)
        )
    )
