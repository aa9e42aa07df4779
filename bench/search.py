"""Search and show latency on a 100,000-embedding catalogue, against a plain LIKE scan.

Builds a real catalogue (migrations, FTS5 index) in a temporary TIREG_HOME with generated rows:
names, descriptions (~30 words) and tags drawn from a Zipf-distributed vocabulary, so some words
match a handful of rows and some tens of thousands. Then, in the same run and on the same table:

* ranked search: the bare FTS5 statement (MATCH, ORDER BY rank, LIMIT 20), and what the user
  gets, :func:`tireg.registry.query.search` (that statement, the rows with their tags, and
  collision-aware refs), with no filter and with a family filter (the FTS-first CTE path);
* show: :func:`tireg.registry.query.show` (name resolution through the index, then every record);
* the alternative: ``SELECT ... WHERE name LIKE '%q%' OR description LIKE '%q%' LIMIT 20``.

Usage: .venv/bin/python bench/search.py [--rows 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import insert, text


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _timed(run: Callable[[str], object], queries: list[str]) -> list[float]:
    for q in queries[:20]:  # warm the page cache and the statement cache
        run(q)
    samples = []
    for q in queries:
        start = time.perf_counter()
        run(q)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="tireg-bench-search-")
    os.environ["TIREG_HOME"] = home
    from tireg.db.schema import EmbeddingRow, TagRow, name_key
    from tireg.db.session import FTS_TABLE, TRIGRAM_TABLE, open_catalogue
    from tireg.registry import query
    from tireg.registry.query import Filters

    rng = np.random.default_rng(0)
    vocab = [f"w{i:05d}" for i in range(20_000)]
    ranks = np.arange(1, len(vocab) + 1)
    zipf = (1.0 / ranks) / (1.0 / ranks).sum()

    drawn = iter(rng.choice(len(vocab), size=args.rows * 40 + 4 * args.queries, p=zipf).tolist())

    def words(n: int) -> list[str]:
        """The next ``n`` words of one long Zipf-distributed stream (drawn once: fast)."""
        return [vocab[next(drawn)] for _ in range(n)]

    catalogue = open_catalogue()
    families = ["sd1", "sd2", "sdxl"]
    now = datetime.now(timezone.utc)
    start = time.perf_counter()
    names: list[str] = []
    batch = 10_000
    for first in range(0, args.rows, batch):
        rows, fts, tags = [], [], []
        for i in range(first, min(first + batch, args.rows)):
            # 1 in 100 names is shared by two rows (the collision case the naming rule handles)
            name = "-".join(words(2)) + f"-{i if i % 100 else i - 1}"
            description = " ".join(words(30))
            tag_words = words(2)
            sha = f"{rng.integers(0, 2**63):016x}{i:048x}"
            family = families[i % 3]
            names.append(name)
            rows.append(
                {
                    "id": i + 1,
                    "vectors_sha256": sha,
                    "name": name,
                    "family": family,
                    "num_vectors": 1 + i % 8,
                    "widths": "clip_l:768",
                    "concept_type": "style" if i % 2 else "object",
                    "description": description,
                    "nsfw": False,
                    "store_path": f"{sha[:2]}/{sha}.safetensors",
                    "name_key": name_key(name),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            tags += [{"embedding_id": i + 1, "tag": t} for t in dict.fromkeys(tag_words)]
            fts.append(
                {
                    "id": i + 1,
                    "name": name,
                    "triggers": name,
                    "description": description,
                    "tags": "\n".join(tag_words),
                    "sources": "hf\nsd-concepts-library/" + name,
                }
            )
        with catalogue.transaction() as session:
            session.execute(insert(EmbeddingRow), rows)
            session.execute(insert(TagRow), tags)
            session.execute(
                text(
                    f"INSERT INTO {FTS_TABLE} (rowid, name, triggers, description, tags, sources) "
                    "VALUES (:id, :name, :triggers, :description, :tags, :sources)"
                ),
                fts,
            )
            session.execute(
                text(
                    f"INSERT INTO {TRIGRAM_TABLE} (rowid, name, triggers, tags) "
                    "VALUES (:id, :name, :triggers, :tags)"
                ),
                fts,
            )
    with catalogue.transaction() as session:
        session.execute(text(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('optimize')"))
    build_s = time.perf_counter() - start

    # two query sets: words drawn by how often they occur (common words dominate: the hard case
    # for ranking, which scores every match) and words drawn evenly from the vocabulary (most
    # are rare: the hard case for LIKE, which then scans the whole table)
    query_sets = {
        "frequent": words(args.queries),
        "uniform": [vocab[i] for i in rng.integers(0, len(vocab), size=args.queries)],
    }
    show_names = [names[i] for i in rng.choice(len(names), size=args.queries) if i % 100 != 0]

    with catalogue.reading() as session:

        def ranked(q: str) -> object:
            return query.search(session, q, limit=20)

        def ranked_filtered(q: str) -> object:
            return query.search(session, q, Filters(family="sdxl"), limit=20)

        def show(name: str) -> object:
            return query.show(session, name).to_dict()

        like_sql = text(
            "SELECT id, name, family, num_vectors, description FROM embeddings "
            "WHERE name LIKE :p OR description LIKE :p LIMIT 20"
        )

        fts_sql = text(
            f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q ORDER BY rank LIMIT 20"
        )

        def fts_only(q: str) -> object:
            return session.execute(fts_sql, {"q": query.fts_query(q)}).all()

        def like(q: str) -> object:
            return session.execute(like_sql, {"p": f"%{q}%"}).all()

        def matches(q: str) -> int:
            count = text(f"SELECT count(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q")
            return int(session.execute(count, {"q": f'"{q}"'}).scalar_one())

        results: dict[str, dict[str, list[float]]] = {}
        hits: dict[str, list[int]] = {}
        for set_name, search_words in query_sets.items():
            results[set_name] = {
                "FTS5 MATCH ORDER BY rank LIMIT 20 (SQL)": _timed(fts_only, search_words),
                "search(): ranked + summaries and refs": _timed(ranked, search_words),
                "search() + family filter (FTS-first CTE)": _timed(ranked_filtered, search_words),
                "LIKE '%q%' name/description LIMIT 20": _timed(like, search_words),
            }
            hits[set_name] = [matches(q) for q in search_words[:100]]
        show_samples = _timed(show, show_names)

    size_mb = os.path.getsize(os.path.join(home, "catalogue.sqlite")) / 1e6
    print(f"catalogue: {args.rows:,} embeddings, {size_mb:.0f} MB, built in {build_s:.1f} s")
    like_label = "LIKE '%q%' name/description LIMIT 20"
    for set_name, timings in results.items():
        counts = hits[set_name]
        print(
            f"\n{set_name} words ({args.queries} queries; rows matching one: median "
            f"{statistics.median(counts):.0f}, max {max(counts)})"
        )
        print(f"  {'operation':42s} {'p50 ms':>9s} {'p99 ms':>9s} {'x LIKE p50':>11s} {'p99':>7s}")
        like50, like99 = _percentiles(timings[like_label])
        for label, samples in timings.items():
            p50, p99 = _percentiles(samples)
            print(f"  {label:42s} {p50:9.3f} {p99:9.3f} {p50 / like50:11.3f} {p99 / like99:7.3f}")
    p50, p99 = _percentiles(show_samples)
    print(f"\nshow NAME (resolve + every record): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    for set_name, timings in results.items():
        like50, like99 = _percentiles(timings[like_label])
        print(f"  x LIKE ({set_name} words): p50 {p50 / like50:.2f}, p99 {p99 / like99:.2f}")
    catalogue.close()


if __name__ == "__main__":
    main()
