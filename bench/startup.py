"""Start-up: how long ``tireg --help``, ``tireg list`` and ``tireg hash`` take as processes.

A command-line tool is started far more often than it works hard, so its start-up is what a user
feels most. Each command runs as a real process through the ``tireg`` console script beside this
Python, the way a user runs it, on a private ``TIREG_HOME`` holding the demo catalogue:

* ``tireg --help``;
* ``tireg list`` (catalogue already created and migrated: the steady state, which reads the
  SQLite file through ``sqlite3`` without importing SQLAlchemy: ``tireg/registry/listing.py``);
* ``tireg hash --refresh FILE`` of a small file (start-up plus a few microseconds of hashing);
* the floors, measured alongside: ``python -c pass`` (the interpreter alone) and a one-command
  typer app, asked for ``--help`` and run with one option (the framework tireg is built on, and
  the strongest alternative: a CLI written with typer cannot start faster; running a command
  costs more than ``--help`` because typer then converts the options through pydantic).

Rounds are interleaved (every variant once per round) so that load on a shared machine hits them
alike; each figure is the best of ``--repeat`` rounds (the median beside it), wall-clock and CPU
(user + system) of the child. Then one run per command under ``-X importtime`` lists the modules
that cost the most and which heavy packages (SQLAlchemy, requests, huggingface_hub, cryptography,
numpy, torch...) the command loaded. ``--baseline-src DIR`` also times another checkout's ``src``
(say, the main branch's) in the same rounds, for a before/after ratio.

On a shared, loaded machine wall and CPU times drift by several times between runs (other
processes evict the caches and share the cores); ``--instructions`` also counts the instructions
each process executes under valgrind's callgrind, once per variant: slow (about 50x), but the
same count on every run, so a before/after ratio holds whatever else the machine is doing.

Run: ``.venv/bin/python bench/startup.py [--repeat 15] [--baseline-src /tmp/main/src]
[--instructions]``
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIREG = Path(sys.executable).with_name("tireg")
HEAVY = (
    "sqlalchemy",
    "alembic",
    "pydantic",  # typer (0.29) converts a command's options through it, so every run loads it
    "requests",
    "huggingface_hub",
    "cryptography",
    "numpy",
    "PIL",
    "safetensors",
    "torch",
    "diffusers",
    "transformers",
)
TYPER_HELLO = (
    "import typer\n\n"
    "def hello(name: str = typer.Option('world', help='Who.')) -> None:\n"
    "    'Say hello.'\n    print(name)\n\n"
    "typer.run(hello)\n"
)


@dataclass
class Variant:
    """One process to start: its argv, environment and the times measured for it."""

    label: str
    argv: list[str]
    env: dict[str, str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(self.argv, env=self.env, check=True, capture_output=True)
        self.wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    def instructions(self) -> int:
        """Instructions the process executes, counted by callgrind (deterministic)."""
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *self.argv]
        err = subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True)
        (count,) = re.findall(r"Collected : (\d+)", err.stderr)
        return int(count)

    def importtime(self) -> list[tuple[str, int, int]]:
        """(module, self µs, cumulative µs) for every import, from ``-X importtime``."""
        env = {**self.env, "PYTHONPROFILEIMPORTTIME": "1"}
        err = subprocess.run(self.argv, env=env, check=True, capture_output=True, text=True).stderr
        rows = []
        for line in err.splitlines():
            if line.startswith("import time:") and "|" in line and "self [us]" not in line:
                own, total, name = line[len("import time:") :].split("|")
                rows.append((name[1:].rstrip(), int(own), int(total)))  # indent = depth
        return rows


def report_imports(variant: Variant, top: int) -> None:
    rows = variant.importtime()
    loaded = {name.strip().split(".")[0] for name, _, _ in rows}
    heavy = [pkg for pkg in HEAVY if pkg in loaded]
    roots = sorted((r for r in rows if not r[0].startswith(" ")), key=lambda r: -r[2])
    total = sum(own for _, own, _ in rows)
    print(f"\n{variant.label}: {len(rows)} modules imported, {total / 1e3:.0f} ms in all")
    print(f"  heavy packages loaded: {', '.join(heavy) or 'none'}")
    for name, _, cumulative in roots[:top]:
        print(f"  {cumulative / 1e3:7.1f} ms  {name.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--top", type=int, default=8, help="importers listed per command")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src to compare")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions (needs valgrind)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tireg-bench-startup-"))
    try:
        small = work / "small.safetensors"
        shutil.copyfile(REPO / "examples" / "embeddings" / "demo-xl.safetensors", small)
        hello = work / "hello.py"
        hello.write_text(TYPER_HELLO, encoding="utf-8")
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        python = sys.executable
        floors = [
            Variant("python -c pass", [python, "-c", "pass"], base_env),
            Variant("typer one-command app --help", [python, str(hello), "--help"], base_env),
            Variant("typer one-command app, run", [python, str(hello), "--name", "x"], base_env),
        ]
        trees = [("tireg", None)]
        if args.baseline_src is not None:
            trees.append(("baseline", args.baseline_src.resolve()))
        commands = {
            "--help": ["--help"],
            "list": ["list"],
            "hash": ["hash", "--refresh", str(small)],
        }
        ours: dict[tuple[str, str], Variant] = {}
        for tree, src in trees:
            env = {**base_env, "TIREG_HOME": str(work / f"home-{tree}")}
            if src is not None:
                env["PYTHONPATH"] = str(src)  # ahead of the editable install's .pth
            demo = str(REPO / "examples" / "embeddings")
            subprocess.run([str(TIREG), "add", demo], env=env, check=True, capture_output=True)
            for command, argv in commands.items():
                ours[tree, command] = Variant(f"{tree} {command}", [str(TIREG), *argv], env)

        variants = floors + list(ours.values())
        for variant in variants:  # warm the page cache and the catalogue once, untimed
            variant.run()
            variant.wall.clear()
            variant.cpu.clear()
        for _ in range(args.repeat):
            for variant in variants:
                variant.run()

        print(f"best of {args.repeat} interleaved rounds (median); load average {os.getloadavg()}")
        print(f"{'process':34} {'wall ms':>16} {'cpu ms':>16}")
        for v in variants:
            print(
                f"{v.label:34} {min(v.wall) * 1e3:7.0f} ({statistics.median(v.wall) * 1e3:6.0f})"
                f" {min(v.cpu) * 1e3:7.0f} ({statistics.median(v.cpu) * 1e3:6.0f})"
            )
        floor, typer_help, typer_run = (min(v.wall) for v in floors)
        print("\nratios of best wall times (typer app: its --help for --help, else its run):")
        for command in commands:
            t = min(ours["tireg", command].wall)
            framework = typer_help if command == "--help" else typer_run
            line = (
                f"  tireg {command:7} {t * 1e3:5.0f} ms = python floor + {(t - floor) * 1e3:4.0f}"
                f" ms; typer app / tireg: {framework / t:4.2f}x"
            )
            if args.baseline_src is not None:
                line += f"; baseline / tireg: {min(ours['baseline', command].wall) / t:4.2f}x"
            print(line)

        if args.instructions:
            print("\ninstructions executed (callgrind, millions):")
            counts = {v.label: v.instructions() for v in variants}
            for v in variants:
                print(f"  {v.label:34} {counts[v.label] / 1e6:8.0f}")
            if args.baseline_src is not None:
                for command in commands:
                    before = counts[ours["baseline", command].label]
                    after = counts[ours["tireg", command].label]
                    print(f"  baseline / tireg, {command}: {before / after:4.2f}x")

        for command in commands:
            report_imports(ours["tireg", command], args.top)
        if args.baseline_src is not None:
            for command in commands:
                report_imports(ours["baseline", command], args.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
