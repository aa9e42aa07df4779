"""Benchmark `tireg sync hf --download` against a plain sequential huggingface_hub loop.

A loopback Hub (tests/sources/servers/hub_server.py) serves N concept repos (default 1,000,
named after the real sd-concepts-library listing, each with a real torch-format
learned_embeds.bin) and adds a fixed latency to every request (default 20 ms), standing in for
the round trip to huggingface.co. Measured in the same run, each in a fresh cache:

* tireg: ``sync_hf(download=True)`` (listing with expand, facts, pinned downloads, sha256 checks,
  reading through the restricted pickle loader, catalogue writes), then a re-sync with nothing
  changed;
* baseline: for each listed repo, ``model_info`` + ``hf_hub_download`` one after another (what a
  simple script does), then the same loop again (huggingface_hub re-validates every cached file
  with a HEAD request).

Run: .venv/bin/python bench/sync.py [--repos 1000] [--latency-ms 20] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

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


def time_tireg(hub: HubServer, home: Path, concurrency: int) -> tuple[float, float, int]:
    os.environ["TIREG_HOME"] = str(home)
    from tireg.db.session import open_catalogue
    from tireg.registry.remote import sync_hf

    catalogue = open_catalogue()
    try:
        start = time.perf_counter()
        first = sync_hf(catalogue, download=True, concurrency=concurrency, endpoint=hub.url)
        first_s = time.perf_counter() - start
        if first.failed:
            raise SystemExit(f"tireg sync failed for {len(first.failed)} repos: {first.failed[:3]}")
        start = time.perf_counter()
        again = sync_hf(catalogue, download=True, concurrency=concurrency, endpoint=hub.url)
        again_s = time.perf_counter() - start
        assert again.unchanged == first.listed and not again.downloaded
    finally:
        catalogue.close()
    return first_s, again_s, len(first.downloaded)


def time_baseline(hub: HubServer, cache: Path) -> tuple[float, float]:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    api = HfApi(endpoint=hub.url)

    def loop() -> float:
        start = time.perf_counter()
        for model in api.list_models(author="sd-concepts-library"):
            info = api.model_info(model.id)
            hf_hub_download(
                model.id, "learned_embeds.bin", revision=info.sha, cache_dir=cache, endpoint=hub.url
            )
        return time.perf_counter() - start

    return loop(), loop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TIREG_OFFLINE", "TIREG_DATABASE_URL"):
        os.environ.pop(name, None)

    print(f"building a local hub with {args.repos} repos ...", flush=True)
    hub = build_hub(args.repos)
    hub.http.latency = args.latency_ms / 1000
    with running(hub.http), tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HOME"] = str(Path(tmp) / "hf-home")
        hub.http.requests.clear()
        first, again, downloaded = time_tireg(hub, Path(tmp) / "tireg-home", args.concurrency)
        tireg_requests = len(hub.http.requests)
        hub.http.requests.clear()
        base_first, base_again = time_baseline(hub, Path(tmp) / "baseline-cache")
        base_requests = len(hub.http.requests)

    print(
        f"\nrepos: {args.repos}, added latency: {args.latency_ms:g} ms/request, "
        f"tireg concurrency: {args.concurrency}, cpus: {os.cpu_count()}, "
        f"threads alive: {threading.active_count()}"
    )
    rows = [
        ("first sync + download (s)", first, base_first),
        ("re-sync, nothing changed (s)", again, base_again),
    ]
    print(f"{'':34}{'tireg':>10}{'baseline':>10}{'ratio':>9}")
    for label, ours, theirs in rows:
        print(f"{label:34}{ours:10.2f}{theirs:10.2f}{theirs / ours:8.1f}x")
    print(f"{'HTTP requests, both runs':34}{tireg_requests:10d}{base_requests:10d}")
    print(f"embeddings imported by tireg: {downloaded}")


if __name__ == "__main__":
    main()
