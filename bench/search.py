"""Search and show latency on a 100,000-embedding catalogue, SQLite beside PostgreSQL, against a
plain LIKE scan.

Generates rows once: names, descriptions (~30 words) and tags drawn from a Zipf-distributed
vocabulary, so some words match a handful of rows and some tens of thousands. Loads the same rows
into each backend's real catalogue (migrations, and the search index written by its own upkeep
code: FTS5 on SQLite, the ``tsvector`` + ``pg_trgm`` table on PostgreSQL), then measures, in the
same run and on the same rows:

* ranked search: the bare index statement (match, ORDER BY rank, LIMIT 20), and what the user
  gets, :func:`tireg.registry.query.search` (that statement, the rows with their tags, and
  collision-aware refs), with no filter and with a family filter (the index-first CTE path);
* show: :func:`tireg.registry.query.show` (name resolution, then every record);
* the alternative: ``SELECT ... WHERE name LIKE '%q%' OR description LIKE '%q%' LIMIT 20``.

PostgreSQL: ``--postgres-url URL`` (an empty database you own), or ``--postgres`` to start a
throwaway server the way the tests do (``initdb`` + ``pg_ctl`` from Debian's package, fsync off
as in the tests). Without either, SQLite alone.

Usage: .venv/bin/python bench/search.py [--rows 100000] [--queries 500]
       [--postgres | --postgres-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, literal_column, select, text

REPO_ROOT = Path(__file__).resolve().parent.parent
LIKE = "LIKE '%q%' name/description LIMIT 20"


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


@dataclass
class Rows:
    """The generated catalogue, identical for every backend."""

    embeddings: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    documents: dict[int, dict[str, str]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    query_sets: dict[str, list[str]] = field(default_factory=dict)
    show_names: list[str] = field(default_factory=list)


def _generate(count: int, queries: int) -> Rows:
    from tireg.db.schema import name_key

    rng = np.random.default_rng(0)
    vocab = [f"w{i:05d}" for i in range(20_000)]
    ranks = np.arange(1, len(vocab) + 1)
    zipf = (1.0 / ranks) / (1.0 / ranks).sum()
    drawn = iter(rng.choice(len(vocab), size=count * 40 + 4 * queries, p=zipf).tolist())

    def words(n: int) -> list[str]:
        """The next ``n`` words of one long Zipf-distributed stream (drawn once: fast)."""
        return [vocab[next(drawn)] for _ in range(n)]

    rows = Rows()
    families = ["sd1", "sd2", "sdxl"]
    now = datetime.now(timezone.utc)
    for i in range(count):
        # 1 in 100 names is shared by two rows (the collision case the naming rule handles)
        name = "-".join(words(2)) + f"-{i if i % 100 else i - 1}"
        description = " ".join(words(30))
        tag_words = list(dict.fromkeys(words(2)))
        sha = f"{rng.integers(0, 2**63):016x}{i:048x}"
        rows.names.append(name)
        rows.embeddings.append(
            {
                "id": i + 1,
                "vectors_sha256": sha,
                "name": name,
                "family": families[i % 3],
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
        rows.tags += [{"embedding_id": i + 1, "tag": t} for t in tag_words]
        rows.documents[i + 1] = {
            "name": name,
            "triggers": name,
            "description": description,
            "tags": "\n".join(tag_words),
            "sources": "hf\nsd-concepts-library/" + name,
        }
    # two query sets: words drawn by how often they occur (common words dominate: the hard case
    # for ranking, which scores every match) and words drawn evenly from the vocabulary (most
    # are rare: the hard case for LIKE, which then scans the whole table)
    rows.query_sets = {
        "frequent": words(queries),
        "uniform": [vocab[i] for i in rng.integers(0, len(vocab), size=queries)],
    }
    picks = rng.choice(len(rows.names), size=queries)
    rows.show_names = [rows.names[i] for i in picks if i % 100 != 0]
    return rows


def _load(catalogue: Any, rows: Rows) -> float:
    """Insert ``rows`` and index them through the backend's own upkeep; seconds taken."""
    from tireg.db.schema import EmbeddingRow, TagRow
    from tireg.db.session import FTS_TABLE
    from tireg.registry import search_index

    start = time.perf_counter()
    batch = 10_000
    for first in range(0, len(rows.embeddings), batch):
        part = rows.embeddings[first : first + batch]
        ids = {r["id"] for r in part}
        with catalogue.transaction() as session:
            session.execute(insert(EmbeddingRow), part)
            session.execute(insert(TagRow), [t for t in rows.tags if t["embedding_id"] in ids])
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


