"""``tireg convert`` whose writes fail partway: a real process under RLIMIT_FSIZE, so the kernel
refuses (EFBIG) every write past the limit. Nothing may be published, no temporary may stay
behind, a file that was there before must be left as it was, and the error is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tireg.converters import Embedding, OutputWriteError, convert, read_file, write_file
from tireg.files import TMP_SUFFIX

resource = pytest.importorskip("resource")  # POSIX only

#: the largest file the convert process may write; the inputs below straddle it
LIMIT = 8192


def _embedding(name: str, n: int) -> Embedding:
    rng = np.random.default_rng(n)
    return Embedding(name=name, vectors={"clip_l": rng.standard_normal((n, 768), np.float32)})


#: sets the limit inside the child, then runs ``python -m tireg`` (no preexec_fn: forking a
#: threaded pytest process to run Python code is unsafe)
_CHILD = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, ({0}, {0})); "
    "sys.argv = ['tireg', *sys.argv[1:]]; "
    "runpy.run_module('tireg', run_name='__main__', alter_sys=True)"
)


def _convert_limited(*args: object) -> subprocess.CompletedProcess[str]:
    """``tireg convert ARGS`` in a process whose files are capped at LIMIT bytes (Python ignores
    SIGXFSZ, so an over-long write fails with EFBIG instead of killing the process)."""
    return subprocess.run(
        [sys.executable, "-c", _CHILD.format(LIMIT), "convert", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=120,
        check=False,
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(f"*{TMP_SUFFIX}"))


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A small input (1 vector: ~3 KiB as a tireg file) and a large one (4 vectors: ~12 KiB)."""
    folder = tmp_path / "in"
    (small,) = write_file(_embedding("small", 1), folder / "small.safetensors", "safetensors")
    (large,) = write_file(_embedding("large", 4), folder / "large.safetensors", "safetensors")
    assert large.stat().st_size > LIMIT > small.stat().st_size
    return small, large


def test_small_file_passes_under_the_limit(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """The limit itself lets a convert through (so the failures below are the large file's)."""
    small, _ = inputs
    out = tmp_path / "out"
    done = _convert_limited(small, "--to", "tireg", "--out-dir", out)
    assert done.returncode == 0, done.stderr
    assert read_file(out / "small.tireg.safetensors").same_vectors(read_file(small))


def test_failed_write_over_an_existing_target_leaves_it_untouched(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, large = inputs
    out = tmp_path / "out"
    out.mkdir()
    target = out / "kept.tireg.safetensors"
    target.write_bytes(b"the user's file")
    before = target.stat()
    failed = _convert_limited(large, "--to", "tireg", "-o", target, "--force")
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert str(target) in lines[0] and "cannot write" in lines[0] and "Traceback" not in lines[0]
    assert target.read_bytes() == b"the user's file"
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == ["kept.tireg.safetensors"]


def test_failed_write_in_a_batch_publishes_the_rest(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """The large file's write fails; it is reported and leaves nothing; the small one is written."""
    small, large = inputs
    out = tmp_path / "out"
    failed = _convert_limited(small, large, "--to", "tireg", "--out-dir", out)
    assert failed.returncode == 1
    assert len(failed.stderr.strip().splitlines()) == 1 and "large" in failed.stderr
    assert [p.name for p in out.iterdir()] == ["small.tireg.safetensors"]
    assert read_file(out / "small.tireg.safetensors").same_vectors(read_file(small))
    assert _leftovers(tmp_path) == []


def test_write_error_is_a_tireg_error_in_process(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """The library reports OutputWriteError naming the target (here: its folder is a file)."""
    small, _ = inputs
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    report = convert([small], "tireg", output=blocker / "x.tireg.safetensors")
    ((source, error),) = report.failed
    assert source == small and isinstance(error, OutputWriteError)
    assert error.path == str(blocker / "x.tireg.safetensors")
    assert blocker.read_bytes() == b"" and report.converted == []
    with pytest.raises(OutputWriteError):
        write_file(read_file(small), blocker / "x.tireg.safetensors", "tireg")
