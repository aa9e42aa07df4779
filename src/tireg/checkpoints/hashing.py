"""Every hash the ecosystem uses for a checkpoint, from one read of the file.

The hashes (facts from A1111 ``modules/hashes.py`` / ``sd_models.py``, kohya, Civitai):

* **SHA-256** of the whole file; its first 10 hex are **AutoV2**, A1111's "new" short hash.
* The **old A1111 model hash** (Civitai's AutoV1): SHA-256 of the 64 KiB at offset 1 MiB, 8 hex.
  Any file shorter than 1 MiB hashes the empty string, so the value means nothing there.
* **CRC32** and **BLAKE3**, which Civitai lists beside SHA-256.
* The **kohya / addnet hash** of a safetensors file: SHA-256 of everything after the
  ``8 + header_len`` header bytes, so it survives metadata edits.

Why the pipeline: a checkpoint is gigabytes, and SHA-256 (about 1.7 GB/s here, with SHA-NI) is
the bottleneck. The file is read once, in large blocks, into a small pool of reusable buffers
(``readinto``, no per-block allocation); each block is handed to a few "lanes", threads that each
own some of the hashers. hashlib, blake3 and zlib release the GIL on large buffers, so the lanes
really run in parallel, and the costly SHA-256s get a core each. Small files skip the threads.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import blake3 as _blake3

from tireg.checkpoints.errors import CheckpointError
from tireg.progress import Advance

OLD_HASH_OFFSET = 0x100000  # 1 MiB
OLD_HASH_LENGTH = 0x10000  # 64 KiB
BLOCK_SIZE = 4 << 20  # measured: 4 MiB x 6 buffers beat 1-16 MiB x 2-8 on 2 cores
BUFFERS = 6
#: below this size the threads cost more than they save
THREADED_MIN_SIZE = 32 << 20
_SAFETENSORS_MAX_HEADER = 100_000_000


@dataclass(frozen=True)
class FileHashes:
    """The hashes of one file, all lower-case hex."""

    size: int
    sha256: str
    old_hash: str  # exactly what A1111 computes, meaningful or not (see old_hash_meaningful)
    crc32: str
    blake3: str
    addnet: str | None  # only for safetensors files

    @property
    def autov2(self) -> str:
        """A1111's short hash and Civitai's AutoV2: the first 10 hex of the SHA-256."""
        return self.sha256[:10]

    @property
    def old_hash_meaningful(self) -> bool:
        """False for files under 1 MiB: their old hash is the hash of nothing (``e3b0c442``)."""
        return self.size > OLD_HASH_OFFSET

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping including the derived values."""
        return {
            **asdict(self),
            "autov2": self.autov2,
            "old_hash_meaningful": self.old_hash_meaningful,
        }


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


class _Crc32:
    """zlib's CRC32 behind the hashlib ``update``/``hexdigest`` interface."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: memoryview, /) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


@dataclass
class _Feed:
    """One hasher and the file offset its input starts at (addnet skips the header)."""

    hasher: _Hasher
    start: int
    weight: float  # relative CPU cost per byte, to balance the lanes

    def take(self, view: memoryview, offset: int) -> None:
        end = offset + len(view)
        if end <= self.start:
            return
        self.hasher.update(view[max(0, self.start - offset) :])


def safetensors_data_start(stream: BinaryIO, size: int) -> int | None:
    """Where a safetensors file's tensor bytes begin (``8 + header_len``), or None if the file
    does not look like safetensors. This is the light check A1111's addnet hash relies on: a
    plausible length followed by ``{``."""
    stream.seek(0)
    head = stream.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if length > _SAFETENSORS_MAX_HEADER or 8 + length > size:
        return None
    return 8 + length


def _balance(feeds: Sequence[_Feed], lanes: int) -> list[list[_Feed]]:
    """Spread the hashers over ``lanes`` threads, heaviest first onto the lightest lane."""
    groups: list[list[_Feed]] = [[] for _ in range(max(1, min(lanes, len(feeds))))]
    load = [0.0] * len(groups)
    for feed in sorted(feeds, key=lambda f: -f.weight):
        i = load.index(min(load))
        groups[i].append(feed)
        load[i] += feed.weight
    return groups


def _read_full(stream: BinaryIO, buf: bytearray) -> int:
    """Fill ``buf`` unless the file ends first; return the byte count."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _lane_worker(
    feeds: list[_Feed],
    work: queue.SimpleQueue[tuple[int, int, int] | None],
    done: queue.SimpleQueue[int],
    buffers: list[bytearray],
    failures: list[BaseException],
) -> None:
    """Hash each block handed over, then hand its slot back. A failure is recorded and the lane
    keeps returning slots, so the reader can never wait forever on a dead lane."""
    while (item := work.get()) is not None:
        slot, offset, n = item
        if not failures:
            try:
                view = memoryview(buffers[slot])[:n]
                for feed in feeds:
                    feed.take(view, offset)
            except BaseException as exc:  # re-raised by the reader after the pass
                failures.append(exc)
        done.put(slot)


