"""Crash-safe file writes, shared by every layer that puts bytes on disk.

A write goes to a process-unique temporary file in the target's directory, is fsynced, renamed over
the target, and the directory is fsynced. A reader therefore sees the old file or the new one,
never a partial one, even if the process is killed mid-write. This module imports nothing of ours.

Many files at once (``tireg convert *.pt``) go through :func:`atomic_batch`, which keeps that
guarantee for every file but pays for it once: the temporary files are fsynced concurrently (the
file system commits them in one journal transaction instead of one each), then renamed, then
each directory is fsynced once. A crash before the batch returns leaves each target either as it
was or complete; once it has returned, every file is as durable as an :func:`atomic_write_bytes`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tireg-tmp"
#: the most bytes tireg reads from any one file it does not trust (an embedding, a download, a
#: picture): embeddings are KB to a few MB, so anything bigger is not one. The one copy of this cap.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: fsyncs in flight at once in a batch; enough for the file system to group them into one commit
SYNC_THREADS = 16


def _keep_open() -> int:
    """A quarter of the descriptors this process may hold (256 under the common limit of
    1,024), at most 4,096: the rest stay free for whatever else the process opens."""
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no answer
        limit = 1024
    return max(0, min(4096, limit // 4))


#: staged files a batch keeps open until their fsync (later ones are opened again for it)
KEEP_OPEN = _keep_open()
#: the first 6 of a temporary's 12 hex digits, drawn once per process (again in a forked
#: child); a counter gives the other 6 (a draw from the kernel's random source for each file
#: is a system call; ``O_EXCL`` settles any collision, with another process or a wrapped count)
_temp_prefix = secrets.token_hex(3)
_temp_counter = itertools.count(secrets.randbelow(1 << 24))


def _draw_temp_prefix() -> None:
    global _temp_prefix
    _temp_prefix = secrets.token_hex(3)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_draw_temp_prefix)


def unique_part() -> str:
    """12 hex digits no other call of this process gets (until 16 million calls wrap the
    counter): the part of a temporary file's name that keeps writers apart. Another process
    may draw the same, so a file so named is created with ``O_EXCL``."""
    return f"{_temp_prefix}{next(_temp_counter) & 0xFFFFFF:06x}"


class NotRegularFileError(OSError):
    """A path names a FIFO, socket or device: opening it could block, or reading never end."""


class FileTooLargeError(OSError):
    """A file is larger than the cap its reader allows."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file *before* it can block.

    Why ``O_NONBLOCK``: a plain ``open()`` of a FIFO waits for a writer forever; with it the open
    returns at once and ``fstat`` tells what was opened (symlinks are followed, so a link to
    ``/dev/zero`` shows as the device it is). The flag is left set: it changes nothing for a
    regular file, whose reads never wait.
    """
    fd, _ = _open_regular_fd(path)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


#: the flags :func:`_open_regular_fd` opens with, worked out once (not per file read)
_OPEN_REGULAR_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
)


def _open_regular_fd(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """A descriptor on ``path`` and what ``fstat`` said of it, for a regular file only (see
    :func:`open_regular`); any other kind of file is closed again unread."""
    fd = os.open(path, _OPEN_REGULAR_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
            raise NotRegularFileError(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))
    except BaseException:
        os.close(fd)
        raise
    return fd, info


#: what :func:`read_capped` asks for at a time once the file has outgrown its ``fstat`` size
_READ_CHUNK = 64 * 1024


def read_capped(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """All bytes of a regular file of at most ``limit`` bytes (checked before and while reading,
    so a file that grows meanwhile cannot slip past the cap).

    One ``open``, one ``fstat`` and ``read`` calls on the bare descriptor: for the small files
    tireg reads by the thousand (``inspect``, ``convert``, ``add``), a file object and its
    buffer cost more than the reading does. The first read asks for one byte more than
    ``fstat`` promised: when it gives just what was promised, the file ended there and that is
    all (no second read to hear it end again); when it gives more, the file grew, and the next
    reads ask for a bounded chunk each, so the file is read on to its end or the cap; when it
    gives less (a file that shrank, or a file system that reads short), reading goes on to the
    end as well. No read allocates the whole cap up front.
    """
    fd, info = _open_regular_fd(path)
    try:
        if info.st_size > limit:
            raise too_large(path, limit)
        data = os.read(fd, info.st_size + 1)
        if len(data) == info.st_size:
            return data
        if len(data) <= limit:
            chunks = [data]
            size = len(data)
            while size <= limit and (chunk := os.read(fd, min(_READ_CHUNK, limit + 1 - size))):
                chunks.append(chunk)
                size += len(chunk)
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise too_large(path, limit)
    return data


def read_at_most(stream: BinaryIO, limit: int, size: int | None = None) -> bytes:
    """The rest of an open regular file, or ``limit + 1`` bytes when it holds more; ``size``
    is what ``fstat`` said is left to read, when the caller asked already.

    Why not ``stream.read(limit + 1)``: Python allocates the whole ``limit`` up front, which for a
    64 MiB cap costs more than reading a small embedding file; the file's size is asked first.
    """
    if size is None:
        size = os.fstat(stream.fileno()).st_size - stream.tell()
    data = stream.read(min(max(size, 0), limit) + 1)
    if size < len(data) <= limit:  # it grew since: read on, up to the cap
        data += stream.read(limit + 1 - len(data))
    return data


def too_large(path: str | os.PathLike[str], limit: int) -> FileTooLargeError:
    """The error for a file over ``limit`` bytes."""
    return FileTooLargeError(errno.EFBIG, f"larger than {limit:,} bytes", os.fspath(path))


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_beside(path: Path, overwrite: bool) -> tuple[int, str]:
    """A new temporary file in ``path``'s directory (created if missing), refusing early if
    ``overwrite`` is false and ``path`` exists; its descriptor and its path, a ``str``: a
    batch stages a thousand of them, and a :class:`~pathlib.Path` would be parsed for each and
    hashed by parts as a key.

    Why not :func:`tempfile.mkstemp`: it creates files with mode 0600, which would then be
    published as is, so a UI running as another user (a Docker container, say) could not read
    what tireg installed. Created with 0666, the kernel applies the umask exactly as for a plain
    ``open()`` (no racy ``os.umask`` round trip); replacing a file keeps that file's mode.
    The directory is created only when the open finds it missing, and the target's mode is
    asked only when it may be replaced: a batch of a thousand files pays for neither per file.
    """
    if not overwrite and path.exists():
        raise FileExistsError(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    target, name = os.fspath(path), path.name
    folder = target[: len(target) - len(name)]  # with its separator: the path ends in its name
    for _ in range(100):
        tmp = f"{folder}.{name}.{unique_part()}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue  # another writer drew the same name: draw again
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        break
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))
    if overwrite:
        try:
            _keep_mode(fd, path)
        except BaseException:
            os.close(fd)
            _remove(tmp)
            raise
    return fd, tmp


def _remove(tmp: str) -> None:
    """Remove a temporary, if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # noqa: PTH108 - temporaries are strings (_temp_beside)


