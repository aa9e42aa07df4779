"""Benchmark `tireg sync hf --download` against a plain sequential huggingface_hub loop.

A loopback Hub (tests/sources/servers/hub_server.py) serves N concept repos (default 1,000,
named after the real sd-concepts-library listing, each with a real torch-format
learned_embeds.bin) and adds a fixed latency to every request (default 20 ms), standing in for
the round trip to huggingface.co; both sides pay it on every request alike. The Hub runs in a
process of its own, as the real one runs on other machines: served from a thread of the
benchmark's process, its request handling would hold the same interpreter lock as the client
under test, and tireg's 32 worker threads would wait on the server's Python work (the
sequential baseline, one request at a time, hardly notices). It still shares this machine's
CPUs. Measured in the same run, each in a fresh cache:

* tireg: ``sync_hf(download=True)`` (listing with expand, facts, pinned downloads, sha256 checks,
  reading through the restricted pickle loader, catalogue writes), then a re-sync with nothing
  changed;
* baseline: the strongest plain sequential script: one listing with ``expand=["sha"]`` (the
  commits, as tireg's listing gives them), then ``hf_hub_download`` of each repo's embedding
  pinned to that commit, one after another; then the same loop again (a file cached under its
  commit needs no request). It fetches less than tireg (no trigger or concept-type files).
  The loop this bench used before, ``model_info`` per repo before each download (one request
  more per repo), is timed too, for comparison with earlier figures.

huggingface_hub is imported before either side is timed (tireg imports it on first use, the
baseline before its loop starts). tireg's sync shares a large download between worker processes
(:mod:`tireg.registry.sync_workers`), as ``tireg sync hf --download`` does; their CPU time is
reported beside this process's.

Both sides' CPU is reported as well (the wall times depend on what else the machine runs): the
benchmark process's CPU time during tireg's first sync, and the Hub process's meanwhile.

Run: .venv/bin/python bench/sync.py [--repos 1000] [--latency-ms 20] [--concurrency 32] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from multiprocessing.connection import Connection  # noqa: E402

from tests.sources.servers.http_server import running  # noqa: E402
from tests.sources.servers.hub_server import INDEX, HubServer, concept_repo  # noqa: E402


def build_hub(count: int) -> HubServer:
    entries = json.loads(INDEX.read_text())
    hub = HubServer(page_size=1000)
    for i in range(count):
        entry = entries[i % len(entries)]
        name = entry["model_name"] + ("" if i < len(entries) else f"-{i // len(entries)}")
        token = f"<{entry['token'] or name}>"
        hub.add(
            concept_repo(
                f"sd-concepts-library/{name}",
                token,
                entry["concept_type"] or "object",
                fmt="bin",
                images=0,
                seed=i,
            )
        )
    return hub


def serve_hub(count: int, latency_s: float, conn: Connection) -> None:
    """The Hub's process: serve ``count`` repos; answer "count", "clear", "cpu" and "stop"."""
    hub = build_hub(count)
    hub.http.latency = latency_s
    with running(hub.http):
        conn.send(hub.url)
        while (command := conn.recv()) != "stop":
            if command == "cpu":
                conn.send(time.process_time())
                continue
            conn.send(len(hub.http.requests))
            if command == "clear":
                hub.http.requests.clear()


class RemoteHub:
    """The benchmark's handle on the Hub process."""

    def __init__(self, count: int, latency_s: float) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=serve_hub, args=(count, latency_s, child), daemon=True
        )
        self.process.start()
        self.url: str = self.conn.recv()

    def requests(self, *, clear: bool = False) -> int:
        """Requests served since the last clear (then cleared, with ``clear``)."""
        self.conn.send("clear" if clear else "count")
        answer: int = self.conn.recv()
        return answer

    def cpu_seconds(self) -> float:
        """CPU time the Hub process has used so far (it shares this machine's cores)."""
        self.conn.send("cpu")
        answer: float = self.conn.recv()
        return answer

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(timeout=10)


@dataclass
class TiregTimes:
    first_s: float
    again_s: float
    downloaded: int
    cpu_s: float  # this process's CPU time during the first sync
    workers_cpu_s: float  # its worker processes' (tireg.registry.sync_workers)
    hub_cpu_s: float  # the Hub process's CPU time meanwhile