def default_lanes() -> int:
    """One lane per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def hash_stream(
    stream: BinaryIO,
    size: int,
    *,
    progress: Advance | None = None,
    lanes: int | None = None,
    block_size: int = BLOCK_SIZE,
) -> FileHashes:
    """Hash an open binary file of ``size`` bytes, reading it exactly once from the start.

    Raises :class:`CheckpointError` when the file's length differs from ``size`` (it changed
    while being read)."""
    addnet_start = safetensors_data_start(stream, size)
    stream.seek(0)
    sha, old, addnet = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    crc, b3 = _Crc32(), _blake3.blake3()
    feeds = [_Feed(sha, 0, 1.0), _Feed(b3, 0, 0.25), _Feed(crc, 0, 0.3)]
    if addnet_start is not None:
        feeds.append(_Feed(addnet, addnet_start, 1.0))
    lane_count = default_lanes() if lanes is None else lanes
    groups = _balance(feeds, lane_count if size >= THREADED_MIN_SIZE else 1)

    buffers = [bytearray(block_size) for _ in range(BUFFERS if len(groups) > 1 else 1)]
    work: list[queue.SimpleQueue[tuple[int, int, int] | None]] = [
        queue.SimpleQueue() for _ in groups
    ]
    done: queue.SimpleQueue[int] = queue.SimpleQueue()
    failures: list[BaseException] = []
    threads = []
    if len(groups) > 1:
        threads = [
            threading.Thread(target=_lane_worker, args=(g, w, done, buffers, failures), daemon=True)
            for g, w in zip(groups, work, strict=True)
        ]
    for thread in threads:
        thread.start()

    free = list(range(len(buffers)))
    pending = [0] * len(buffers)
    offset = 0
    try:
        while True:
            while not free:
                slot = done.get()
                pending[slot] -= 1
                if pending[slot] == 0:
                    free.append(slot)
            slot = free.pop()
            n = _read_full(stream, buffers[slot])
            if n == 0:
                break
            view = memoryview(buffers[slot])[:n]
            lo = max(offset, OLD_HASH_OFFSET)
            hi = min(offset + n, OLD_HASH_OFFSET + OLD_HASH_LENGTH)
            if lo < hi:
                old.update(view[lo - offset : hi - offset])
            if threads:
                pending[slot] = len(threads)
                for w in work:
                    w.put((slot, offset, n))
            else:
                for feed in groups[0]:
                    feed.take(view, offset)
                free.append(slot)
            offset += n
            if progress is not None:
                progress(n)
    finally:
        for w in work:
            w.put(None)
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    if offset != size:
        raise CheckpointError(
            f"file changed while it was hashed ({size} bytes expected, {offset} read)",
            hint="hash it again once nothing is writing to it",
        )
    return FileHashes(
        size=size,
        sha256=sha.hexdigest(),
        old_hash=old.hexdigest()[:8],
        crc32=crc.hexdigest(),
        blake3=b3.hexdigest(),
        addnet=addnet.hexdigest() if addnet_start is not None else None,
    )


def hash_file(
    path: str | os.PathLike[str],
    *,
    progress: Advance | None = None,
    lanes: int | None = None,
    block_size: int = BLOCK_SIZE,
) -> FileHashes:
    """All hashes of one file, computed now (no cache; see :mod:`tireg.checkpoints.hash_cache`)."""
    file = Path(path)
    try:
        with file.open("rb", buffering=0) as stream:
            size = os.fstat(stream.fileno()).st_size
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            return hash_stream(stream, size, progress=progress, lanes=lanes, block_size=block_size)
    except IsADirectoryError as exc:
        raise CheckpointError("is a folder, not a file", path=file) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read ({exc.strerror or exc})", path=file) from exc
    except CheckpointError as exc:
        raise exc.with_path(file) from None
