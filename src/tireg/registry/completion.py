"""What the shell offers when a user presses Tab: embedding refs and model names from the catalogue.

Completion runs on every Tab press, so it asks one indexed question (a ``name_key`` or prompt
word prefix, the same folding the naming rule uses) and returns refs exactly as listings show
them: a bare name, or ``NAME@HEX`` where names collide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tireg.db.schema import CheckpointRow, EmbeddingRow, PromptWordRow, name_key
from tireg.prompt_words import unbracketed
from tireg.registry.naming import REF_HEX, candidates, refs

if TYPE_CHECKING:
    from tireg.db.session import Catalogue

#: at most this many suggestions; a shell shows no more than a screenful anyway
LIMIT = 50


def _like_prefix(text: str) -> str:
    """``text`` as a LIKE prefix pattern, its own wildcards taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def embedding_refs(catalogue: Catalogue, incomplete: str) -> list[str]:
    """Refs of the embeddings whose prompt word or trained-as name starts with ``incomplete``
    (case and ``<`` ignored). An embedding found by its trained-as name while listings show its
    file stem is offered by that name (``NAME@HEX`` where it collides), which names it too, so
    the shell keeps the offer."""
    folded = name_key(unbracketed(incomplete, partial=True))
    pattern = _like_prefix(folded)
    by_word = select(PromptWordRow.embedding_id).where(
        PromptWordRow.word_key.like(pattern, escape="\\")
    )
    with catalogue.reading() as session:
        rows = session.scalars(
            select(EmbeddingRow)
            .where(
                or_(EmbeddingRow.name_key.like(pattern, escape="\\"), EmbeddingRow.id.in_(by_word))
            )
            .order_by(EmbeddingRow.name_key, EmbeddingRow.id)
            .limit(LIMIT)
        ).all()
        shown = refs(session, rows)
        offers = [
            shown[r.id]
            if name_key(shown[r.id]).startswith(folded)
            else _by_trained_name(session, r)
            for r in rows
        ]
    return list(dict.fromkeys(offers))


def _by_trained_name(session: Session, row: EmbeddingRow) -> str:
    """The spec that names ``row`` by its trained-as name: bare where only it answers to it."""
    alone = len(candidates(session, row.name)) == 1
    return row.name if alone else f"{row.name}@{row.vectors_sha256[:REF_HEX]}"


def model_names(catalogue: Catalogue, incomplete: str) -> list[str]:
    """Names of the user's checkpoints (``tireg model add``) starting with ``incomplete``."""
    with catalogue.reading() as session:
        return list(
            session.scalars(
                select(CheckpointRow.name)
                .where(
                    CheckpointRow.origin == "user",
                    func.lower(CheckpointRow.name).like(
                        _like_prefix(incomplete.lower()), escape="\\"
                    ),
                )
                .distinct()
                .order_by(CheckpointRow.name)
                .limit(LIMIT)
            )
        )