def _keep_mode(fd: int, path: Path) -> None:
    """Give the temporary ``path``'s permission bits when it replaces an existing file."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def _publish(tmp: str, path: Path, overwrite: bool) -> None:
    """Put the (fsynced) ``tmp`` at ``path``; without ``overwrite`` a hard link makes the
    existence check and the publication one atomic step, so two writers cannot both win."""
    if overwrite:
        os.replace(tmp, path)  # noqa: PTH105 - temporaries are strings (_temp_beside)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(path) from None
    os.unlink(tmp)  # noqa: PTH108


@contextlib.contextmanager
def atomic_writer(target: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary stream; on clean exit its bytes replace ``target`` atomically.

    With ``overwrite=False`` an existing target raises :class:`FileExistsError` (checked again at
    the moment of publishing, using a hard link, so two writers cannot both win).
    """
    path = Path(target)
    fd, tmp = _temp_beside(path, overwrite)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        _publish(tmp, path, overwrite)
        fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(
    target: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_writer(target, overwrite=overwrite) as stream:
        stream.write(data)
    return Path(target)


def _fsync_file(path: str, fd: int | None = None) -> None:
    """Fsync ``path`` and close it: through ``fd`` when the writer kept it open, else opened
    again by name."""
    if fd is None:
        fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(files: list[tuple[str, int | None]]) -> None:
    """Fsync and close ``(path, descriptor or None)`` files (:func:`_fsync_file`), up to
    :data:`SYNC_THREADS` at once; raise the first failure (in the order given) once every
    other file was synced (and every descriptor closed).

    Each thread takes the next path from one shared iterator until none is left: a thread per
    batch of files, not a pool task (and its future, locks and wake-ups) per file, which cost
    more CPU than the fsync calls themselves ask of Python.
    """
    if len(files) < 2:
        for path, fd in files:
            _fsync_file(path, fd)
        return
    import threading

    todo = iter(enumerate(files))  # a list iterator's next() is atomic under the GIL
    failures: list[tuple[int, BaseException]] = []

    def work() -> None:
        for index, (path, fd) in todo:
            try:
                _fsync_file(path, fd)
            except BaseException as exc:
                failures.append((index, exc))

    threads = [threading.Thread(target=work) for _ in range(min(SYNC_THREADS, len(files)))]
    started = 0
    try:
        for thread in threads:
            thread.start()
            started += 1
    finally:
        if started < len(threads):  # no thread to be had: this one syncs (and closes) the rest
            work()
        for thread in threads[:started]:
            thread.join()
    if failures:
        raise min(failures, key=lambda failure: failure[0])[1]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the raw descriptor ``fd`` (a file object would buffer for
    nothing, and ask the kernel for its size and whether it is a terminal)."""
    written = os.write(fd, data)
    while written < len(data):  # a short write (a signal, a nearly full disk): write on
        written += os.write(fd, memoryview(data)[written:])


class AtomicBatch:
    """Files staged by :meth:`add` and published together by :meth:`commit`.

    Made by :func:`atomic_batch`, whose exit removes whatever was staged but not published and
    fsyncs every directory the batch wrote to.
    """

    def __init__(self) -> None:
        #: each group's (temporary, target) pairs, and whether it may overwrite
        self._groups: list[tuple[list[tuple[str, Path]], bool]] = []
        #: staged temporaries still open, for :meth:`commit` to fsync through: opening each
        #: again by name would cost two more system calls a file (up to :data:`KEEP_OPEN`)
        self._open: dict[str, int] = {}
        #: the leading groups published whole: their temporaries are gone (renamed, or
        #: unlinked once linked), so :meth:`_close` asks the file system about none of them
        self._published = 0

    def add(
        self, files: Iterable[tuple[str | os.PathLike[str], bytes]], *, overwrite: bool = True
    ) -> None:
        """Stage one group of files (``(target, bytes)``; a pair, say), published all or none.

        With ``overwrite=False`` an existing target raises :class:`FileExistsError` now, and a
        target that appears before :meth:`commit` makes the commit refuse it. A group that fails
        here is forgotten (its temporaries removed): the batch may go on and commit the others.
        """
        group: list[tuple[str, Path]] = []
        self._groups.append((group, overwrite))
        try:
            for target, data in files:
                path = target if isinstance(target, Path) else Path(target)
                fd, tmp = _temp_beside(path, overwrite)
                group.append((tmp, path))
                try:
                    write_all(fd, data)
                except BaseException:
                    os.close(fd)
                    raise
                if len(self._open) < KEEP_OPEN:
                    self._open[tmp] = fd
                else:
                    os.close(fd)
        except BaseException:
            # a group that failed to stage is dropped whole, so the others can still commit
            self._groups.pop()
            for tmp, _ in group:
                self._forget(tmp)
            raise

    def _forget(self, tmp: str) -> None:
        """Close ``tmp`` if it is still open, and remove it."""
        fd = self._open.pop(tmp, None)
        if fd is not None:
            os.close(fd)
        _remove(tmp)

    def commit(self) -> list[Path]:
        """Fsync every staged file, concurrently; then publish the groups in order; return the
        targets published.

        A target taken meanwhile (``overwrite=False``) raises :class:`FileExistsError` naming
        it: the groups before it stay published, its own group is rolled back, later ones are
        dropped.
        """
        opened = self._open
        self._open = {}  # every descriptor is _fsync_files' to close from here on
        _fsync_files([(tmp, opened.get(tmp)) for group, _ in self._groups for tmp, _ in group])
        published: list[Path] = []
        for group, overwrite in self._groups:
            done: list[Path] = []
            try:
                for tmp, path in group:
                    _publish(tmp, path, overwrite)
                    done.append(path)
            except FileExistsError:
                for path in done:
                    path.unlink(missing_ok=True)
                raise
            published.extend(done)
            self._published += 1
        return published

    def _close(self) -> None:
        """Remove temporaries never published; fsync each directory written to, once."""
        for group, _ in self._groups[self._published :]:
            for tmp, _ in group:
                self._forget(tmp)
        # each temporary's folder is its target's, and a str's is found without a Path made
        folders = {os.path.dirname(tmp) for group, _ in self._groups for tmp, _ in group}  # noqa: PTH120
        for directory in sorted(folders):
            fsync_dir(directory or os.curdir)


@contextlib.contextmanager
def atomic_batch() -> Iterator[AtomicBatch]:
    """Write many files atomically, paying for durability once (see the module docstring).

    ``with atomic_batch() as batch: batch.add(...); ...; written = batch.commit()``. Leaving the
    block without a commit, or through an error, publishes nothing that was not yet published.
    """
    batch = AtomicBatch()
    try:
        yield batch
    finally:
        batch._close()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, streamed in 1 MiB blocks (files may be far larger than memory).

    Only regular files: a FIFO or device would block or never end."""
    digest = hashlib.sha256()
    with open_regular(path) as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
