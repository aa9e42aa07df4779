"""Checkpoint hashing: tireg's one-pass all-hashes vs sha256sum and openssl, same file and run.

A 1 GiB safetensors file (random data, so nothing compresses or dedupes) and a copy that is not
safetensors are written to /tmp, read once to warm the page cache, then hashed by:

* ``tireg hash --refresh FILE`` as a user runs it, a whole process, start-up included: SHA-256 +
  AutoV2 + A1111 old hash + CRC32 + BLAKE3, plus for the safetensors file the addnet hash (a
  second full SHA-256 over everything after the header);
* the same hashes in-process (:func:`tireg.checkpoints.hash_file`), without the start-up;
* ``sha256sum`` (coreutils) and ``openssl dgst -sha256``, one SHA-256 each, whole processes; openssl
  is the strongest alternative (OpenSSL's SHA-256 is what hashlib calls too);
* tireg through the hash cache (the second call on an unchanged file), in-process.

The rounds are interleaved (every method once per round) so that load on a shared machine hits
them alike; each timing is the best of ``--repeat`` rounds, the median beside it. Ratios are the
alternative's wall-clock time over tireg's: above 1 means tireg is faster although it computes
more. The target for the end-to-end command is openssl / tireg >= 0.8 on the plain file.
Run: ``.venv/bin/python bench/hash.py [--size-gib 1] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tireg.checkpoints import FileHashes, hash_file
from tireg.checkpoints.hash_cache import HashCache

CHUNK = 64 << 20
TIREG = Path(sys.executable).with_name("tireg")


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


@dataclass
class Method:
    """One way of hashing, timed once per round; ``result`` keeps its last output."""

    label: str
    action: Callable[[], object]
    times: list[float] = field(default_factory=list)
    result: object = None

    def run(self) -> None:
        start = time.perf_counter()
        self.result = self.action()
        self.times.append(time.perf_counter() - start)

    @property
    def best(self) -> float:
        return min(self.times)


def run_tool(argv: list[str | Path]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def tireg_command(path: Path) -> str:
    """``tireg hash --refresh PATH`` as a process, printing its table as for a user."""
    return run_tool([TIREG, "hash", "--refresh", path])


def cached(path: Path) -> FileHashes:
    with HashCache() as cache:
        result = cache.hashes(path)
    assert result.cached
    return result.hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    size = int(args.size_gib * (1 << 30))

    workdir = Path(tempfile.mkdtemp(prefix="tireg-bench-hash-", dir="/tmp"))
    os.environ["TIREG_HOME"] = str(workdir / "home")  # a private hash cache, for the children too
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
        with HashCache() as cache:
            cache.hashes(st)  # the entry the cached call finds

        e2e_plain = Method("tireg hash FILE (process), no addnet", lambda: tireg_command(plain))
        e2e_st = Method("tireg hash FILE (process), incl. addnet", lambda: tireg_command(st))
        lib_plain = Method("hash_file in-process, no addnet", lambda: hash_file(plain))
        lib_st = Method("hash_file in-process, incl. addnet", lambda: hash_file(st))
        openssl = Method(
            "openssl dgst -sha256 (process)",
            lambda: run_tool(["openssl", "dgst", "-sha256", "-r", plain]),
        )
        sha256sum = Method("sha256sum (process)", lambda: run_tool(["sha256sum", plain]))
        hit = Method("tireg cached second call, in-process", lambda: cached(st))
        methods = [e2e_plain, openssl, lib_plain, sha256sum, e2e_st, lib_st, hit]
        for _ in range(args.repeat):
            for method in methods:
                method.run()

        ours = lib_plain.result
        assert isinstance(ours, FileHashes) and ours.addnet is None
        assert lib_st.result == hit.result
        for command, library in ((e2e_plain, lib_plain), (e2e_st, lib_st)):
            assert isinstance(library.result, FileHashes)
            shown = str(command.result)
            assert library.result.autov2 in shown and library.result.crc32 in shown, shown
        assert str(openssl.result).split()[0] == ours.sha256, "openssl disagrees"
        assert str(sha256sum.result).split()[0] == ours.sha256, "sha256sum disagrees"

        print(f"\nfile: {size:,} bytes, page cache warm; {os.cpu_count()} CPUs")
        print(f"best of {args.repeat} interleaved rounds (median); load {os.getloadavg()}")
        print(f"{'method':42} {'seconds':>16} {'GB/s':>7}")
        for m in methods[:-1]:
            med = statistics.median(m.times)
            print(f"{m.label:42} {m.best:7.3f} ({med:6.3f}) {size / m.best / 1e9:7.2f}")
        print(f"{hit.label:42} {hit.best * 1e3:6.2f} ms ({statistics.median(hit.times) * 1e3:.2f})")

        print("\nratios (alternative's time / tireg's time; > 1 = tireg faster):")
        for m in (e2e_plain, e2e_st, lib_plain, lib_st):
            print(
                f"  {m.label:42} vs openssl: {openssl.best / m.best:5.2f}x"
                f"   vs sha256sum: {sha256sum.best / m.best:5.2f}x"
            )
        print(f"  {hit.label:42} vs openssl: {openssl.best / hit.best:,.0f}x")
        start_up = e2e_plain.best - lib_plain.best
        print(f"\ntireg hash start-up and output: {start_up * 1e3:.0f} ms (process - in-process)")
        print(f"sha256 {ours.sha256} (tireg, openssl and sha256sum agree)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
