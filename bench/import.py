"""How fast ``tireg add`` imports: files per second for 2,000 mixed-format files.

Measured in one run, on fresh catalogues:

* library: :func:`tireg.registry.importer.add_paths` into a fresh catalogue (cold: every file new);
* again: the same folder a second time (warm: every file already known);
* CLI: ``python -m tireg add`` as a real process, fresh catalogue (includes start-up);
* alternative: only reading every file with :func:`tireg.converters.read_file` (no hashing,
  store or catalogue) -- the floor the import cost is compared with;
* with ``--against SRC`` (another checkout's ``src`` folder, e.g. the code the issue measured:
  ``git worktree add /tmp/before 7e5d166``): that tree's ``add_paths`` and this tree's, each in
  a fresh process on a fresh catalogue, alternating ``--repeat`` times, and the ratio of the
  best runs -- the same-run baseline issue 9 §5 asks the figure to come with.

The generated files are flushed to disk (``os.sync``) before anything is timed: a user's folder
is at rest, and otherwise the writeback of the freshly written files would be charged to
whichever measurement fsyncs first.

Each line gives wall-clock files/s and the CPU milliseconds per file of this process and its
threads (for the CLI line: the child's), which a machine shared with other work inflates far less
than the wall clock. Issue 9 §5 asks for >= 2x the 317 files/s measured before batching.

Run: ``.venv/bin/python bench/import.py [--files N]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.registry.make_files import FORMATS, write_mixed  # noqa: E402

from tireg.converters import read_file  # noqa: E402
from tireg.db import open_catalogue  # noqa: E402
from tireg.registry.importer import add_paths  # noqa: E402


def timed(label: str, count: int, action) -> float:  # type: ignore[no-untyped-def]
    start, cpu = time.perf_counter(), _cpu()
    action()
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    print(
        f"{label:<44} {seconds:7.2f} s  {count / seconds:8.0f} files/s"
        f"  {cpu * 1e3 / count:6.2f} ms CPU/file"
    )
    return seconds


def _cpu() -> float:
    """CPU seconds of this process, its threads and its finished children."""
    now = os.times()
    return now.user + now.system + now.children_user + now.children_system


#: run by a child process: import the ``tireg`` under argv[1], time one add_paths of argv[2]
#: into a fresh catalogue under argv[3]; print wall seconds and CPU seconds
_CHILD = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ["TIREG_HOME"] = sys.argv[3]
from tireg.db import open_catalogue
from tireg.registry.importer import add_paths
with open_catalogue() as cat:
    start, cpu = time.perf_counter(), os.times()
    add_paths(cat, [sys.argv[2]])
    wall, now = time.perf_counter() - start, os.times()
print(wall, now.user + now.system - cpu.user - cpu.system)
"""


def compare(trees: dict[str, Path], folder: Path, root: Path, count: int, repeat: int) -> None:
    """Time each tree's ``add_paths`` in its own process, alternating; print best and median."""
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in trees}
    for attempt in range(repeat):
        for label, src in trees.items():
            home = root / f"home-{label}-{attempt}"
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(src), str(folder), str(home)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            runs[label].append((float(out[0]), float(out[1])))
    for label, timings in runs.items():
        walls = sorted(wall for wall, _ in timings)
        cpu = min(cpu for _, cpu in timings)
        print(
            f"add_paths in a fresh process: {label:<12} best {count / walls[0]:6.0f} files/s, "
            f"median {count / walls[len(walls) // 2]:6.0f}  {cpu * 1e3 / count:6.2f} ms CPU/file"
        )
    best = {label: min(wall for wall, _ in timings) for label, timings in runs.items()}
    this, other = best["this tree"], best["against"]
    print(f"ratio, this tree / --against, best of {repeat}: {other / this:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument(
        "--against", type=Path, help="another checkout's src folder, timed in the same run"
    )
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs for --against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tireg-bench-") as tmp:
        root = Path(tmp)
        folder = root / "embeddings"
        files = write_mixed(folder, args.files, seed=1, per_folder=200)
        kinds = Counter(p.name.split(".", 1)[1] for p in files)
        print(f"{len(files)} files, formats {FORMATS}: {dict(kinds)}")
        size = sum(p.stat().st_size for p in files)
        print(f"{size / 1e6:.1f} MB in all")
        os.sync()  # at rest, as a user's folder is (see the module docstring)

        floor = timed(
            "read_file only (the floor)", len(files), lambda: [read_file(p) for p in files]
        )

        os.environ["TIREG_HOME"] = str(root / "home-lib")
        with open_catalogue() as cat:
            report = {}

            def cold() -> None:
                report["first"] = add_paths(cat, [folder])

            lib = timed("add_paths, fresh catalogue", len(files), cold)
            assert report["first"].counts()["imported"] == len(files), report["first"].counts()
            timed(
                "add_paths again (all already known)", len(files), lambda: add_paths(cat, [folder])
            )

        env = {**os.environ, "TIREG_HOME": str(root / "home-cli")}

        def cli() -> None:
            subprocess.run(
                [sys.executable, "-m", "tireg", "add", str(folder), "--json"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )

        timed("python -m tireg add, fresh catalogue", len(files), cli)
        print(f"import / read-only time ratio: {lib / floor:.2f}x")
        if args.against is not None:
            trees = {"this tree": REPO / "src", "against": args.against.resolve()}
            compare(trees, folder, root, len(files), args.repeat)


if __name__ == "__main__":
    main()
