"""tireg.files: published files get the permissions a plain ``open()`` would give them.

(Atomicity under kills and concurrent batches is tested in tests/converters/test_atomic_batch.py
and the registry's concurrency tests; this is about who can read the result.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tireg.files import (
    TMP_SUFFIX,
    FileTooLargeError,
    NotRegularFileError,
    atomic_batch,
    atomic_write_bytes,
    atomic_writer,
    open_regular,
    read_capped,
    sha256_file,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def umask() -> Iterator[object]:
    """Set the process umask for one test (tests run in one thread), restoring it after."""
    old = os.umask(0o022)

    def set_mask(value: int) -> None:
        os.umask(value)

    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _plain_open_mode(path: Path) -> int:
    path.write_bytes(b"reference")
    return _mode(path)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_bytes_honours_the_umask(
    tmp_path: Path, umask, mask: int, expected: int
) -> None:  # type: ignore[no-untyped-def]
    umask(mask)
    target = atomic_write_bytes(tmp_path / "x.safetensors", b"data")
    assert _mode(target) == expected == _plain_open_mode(tmp_path / "plain")
    with atomic_writer(tmp_path / "y.pt") as stream:
        stream.write(b"data")
    assert _mode(tmp_path / "y.pt") == expected


def test_atomic_batch_honours_the_umask(tmp_path: Path, umask) -> None:  # type: ignore[no-untyped-def]
    umask(0o022)
    with atomic_batch() as batch:
        batch.add([(tmp_path / "a.bin", b"1"), (tmp_path / "a_2.bin", b"2")])
        batch.add([(tmp_path / "sub" / "b.png", b"3")], overwrite=False)
        written = batch.commit()
    assert len(written) == 3
    assert {p.name: _mode(p) for p in written} == {"a.bin": 0o644, "a_2.bin": 0o644, "b.png": 0o644}
    assert not list(tmp_path.rglob(f"*{TMP_SUFFIX}"))


def test_replacing_a_file_keeps_its_mode(tmp_path: Path, umask) -> None:  # type: ignore[no-untyped-def]
    """As ``open(path, "wb")`` on an existing file would: the user's chmod survives."""
    umask(0o022)
    target = tmp_path / "shared.safetensors"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o640
    with atomic_batch() as batch:
        batch.add([(target, b"newer")])
        batch.commit()
    assert target.read_bytes() == b"newer" and _mode(target) == 0o640


def test_temporary_names_do_not_collide(tmp_path: Path) -> None:
    """Many writers of one target each get their own temporary (the last rename wins)."""
    from tireg.files import _temp_beside

    made = [_temp_beside(tmp_path / "t.bin", True) for _ in range(200)]
    try:
        assert len({tmp for _, tmp in made}) == 200
        names = [Path(tmp) for _, tmp in made]
        assert all(p.parent == tmp_path for p in names)
        assert all(p.name.startswith(".t.bin.") and p.name.endswith(TMP_SUFFIX) for p in names)
    finally:
        for fd, tmp in made:
            os.close(fd)
            os.unlink(tmp)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_its_own_temporary_names(tmp_path: Path) -> None:
    """Temporary names are a per-process prefix and a counter: a child forked with the same
    counter must not walk the parent's names (each clash would cost it a retry)."""
    from tireg.files import _temp_beside

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next name and leave at once
        fd, tmp = _temp_beside(tmp_path / "t.bin", True)
        os.write(write_end, Path(tmp).name.encode())
        os._exit(0)
    os.close(write_end)
    fd, tmp = _temp_beside(tmp_path / "t.bin", True)
    os.close(fd)
    child = os.read(read_end, 4096).decode()
    os.close(read_end)
    assert os.waitpid(pid, 0)[1] == 0
    suffix = len(".abcdef000000" + TMP_SUFFIX)  # prefix and counter, then the suffix
    name = Path(tmp).name
    assert child != name and child[-suffix:][:7] != name[-suffix:][:7]


# -- reading files tireg does not trust -------------------------------------------------------


def _finishes(call: object, seconds: float = 20) -> BaseException | None:
    """Run ``call`` on a thread; fail if it is still blocked after ``seconds``; return what it
    raised (None if nothing)."""
    import threading

    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()  # type: ignore[operator]
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked"
    return raised[0] if raised else None


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    for read in (lambda: open_regular(fifo).close(), lambda: read_capped(fifo)):
        exc = _finishes(read)
        assert isinstance(exc, NotRegularFileError) and "FIFO" in str(exc)


def test_a_symlink_to_a_device_is_refused_unread(tmp_path: Path) -> None:
    link = tmp_path / "zero.pt"
    link.symlink_to("/dev/zero")
    exc = _finishes(lambda: read_capped(link))
    assert isinstance(exc, NotRegularFileError)
    assert isinstance(_finishes(lambda: sha256_file(link)), NotRegularFileError)


def test_reads_are_capped(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 101)
    with pytest.raises(FileTooLargeError):
        read_capped(big, 100)
    assert read_capped(big, 101) == b"x" * 101
    with pytest.raises(NotRegularFileError):
        read_capped(tmp_path)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_file_larger_than_its_fstat_size_is_read_to_its_end(tmp_path: Path) -> None:
    """The first read stops at the size ``fstat`` gave only when the file gave no more: a
    /proc file says 0 bytes and holds a page of text, which is read whole."""
    status = read_capped("/proc/self/status")
    assert os.stat("/proc/self/status").st_size == 0
    assert status.startswith(b"Name:") and status.endswith(b"\n") and len(status) > 100
    exact = tmp_path / "exact.bin"
    exact.write_bytes(b"y" * 5000)
    assert read_capped(exact) == b"y" * 5000
