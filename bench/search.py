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
       [--postgres | --postgres-url URL] [--cpu]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, literal_column, select, text

from _catalogue_rows import Rows, generate, load

REPO_ROOT = Path(__file__).resolve().parent.parent
LIKE = "LIKE '%q%' name/description LIMIT 20"
#: measure CPU time instead of wall-clock (``--cpu``)
CPU_TIME = False


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _timed(run: Callable[[str], object], queries: list[str]) -> list[float]:
    """Milliseconds per query: wall-clock, or with ``--cpu`` this process's CPU time (on a
    machine shared with other work, where wall-clock mostly measures the other work; SQLite
    runs in this process, PostgreSQL's server does not, so its column then counts the client)."""
    clock = time.process_time if CPU_TIME else time.perf_counter
    for q in queries[:20]:  # warm the page cache and the statement cache
        run(q)
    samples = []
    for q in queries:
        start = clock()
        run(q)
        samples.append((clock() - start) * 1000)
    return samples


@dataclass
class Queries:
    """What the bench asks: words by query set, and names to show."""

    sets: dict[str, list[str]]
    show_names: list[str]


def _generate(count: int, queries: int) -> tuple[Rows, Queries]:
    rows, stream, rng = generate(
        count, vocab_size=20_000, description_words=30, zipf=True, spare_words=queries
    )
    # two query sets: words drawn by how often they occur (common words dominate: the hard case
    # for ranking, which scores every match) and words drawn evenly from the vocabulary (most
    # are rare: the hard case for LIKE, which then scans the whole table)
    sets = {
        "frequent": stream.take(queries),
        "uniform": [rows.vocab[i] for i in rng.integers(0, len(rows.vocab), size=queries)],
    }
    picks = rng.choice(len(rows.names), size=queries)
    return rows, Queries(sets, [rows.names[i] for i in picks if i % 100 != 0])


Samples = dict[str, dict[str, list[float]]]


def _measure(catalogue: Any, asked: Queries) -> tuple[Samples, list[float]]:
    """Samples (ms) per query set and operation, and of ``show``."""
    from tireg.registry import query, search_index
    from tireg.registry.query import Filters

    like_sql = text(
        "SELECT id, name, family, num_vectors, description FROM embeddings "
        "WHERE name LIKE :p OR description LIKE :p LIMIT 20"
    )
    results: Samples = {}
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

        for set_name, search_words in asked.sets.items():
            results[set_name] = {
                "index match ORDER BY rank LIMIT 20 (SQL)": _timed(index_only, search_words),
                "search(): ranked + summaries and refs": _timed(ranked, search_words),
                "search() + family filter (index-first CTE)": _timed(ranked_filtered, search_words),
                LIKE: _timed(like, search_words),
            }
        return results, _timed(show, asked.show_names)


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
    parser.add_argument("--cpu", action="store_true", help="time this process's CPU, not the clock")
    args = parser.parse_args()
    global CPU_TIME
    CPU_TIME = args.cpu

    home = tempfile.mkdtemp(prefix="tireg-bench-search-")
    os.environ["TIREG_HOME"] = home
    from tireg.db.session import open_catalogue

    rows, asked = _generate(args.rows, args.queries)
    measured: dict[str, tuple[Samples, list[float]]] = {}
    hits: dict[str, list[int]] = {}
    with _postgres(args.postgres_url, args.postgres) as pg_url:
        urls = {"SQLite": f"sqlite:///{home}/catalogue.sqlite", "PostgreSQL": pg_url}
        for backend, url in urls.items():
            if url is None:
                continue
            catalogue = open_catalogue(url)
            try:
                build_s = load(catalogue, rows)
                print(f"{backend}: {args.rows:,} embeddings loaded and indexed in {build_s:.1f} s")
                measured[backend] = _measure(catalogue, asked)
                if backend == "SQLite":
                    hits = {k: _matches(catalogue, w[:100]) for k, w in asked.sets.items()}
            finally:
                catalogue.close()

    backends = list(measured)
    header = "".join(f" {b + ' p50':>15s} {b + ' p99':>15s}" for b in backends)
    for set_name, words in asked.sets.items():
        counts = hits[set_name]
        print(
            f"\n{set_name} words ({len(words)} queries; rows matching one: median "
            f"{statistics.median(counts):.0f}, max {max(counts)}), "
            f"{'CPU ' if CPU_TIME else ''}milliseconds"
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
