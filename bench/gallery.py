"""Gallery page latency on a 100,000-embedding catalogue, against the listing call beneath it.

Builds a real catalogue (migrations, FTS5 indexes) in a temporary TIREG_HOME with the rows
bench/search.py uses (``bench/_catalogue_rows.py``), words drawn evenly from a smaller vocabulary,
and a preview picture recorded for every other embedding (20 real PNG files shared between
them). Then times, in one process and on the same table, what ``tireg serve`` does for ``GET /``
through Flask's test client (routing, the registry calls, the preview lookup, the Jinja2
template: the whole response, 100 cards) against the floor:
:func:`tireg.registry.query.list_embeddings` (or :func:`~tireg.registry.query.search`) alone, for:

* a page of the catalogue by name (random pages among the first 100);
* a family filter; a tag filter; a search for a word;

and the thumbnails: the first request of a picture (Pillow scales it once) against later ones
(from ``cache/thumbs``).

Usage: .venv/bin/python bench/gallery.py [--rows 100000] [--requests 300] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import text

from _catalogue_rows import generate, load


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


#: measure CPU time instead of wall-clock (``--cpu``)
CPU_TIME = False


def _timed(run: Callable[[int], object], count: int) -> list[float]:
    """Milliseconds per request: wall-clock, or with ``--cpu`` this process's CPU time (the
    gallery and SQLite both run in it), which a machine shared with other work leaves exact."""
    clock = time.process_time if CPU_TIME else time.perf_counter
    for i in range(min(10, count)):  # warm the page, statement and template caches
        run(i)
    samples = []
    for i in range(count):
        start = clock()
        run(i)
        samples.append((clock() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--cpu", action="store_true", help="time this process's CPU, not the clock")
    args = parser.parse_args()
    global CPU_TIME
    CPU_TIME = args.cpu

    home = Path(tempfile.mkdtemp(prefix="tireg-bench-gallery-"))
    os.environ["TIREG_HOME"] = str(home)
    from tireg.db.session import open_catalogue
    from tireg.registry import query
    from tireg.registry.query import Filters
    from tireg.serve.app import create_app, settle

    rng = np.random.default_rng(0)
    pictures = []
    for k in range(20):
        path = home / "pictures" / f"p{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(path)
        pictures.append(str(path))

    rows, _, _ = generate(
        args.rows, vocab_size=2_000, description_words=6, zipf=False, pictures=pictures
    )
    catalogue = open_catalogue()
    build_s = load(catalogue, rows)

    app = create_app(catalogue)
    settle(app)  # as `tireg serve` does
    client = app.test_client()
    last = max(1, min(100, args.rows // 300))  # a family filter keeps a third of the rows
    pages = rng.integers(1, last + 1, size=args.requests).tolist()
    words = [rows.vocab[i] for i in rng.integers(0, len(rows.vocab), size=args.requests)]
    tagged = rng.choice(sorted({t["tag"] for t in rows.tags}), size=args.requests).tolist()

    def get(url: str) -> None:
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code)
        assert answer.data.count(b'class="card"') > 0, url

    def listing(filters: Filters, page: int) -> None:
        with catalogue.reading() as session:
            query.list_embeddings(session, filters, limit=101, offset=(page - 1) * 100)

    def searching(word: str) -> None:
        with catalogue.reading() as session:
            query.search(session, word, limit=100)

    sdxl = Filters(family="sdxl")
    cases: dict[str, tuple[Callable[[int], object], Callable[[int], object]]] = {
        "page N by name": (
            lambda i: listing(Filters(), pages[i]),
            lambda i: get(f"/?page={pages[i]}"),
        ),
        "family=sdxl, page N": (
            lambda i: listing(sdxl, pages[i]),
            lambda i: get(f"/?family=sdxl&page={pages[i]}"),
        ),
        "tag=WORD": (
            lambda i: listing(Filters(tag=tagged[i]), 1),
            lambda i: get(f"/?tag={tagged[i]}"),
        ),
        "search WORD (100 best)": (
            lambda i: searching(words[i]),
            lambda i: get(f"/?q={words[i]}"),
        ),
    }
    size_mb = (home / "catalogue.sqlite").stat().st_size / 1e6
    print(f"catalogue: {args.rows:,} embeddings, {size_mb:.0f} MB, built in {build_s:.1f} s")
    clock = "CPU time" if CPU_TIME else "wall-clock"
    print(f"{args.requests} requests each, {clock}; a page is 100 cards (fewer if fewer match)\n")
    print(f"  {'page':26s} {'floor p50':>10s} {'p99':>8s} {'page p50':>9s} {'p99':>8s}")
    for label, (floor, page) in cases.items():
        f50, f99 = _percentiles(_timed(floor, args.requests))
        p50, p99 = _percentiles(_timed(page, args.requests))
        print(f"  {label:26s} {f50:10.2f} {f99:8.2f} {p50:9.2f} {p99:8.2f}   ms", flush=True)

    with catalogue.reading() as session:
        ids = session.scalars(text("SELECT id FROM previews ORDER BY id LIMIT 20")).all()
    first, cached = [], []
    for preview_id in ids:
        for into in (first, cached):
            start = time.perf_counter()
            answer = client.get(f"/thumb/{preview_id}")
            assert answer.status_code == 200, answer.data.decode()[-300:]
            into.append((time.perf_counter() - start) * 1000)

    print(
        f"\nthumbnail (512x512 PNG): first request p50 {statistics.median(first):.1f} ms, "
        f"cached p50 {statistics.median(cached):.2f} ms"
    )
    catalogue.close()


if __name__ == "__main__":
    main()
