"""What an embedding "means" on a model, and embeddings made from plain words.

``tireg tokens`` shows, for each vector of an embedding, the model's vocabulary tokens whose own
vectors point the same way (cosine similarity against the token-embedding table), as A1111's
Embedding Inspector does: a quick reading of what the training found. ``tireg from-text`` goes
the other way: the tokens of a text, looked up in the same table, become a new embedding, which
is what A1111's "initialization text" starts a training run from.

Only the token tables are read from the checkpoint (:mod:`tireg.pipelines.token_table`), and the
tokenizers are tireg's shipped ones (:mod:`tireg.pipelines.tokenizers`). SDXL has two encoders:
CLIP-L vectors are compared with (and made from) the first table, CLIP-G with the second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tireg.converters import CLIP_G, CLIP_H, CLIP_L, Embedding
from tireg.db import Catalogue
from tireg.errors import TiregError
from tireg.pipelines.token_table import token_tables
from tireg.pipelines.tokenizers import load_tokenizer
from tireg.registry import model_refs, naming
from tireg.registry.reshape import Made, new_embedding, record_made
from tireg.registry.store import ContentStore

#: encoder key -> which of the model's tokenizers reads it (SDXL's CLIP-G is the second)
_TOKENIZER = {CLIP_L: 1, CLIP_H: 1, CLIP_G: 2}
#: begin/end-of-text: every vector is near them in some direction, and they are never typed
SPECIAL_IDS = (49406, 49407)


class VocabularyError(TiregError):
    """An embedding and a model whose text encoders do not match, or text with no tokens."""


@dataclass(frozen=True)
class TokenMatch:
    """One vocabulary token near a vector: its text, id and cosine similarity."""

    token: str
    id: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_path(catalogue: Catalogue, spec: str) -> tuple[Path, str]:
    """The checkpoint file or folder ``spec`` names (a path, or a name/hash known to
    ``tireg model``) and its family."""
    with catalogue.transaction() as session:
        ref = model_refs.resolve_model(session, spec)
    for file in ref.files:
        if file.path and Path(file.path).exists():
            return Path(file.path), ref.family
    raise VocabularyError(
        f"no file for the model {spec!r} on this machine",
        hint="give the checkpoint's path, or register it with tireg model add FILE",
    )


def _family_of_tables(tables: dict[str, np.ndarray]) -> str:
    return "sdxl" if CLIP_G in tables else ("sd2" if CLIP_H in tables else "sd1")


def _check(keys: list[str], tables: dict[str, np.ndarray], what: str) -> None:
    missing = [k for k in keys if k not in tables]
    if missing:
        have = ", ".join(f"{k} ({t.shape[1]})" for k, t in sorted(tables.items()))
        raise VocabularyError(
            f"{what} has vectors for {', '.join(missing)}; this model's encoders are {have}",
            hint="use a model of the embedding's family (tireg check tells which)",
        )


def nearest_tokens(
    embedding: Embedding, tables: dict[str, np.ndarray], *, top: int = 5
) -> dict[str, list[list[TokenMatch]]]:
    """For each encoder and each vector, the ``top`` nearest vocabulary tokens by cosine."""
    _check(list(embedding.vectors), tables, "the embedding")
    family = _family_of_tables(tables)
    result: dict[str, list[list[TokenMatch]]] = {}
    for key, vectors in sorted(embedding.vectors.items()):
        table = tables[key]
        unit_table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
        tokenizer = load_tokenizer(family, _TOKENIZER[key])
        rows = []
        for vector in np.asarray(vectors, dtype=np.float32):
            scores = unit_table @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
            scores[list(SPECIAL_IDS)] = -np.inf
            best = np.argpartition(-scores, top)[:top]
            best = best[np.argsort(-scores[best], kind="stable")]
            rows.append(
                [
                    TokenMatch(
                        token=tokenizer.decode([int(i)]),
                        id=int(i),
                        score=round(float(scores[i]), 4),
                    )
                    for i in best
                ]
            )
        result[key] = rows
    return result


def tokens_of(catalogue: Catalogue, spec: str, model: str, *, top: int = 5) -> dict[str, Any]:
    """``tireg tokens``: the embedding ``spec`` read against ``model``'s vocabulary."""
    with catalogue.reading() as session:
        row = naming.resolve(session, spec)
        ref, sha = naming.ref_of(row), row.vectors_sha256
    embedding = ContentStore().get(sha)
    path, _ = model_path(catalogue, model)
    found = nearest_tokens(embedding, token_tables(path), top=top)
    return {
        "ref": ref,
        "model": str(path),
        "encoders": {k: [[m.to_dict() for m in v] for v in rows] for k, rows in found.items()},
    }


def text_vectors(text: str, tables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The token vectors of ``text`` (no begin/end tokens), per encoder of the model."""
    family = _family_of_tables(tables)
    vectors: dict[str, np.ndarray] = {}
    for key, table in tables.items():
        ids = load_tokenizer(family, _TOKENIZER[key])(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise VocabularyError(f"{text!r} has no tokens", hint="give some words")
        if len(ids) > 75:
            raise VocabularyError(
                f"{text!r} is {len(ids)} tokens; an embedding holds at most 75 vectors"
            )
        vectors[key] = table[ids]
    return vectors


def from_text(catalogue: Catalogue, text: str, model: str, *, name: str) -> Made:
    """``tireg from-text``: a new entry whose vectors are the tokens of ``text`` on ``model``."""
    path, _ = model_path(catalogue, model)
    vectors = text_vectors(text, token_tables(path))
    made = new_embedding(name, vectors)
    arguments = {"text": text, "model": str(path)}
    return record_made(catalogue, made, [], "from-text", arguments, ContentStore())
