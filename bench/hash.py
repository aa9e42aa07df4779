"""Checkpoint hashing: tireg's one-pass all-hashes vs sha256sum and openssl, same file and run.

A 2 GiB safetensors file (random data, so nothing compresses or dedupes) is written to /tmp, read
once to warm the page cache, then hashed by:

* tireg, one pass: SHA-256 + AutoV2 + A1111 old hash + CRC32 + BLAKE3 + the addnet hash (a second
  full SHA-256 over everything after the header), no cache;
* tireg, one pass, same bytes but not safetensors (no addnet hash): what a ``.ckpt`` costs;
* ``sha256sum`` (coreutils) and ``openssl dgst -sha256`` (SHA-NI), a single SHA-256 each;
* tireg again through the hash cache (the second call on an unchanged file).

Each timing is the best of ``--repeat`` runs (the median is printed too). Ratios are wall-clock
time of the alternative over tireg's: above 1 means tireg is faster although it computes more.
Run: ``.venv/bin/python bench/hash.py [--size-gib 2] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tireg.checkpoints import hash_file
from tireg.checkpoints.hash_cache import HashCache

CHUNK = 64 << 20


def write_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of exactly ``size`` bytes: one U8 tensor of random bytes."""
    head = b""
    for _ in range(3):  # the header's own length changes the tensor's byte count; settle it
        n = size - 8 - len(head)
        head = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        head += b" " * (-len(head) % 8)
    n = size - 8 - len(head)
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(head)) + head)
        left = n
        while left:
            block = os.urandom(min(CHUNK, left))
            out.write(block)
            left -= len(block)


def warm(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        while f.readinto(buf):
            pass


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def run_tool(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = int(args.size_gib * (1 << 30))

    workdir = Path(tempfile.mkdtemp(prefix="tireg-bench-hash-", dir="/tmp"))
    os.environ["TIREG_HOME"] = str(workdir / "home")  # a private hash cache
    try:
        st = workdir / "model.safetensors"
        plain = workdir / "model.ckpt"
        print(f"writing {size / 2**30:.1f} GiB test files in {workdir} ...", flush=True)
        write_safetensors(st, size)
        shutil.copyfile(st, plain)
        with plain.open("r+b") as f:  # same bytes but an invalid header: no addnet hash
            f.write(b"\xff" * 8)
        for path in (st, plain):
            warm(path)

        rows: list[tuple[str, float, float]] = []
        best, med, ours = timed(lambda: hash_file(st), args.repeat)
        rows.append(("tireg one pass, all hashes incl. addnet", best, med))
        best_plain, med_plain, ours_plain = timed(lambda: hash_file(plain), args.repeat)
        rows.append(("tireg one pass, all hashes, no addnet", best_plain, med_plain))
        t_sum, m_sum, out_sum = timed(lambda: run_tool(["sha256sum", str(st)]), args.repeat)
        rows.append(("sha256sum (coreutils)", t_sum, m_sum))
        t_ssl, m_ssl, out_ssl = timed(
            lambda: run_tool(["openssl", "dgst", "-sha256", "-r", str(st)]), args.repeat
        )
        rows.append(("openssl dgst -sha256", t_ssl, m_ssl))

        with HashCache() as cache:
            cache.hashes(st)  # store the entry (already hashed above, but not cached there)

        def cached() -> object:
            with HashCache() as cache:
                result = cache.hashes(st)
            assert result.cached
            return result.hashes

        t_hit, m_hit, hit = timed(cached, max(args.repeat, 5))

        sha = ours.sha256  # type: ignore[attr-defined]
        assert out_sum.split()[0] == sha, "sha256sum disagrees"
        assert out_ssl.split()[0] == sha, "openssl disagrees"
        assert hit == ours and ours_plain.addnet is None  # type: ignore[attr-defined]

        print(f"\nfile: {size:,} bytes, page cache warm; best of {args.repeat} (median)")
        print(f"{'method':44} {'seconds':>16} {'GB/s':>7}")
        for name, b, m in rows:
            print(f"{name:44} {b:7.3f} ({m:6.3f}) {size / b / 1e9:7.2f}")
        print(f"{'tireg cached second call':44} {t_hit * 1e3:6.2f} ms ({m_hit * 1e3:.2f})")
        print("\nratios (alternative's time / tireg's time; > 1 = tireg faster):")
        for label, ours_t in (
            ("all hashes incl. addnet", best),
            ("all hashes, no addnet", best_plain),
        ):
            print(
                f"  tireg {label:26} vs sha256sum: {t_sum / ours_t:5.2f}x"
                f"   vs openssl: {t_ssl / ours_t:5.2f}x"
            )
        print(
            f"  cached second call vs sha256sum: {t_sum / t_hit:,.0f}x"
            f"   vs openssl: {t_ssl / t_hit:,.0f}x"
        )
        print(f"\nsha256 {sha} (all three agree)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