def time_tireg(hub: RemoteHub, home: Path, concurrency: int) -> TiregTimes:
    os.environ["TIREG_HOME"] = str(home)
    from tireg.db.session import open_catalogue
    from tireg.registry.remote import sync_hf

    catalogue = open_catalogue()
    try:
        hub_cpu = hub.cpu_seconds()
        cpu, workers = time.process_time(), _finished_children_cpu()
        start = time.perf_counter()
        first = sync_hf(catalogue, download=True, concurrency=concurrency, endpoint=hub.url)
        first_s = time.perf_counter() - start
        cpu, workers = time.process_time() - cpu, _finished_children_cpu() - workers
        hub_cpu = hub.cpu_seconds() - hub_cpu
        if first.failed:
            failed = [(o.locator, o.message) for o in first.failed[:3]]
            raise SystemExit(f"tireg sync failed for {len(first.failed)} repos: {failed}")
        start = time.perf_counter()
        again = sync_hf(catalogue, download=True, concurrency=concurrency, endpoint=hub.url)
        again_s = time.perf_counter() - start
        assert again.unchanged == first.listed and not again.downloaded
    finally:
        catalogue.close()
    return TiregTimes(first_s, again_s, len(first.downloaded), cpu, workers, hub_cpu)


def _finished_children_cpu() -> float:
    """CPU seconds of this process's children that have ended (a sync's workers; not the Hub,
    which runs until the end)."""
    now = os.times()
    return now.children_user + now.children_system


def time_baseline(url: str, cache: Path, *, model_info: bool = False) -> tuple[float, float]:
    """The sequential loop, twice: commits from the listing (or, with ``model_info``, from one
    ``model_info`` call per repo, the loop measured before), each embedding downloaded pinned."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    api = HfApi(endpoint=url)

    def loop() -> float:
        start = time.perf_counter()
        for model in api.list_models(author="sd-concepts-library", expand=["sha"]):
            sha = api.model_info(model.id).sha if model_info else model.sha
            hf_hub_download(
                model.id, "learned_embeds.bin", revision=sha, cache_dir=cache, endpoint=url
            )
        return time.perf_counter() - start

    return loop(), loop()


def one_run(hub: RemoteHub, folder: Path, run: int, args: argparse.Namespace) -> float:
    """Time both sides in fresh caches under ``folder``, print the figures and return the ratio
    of the first sync + download (baseline / tireg)."""
    os.environ["HF_HOME"] = str(folder / "hf-home")
    hub.requests(clear=True)
    ours = time_tireg(hub, folder / "tireg-home", args.concurrency)
    tireg_requests = hub.requests(clear=True)
    base_first, base_again = time_baseline(hub.url, folder / "baseline-cache")
    base_requests = hub.requests(clear=True)
    info_first, _ = time_baseline(hub.url, folder / "info-cache", model_info=True)
    print(
        f"\nrun {run}: repos: {args.repos}, added latency: {args.latency_ms:g} ms/request, "
        f"tireg concurrency: {args.concurrency}, cpus: {os.cpu_count()}, "
        f"load average: {os.getloadavg()[0]:.1f}, threads alive: {threading.active_count()}"
    )
    rows = [
        ("first sync + download (s)", ours.first_s, base_first),
        ("re-sync, nothing changed (s)", ours.again_s, base_again),
        ("  baseline with model_info (s)", ours.first_s, info_first),
    ]
    print(f"{'':34}{'tireg':>10}{'baseline':>10}{'ratio':>9}")
    for label, mine, theirs in rows:
        print(f"{label:34}{mine:10.2f}{theirs:10.2f}{theirs / mine:8.1f}x")
    print(f"{'HTTP requests, both runs':34}{tireg_requests:10d}{base_requests:10d}")
    per_repo = 1000 / args.repos
    print(
        f"CPU per repo, tireg's first sync: {ours.cpu_s * per_repo:.1f} ms in tireg's "
        f"process, {ours.workers_cpu_s * per_repo:.1f} ms in its workers, "
        f"{ours.hub_cpu_s * per_repo:.1f} ms in the Hub"
    )
    print(f"embeddings imported by tireg: {ours.downloaded}", flush=True)
    return base_first / ours.first_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=1, help="repeat both sides, fresh caches")
    args = parser.parse_args()
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TIREG_OFFLINE", "TIREG_DATABASE_URL"):
        os.environ.pop(name, None)
    # imported before either side is timed, as the baseline's timing never included it: tireg's
    # listing would otherwise pay for it (a quarter of a second) inside its first sync
    import huggingface_hub  # noqa: F401

    print(f"starting a local hub with {args.repos} repos ...", flush=True)
    hub = RemoteHub(args.repos, args.latency_ms / 1000)
    ratios: list[float] = []
    # every run in a folder of its own, all deleted at the end: on ext4 without a journal, a
    # file created within minutes of many deletions pays to skip each recently deleted inode
    # (fs/ext4/ialloc.c, find_inode_bit and recently_deleted), so deleting one run's 20,000
    # files would slow the next run's file creations, whichever side came next
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for run in range(1, args.runs + 1):
                ratios.append(one_run(hub, Path(tmp) / f"run-{run}", run, args))
        finally:
            hub.stop()
    if len(ratios) > 1:
        print(
            f"\nfirst sync + download, baseline / tireg over {len(ratios)} runs: "
            + ", ".join(f"{r:.1f}x" for r in ratios)
            + f" (median {statistics.median(ratios):.1f}x)"
        )


if __name__ == "__main__":
    main()