def _measure(catalogue: Any, rows: Rows) -> tuple[dict[str, dict[str, list[float]]], list[float]]:
    """Samples (ms) per query set and operation, and of ``show``."""
    from tireg.registry import query, search_index
    from tireg.registry.query import Filters

    like_sql = text(
        "SELECT id, name, family, num_vectors, description FROM embeddings "
        "WHERE name LIKE :p OR description LIKE :p LIMIT 20"
    )
    results: dict[str, dict[str, list[float]]] = {}
    with catalogue.reading() as session:
        index = search_index.backend(session)
        assert index is not None

        def index_only(q: str) -> object:
            found = index.word_matches(q)
            assert found is not None
            sub = found.columns(literal_column("id"), literal_column("rank")).subquery()
            return session.execute(select(sub.c.id).order_by(sub.c.rank).limit(20)).all()

        def ranked(q: str) -> object:
            return query.search(session, q, limit=20)

        def ranked_filtered(q: str) -> object:
            return query.search(session, q, Filters(family="sdxl"), limit=20)

        def like(q: str) -> object:
            return session.execute(like_sql, {"p": f"%{q}%"}).all()

        def show(name: str) -> object:
            return query.show(session, name).to_dict()

        for set_name, search_words in rows.query_sets.items():
            results[set_name] = {
                "index match ORDER BY rank LIMIT 20 (SQL)": _timed(index_only, search_words),
                "search(): ranked + summaries and refs": _timed(ranked, search_words),
                "search() + family filter (index-first CTE)": _timed(ranked_filtered, search_words),
                LIKE: _timed(like, search_words),
            }
        return results, _timed(show, rows.show_names)


def _matches(catalogue: Any, words: list[str]) -> list[int]:
    """How many rows the word index matches for each of ``words``."""
    from tireg.registry import search_index

    with catalogue.reading() as session:
        index = search_index.backend(session)
        assert index is not None
        counts = []
        for word in words:
            found = index.word_matches(word)
            assert found is not None
            sub = found.columns(literal_column("id"), literal_column("rank")).subquery()
            counts.append(int(session.scalar(select(func.count()).select_from(sub)) or 0))
        return counts


@contextlib.contextmanager
def _postgres(url: str | None, wanted: bool) -> Iterator[str | None]:
    """The PostgreSQL URL to use: given, a throwaway server's, or ``None``."""
    if url is not None or not wanted:
        yield url
        return
    sys.path.insert(0, str(REPO_ROOT))
    from tests.postgres.server import find_binaries, running_server

    bin_dir = find_binaries()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binary (initdb); apt-get install postgresql")
    with running_server(bin_dir) as server:
        server.admin("CREATE DATABASE bench")
        yield server.url("bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--postgres", action="store_true", help="start a throwaway server")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to fill")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="tireg-bench-search-")
    os.environ["TIREG_HOME"] = home
    from tireg.db.session import open_catalogue

    rows = _generate(args.rows, args.queries)
    measured: dict[str, tuple[dict[str, dict[str, list[float]]], list[float]]] = {}
    hits: dict[str, list[int]] = {}
    with _postgres(args.postgres_url, args.postgres) as pg_url:
        urls = {"SQLite": f"sqlite:///{home}/catalogue.sqlite", "PostgreSQL": pg_url}
        for backend, url in urls.items():
            if url is None:
                continue
            catalogue = open_catalogue(url)
            try:
                build_s = _load(catalogue, rows)
                print(f"{backend}: {args.rows:,} embeddings loaded and indexed in {build_s:.1f} s")
                measured[backend] = _measure(catalogue, rows)
                if backend == "SQLite":
                    hits = {k: _matches(catalogue, w[:100]) for k, w in rows.query_sets.items()}
            finally:
                catalogue.close()

    backends = list(measured)
    header = "".join(f" {b + ' p50':>15s} {b + ' p99':>15s}" for b in backends)
    for set_name, words in rows.query_sets.items():
        counts = hits[set_name]
        print(
            f"\n{set_name} words ({len(words)} queries; rows matching one: median "
            f"{statistics.median(counts):.0f}, max {max(counts)}), milliseconds"
        )
        print(f"  {'operation':44s}{header}")
        for label in measured[backends[0]][0][set_name]:
            cells = ""
            for backend in backends:
                p50, p99 = _percentiles(measured[backend][0][set_name][label])
                cells += f" {p50:15.3f} {p99:15.3f}"
            print(f"  {label:44s}{cells}")
    cells = ""
    for backend in backends:
        p50, p99 = _percentiles(measured[backend][1])
        cells += f" {p50:15.3f} {p99:15.3f}"
    print(f"\n  {'show NAME (resolve + every record)':44s}{cells}")


if __name__ == "__main__":
    main()
