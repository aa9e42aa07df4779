"""``tireg similar`` latency at 100,000 embeddings, against the in-memory brute-force floor.

Builds a real catalogue (migrations) in a temporary TIREG_HOME with ``--rows`` SD 1.x
embeddings of 1-8 random vectors, and writes real store files for them. Then, in one run:

* **first build**: :func:`tireg.registry.similar.family_matrix` reading every store file
  into the cache (once; files/s);
* **tireg**: :func:`tireg.registry.similar.similar` as ``tireg similar`` calls it (name
  resolution, the catalogue fingerprint, the memory-mapped cache, the product, the neighbours'
  rows), p50/p99 over ``--queries`` random names;
* **floor**: the same cosine ranking with the matrix already in memory as one numpy array
  (``argpartition`` of one matrix-vector product), the strongest alternative: no catalogue,
  no cache check, nothing to resolve.

Usage: .venv/bin/python bench/similar.py [--rows 100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import insert


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    os.environ["TIREG_HOME"] = tempfile.mkdtemp(prefix="tireg-bench-similar-")
    from tireg.converters import CLIP_L, Embedding, internal
    from tireg.db.schema import EmbeddingRow, name_key
    from tireg.db.session import open_catalogue
    from tireg.files import atomic_batch
    from tireg.registry.similar import family_matrix, similar
    from tireg.registry.store import ContentStore, relative_path

    # 1. A catalogue of --rows embeddings, with their store files (written in fsynced batches)
    rng = np.random.default_rng(0)
    catalogue = open_catalogue()
    store = ContentStore()
    now = datetime.now(timezone.utc)
    names: list[str] = []
    started = time.perf_counter()
    for first in range(0, args.rows, 5_000):
        rows = []
        with atomic_batch() as batch:
            for i in range(first, min(first + 5_000, args.rows)):
                vectors = rng.standard_normal((1 + i % 8, 768)).astype(np.float32)
                embedding = Embedding(name=f"emb-{i}", vectors={CLIP_L: vectors})
                sha = embedding.vectors_sha256()
                batch.add([(store.root / relative_path(sha), internal.dumps(embedding))])
                names.append(embedding.name)
                rows.append(
                    {
                        "id": i + 1,
                        "vectors_sha256": sha,
                        "name": embedding.name,
                        "name_key": name_key(embedding.name),
                        "family": "sd1",
                        "num_vectors": vectors.shape[0],
                        "widths": "clip_l:768",
                        "nsfw": False,
                        "store_path": relative_path(sha),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            batch.commit()
        with catalogue.transaction() as session:
            session.execute(insert(EmbeddingRow), rows)
    print(f"catalogue: {args.rows:,} embeddings in {time.perf_counter() - started:.1f} s")

    # 2. The first build of the cache
    started = time.perf_counter()
    matrix = family_matrix(catalogue, "sd1")
    build = time.perf_counter() - started
    print(f"first build: {build:.1f} s ({args.rows / build:,.0f} store files/s)")

    # 3. Questions: tireg end to end, and the in-memory floor on the same matrix
    in_memory = np.array(matrix.unit_means)
    at = {sha.decode(): i for i, sha in enumerate(matrix.shas.tolist())}
    with catalogue.reading() as session:
        sha_of = dict(session.query(EmbeddingRow.name, EmbeddingRow.vectors_sha256).all())
    asked = [names[i] for i in rng.integers(0, len(names), size=args.queries)]
    for name in asked[:10]:
        similar(catalogue, name, limit=10)  # warm the page cache
    tireg_ms, floor_ms = [], []
    for name in asked:
        started = time.perf_counter()
        similar(catalogue, name, limit=10)
        tireg_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        scores = in_memory @ in_memory[at[sha_of[name]]]
        best = np.argpartition(-scores, 10)[:11]
        best[np.argsort(-scores[best])]
        floor_ms.append((time.perf_counter() - started) * 1000)
    t50, t99 = _percentiles(tireg_ms)
    f50, f99 = _percentiles(floor_ms)
    print(f"tireg similar (end to end): p50 {t50:.1f} ms, p99 {t99:.1f} ms")
    print(f"in-memory numpy floor:      p50 {f50:.1f} ms, p99 {f99:.1f} ms")
    print(f"ratio (tireg / floor): p50 {t50 / f50:.2f}x, p99 {t99 / f99:.2f}x")
    catalogue.close()


if __name__ == "__main__":
    main()
