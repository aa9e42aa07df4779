"""Start-up stays light: which modules ``--help``, ``list`` and ``hash`` load, asserted by name.

Seconds are not asserted (they depend on the machine); the module set is what decides them. A
command module that imports the catalogue, the sources or numpy at the top would put their
import cost (SQLAlchemy alone is most of a second of CPU) on every ``tireg`` invocation, even
``--help``. ``bench/startup.py`` measures the seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT
from tireg.cli.app import app

#: what the sources, the converters and the ML commands pull in; never needed to start
SOURCES_AND_DATA = {"requests", "huggingface_hub", "cryptography", "urllib3", "numpy", "PIL"}
ML = {"torch", "diffusers", "transformers", "accelerate"}
CATALOGUE = {"sqlalchemy", "alembic"}
#: what typer 0.29 imports to validate every parameter of a run (pyproject.toml says why not)
VALIDATION = {"pydantic", "pydantic_core"}

_PROBE = """
import json, sys
from tireg.cli.app import main
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules(*argvs: list[str]) -> set[str]:
    """Every module imported by a fresh process that runs these command lines one after the
    other (in-process, so the parent's imports do not count)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argvs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def _loaded(*argvs: list[str]) -> tuple[set[str], set[str]]:
    """Top-level packages and tireg modules imported by running these command lines."""
    modules = _modules(*argvs)
    return {m.split(".")[0] for m in modules}, {m for m in modules if "tireg." in m}


def _commands() -> list[list[str]]:
    """Every command and subcommand path of the app, as typer registered them."""
    paths: list[list[str]] = [[c.name or ""] for c in app.registered_commands]
    for group in app.registered_groups:
        sub = group.typer_instance
        prefix = group.name or sub.info.name
        assert isinstance(prefix, str)
        paths += [[prefix, c.name or ""] for c in sub.registered_commands]
    assert all(all(p) for p in paths), "every command is registered under a name"
    return paths


#: plain data the help text needs: the trainer's option choices and their defaults' sources
#: (``tireg.train``'s ``__init__`` holds only a docstring; torch comes with its other modules)
OPTION_DATA = {"tireg.train", "tireg.train.settings"}


def test_every_help_imports_neither_the_catalogue_nor_the_sources_nor_ml() -> None:
    help_lines = [["--help"], *([*path, "--help"] for path in _commands())]
    packages, ours = _loaded(*help_lines)
    assert not packages & (CATALOGUE | SOURCES_AND_DATA | ML)
    assert {m for m in ours if not m.startswith("tireg.cli")} <= {"tireg.errors", *OPTION_DATA}


def test_list_reads_the_catalogue_without_sqlalchemy_or_anything_else_heavy() -> None:
    packages, _ = _loaded(["add", str(REPO_ROOT / "examples" / "embeddings")])
    assert "numpy" in packages  # reading embeddings does need the converters
    # a second process, on the catalogue the first one created: what `tireg list` costs. A
    # SQLite catalogue at head is read through sqlite3 (tireg.registry.listing): no ORM, no
    # mappers configured, not even SQLAlchemy's Core, whose import alone costs more than the rest
    modules = _modules(["list"], ["list", "--json"], ["list", "--family", "sd1", "--tag", "x"])
    assert "sqlalchemy.orm" not in modules
    packages = {m.split(".")[0] for m in modules}
    assert not packages & (CATALOGUE | SOURCES_AND_DATA | ML | VALIDATION)
    ours = {m for m in modules if "tireg." in m}
    assert not {m for m in ours if m.startswith(("tireg.sources", "tireg.converters"))}
    assert "tireg.db.schema" not in ours and "tireg.registry.query" not in ours


#: what rich loads only to draw a progress bar (a live display, spinners)
PROGRESS = {"rich.progress", "rich.live"}


def test_help_and_list_draw_no_progress_bar_so_load_none(tireg_cli) -> None:  # type: ignore[no-untyped-def]
    assert tireg_cli("add", REPO_ROOT / "examples" / "embeddings").code == 0
    assert not _modules(["--help"], ["list"], ["list", "--json"]) & PROGRESS


def test_hash_imports_only_the_checkpoints_package(tmp_path: Path) -> None:
    file = tmp_path / "model.ckpt"
    file.write_bytes(b"not really a checkpoint" * 1000)
    packages, ours = _loaded(["hash", str(file)], ["hash", "--json", str(file)])
    assert "blake3" in packages
    assert not packages & (CATALOGUE | SOURCES_AND_DATA | ML)
    assert {m for m in ours if not m.startswith(("tireg.cli", "tireg.checkpoints"))} <= {
        "tireg.config",
        "tireg.errors",
        "tireg.files",  # a leaf of the standard library: detect opens only regular files with it
        "tireg.progress",  # the progress callback types: three aliases, no imports
        *OPTION_DATA,
    }
