"""Generated catalogue rows for the benches that need a large catalogue (search, gallery).

Why shared: both benches measure the same catalogue shape at 100,000 entries, and two copies of
the generator drifted (one wrote the search index by hand, skipping the upkeep code). Rows are
drawn once from a seeded generator, so every backend and every run sees the same catalogue:
names of two vocabulary words plus the row number (1 in 100 shared by two rows: the collision
case of the naming rule), descriptions of vocabulary words, two tags, a third each sd1 / sd2 /
sdxl, and optionally a recorded preview picture for every other row. Words are drawn either by a
Zipf law (some words in a handful of rows, some in nearly every row: the hard case for ranking)
or evenly. :func:`load` writes them through the backend's own search-index upkeep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import insert, text


@dataclass
class Rows:
    """The generated catalogue, identical for every backend."""

    embeddings: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    previews: list[dict[str, Any]] = field(default_factory=list)
    documents: dict[int, dict[str, str]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    #: the vocabulary, and the stream of words the rows were drawn from (queries draw on too)
    vocab: list[str] = field(default_factory=list)


class WordStream:
    """Vocabulary words drawn once in one long array (per-word draws are slow in numpy)."""

    def __init__(self, rng: np.random.Generator, vocab: list[str], size: int, zipf: bool) -> None:
        weights = None
        if zipf:
            ranks = np.arange(1, len(vocab) + 1)
            weights = (1.0 / ranks) / (1.0 / ranks).sum()
        self._vocab = vocab
        self._drawn = iter(rng.choice(len(vocab), size=size, p=weights).tolist())

    def take(self, n: int) -> list[str]:
        return [self._vocab[next(self._drawn)] for _ in range(n)]


def generate(
    count: int,
    *,
    vocab_size: int,
    description_words: int,
    zipf: bool,
    spare_words: int = 0,
    pictures: list[str] | None = None,
    seed: int = 0,
) -> tuple[Rows, WordStream, np.random.Generator]:
    """``count`` embeddings with their tags, search documents and (given ``pictures``) a preview
    for every other one; also the word stream (``spare_words`` left in it for queries) and the
    generator, for the bench to draw its queries from the same distribution."""
    from tireg.db.schema import name_key

    rng = np.random.default_rng(seed)
    vocab = [f"w{i:05d}" for i in range(vocab_size)]
    stream = WordStream(rng, vocab, count * (4 + description_words) + spare_words, zipf)
    rows = Rows(vocab=vocab)
    families = ["sd1", "sd2", "sdxl"]
    now = datetime.now(timezone.utc)
    for i in range(count):
        name = "-".join(stream.take(2)) + f"-{i if i % 100 else i - 1}"
        description = " ".join(stream.take(description_words))
        tag_words = list(dict.fromkeys(stream.take(2)))
        sha = f"{rng.integers(0, 2**63):016x}{i:048x}"
        rows.names.append(name)
        rows.embeddings.append(
            {
                "id": i + 1,
                "vectors_sha256": sha,
                "name": name,
                "name_key": name_key(name),
                "family": families[i % 3],
                "num_vectors": 1 + i % 8,
                "widths": "clip_l:768",
                "concept_type": "style" if i % 2 else "object",
                "description": description,
                "nsfw": False,
                "store_path": f"{sha[:2]}/{sha}.safetensors",
                "created_at": now,
                "updated_at": now,
            }
        )
        rows.tags += [{"embedding_id": i + 1, "tag": t} for t in tag_words]
        if pictures and i % 2 == 0:
            rows.previews.append({"embedding_id": i + 1, "location": pictures[i % len(pictures)]})
        rows.documents[i + 1] = {
            "name": name,
            "triggers": name,
            "description": description,
            "tags": "\n".join(tag_words),
            "sources": "hf\nsd-concepts-library/" + name,
        }
    return rows, stream, rng


def load(catalogue: Any, rows: Rows, batch: int = 10_000) -> float:
    """Insert ``rows`` and index them through the backend's own upkeep; seconds taken."""
    from tireg.db.schema import EmbeddingRow, PreviewRow, TagRow
    from tireg.db.session import FTS_TABLE
    from tireg.registry import search_index

    start = time.perf_counter()
    for first in range(0, len(rows.embeddings), batch):
        part = rows.embeddings[first : first + batch]
        ids = {r["id"] for r in part}
        with catalogue.transaction() as session:
            session.execute(insert(EmbeddingRow), part)
            session.execute(insert(TagRow), [t for t in rows.tags if t["embedding_id"] in ids])
            previews = [p for p in rows.previews if p["embedding_id"] in ids]
            if previews:
                session.execute(insert(PreviewRow), previews)
            index = search_index.backend(session)
            assert index is not None
            index.insert(session, {i: rows.documents[i] for i in sorted(ids)})
    if catalogue.is_sqlite:
        with catalogue.transaction() as session:
            session.execute(text(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('optimize')"))
    else:
        with catalogue.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return time.perf_counter() - start
