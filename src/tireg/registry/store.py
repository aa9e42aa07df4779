"""The content-addressed store: one internal-format file per embedding, named by its vectors.

``store/ab/abcd....safetensors`` holds :func:`tireg.converters.internal.dumps` of the embedding as
it was first imported; ``abcd...`` is :meth:`Embedding.vectors_sha256`. Naming files by content
makes every write idempotent: two processes storing the same vectors write the same name, the
first to publish wins (atomic hard link), and a file left behind by a killed import is harmless,
because a later import of the same vectors simply finds it. The catalogue row that points at a
file is committed only after the file is durable, so no row ever points at a missing or partial
file; :meth:`ContentStore.verify` proves it on demand.

An import stores a batch of files at a time (:meth:`ContentStore.put_many`) before the one
transaction that records them: each file is still fsynced before it is published and its folder
fsynced after, but the whole batch's are in flight at once, so the file system commits them
together instead of one journal commit per file (what made ``tireg add`` wait on the disk), and
while they are, the importer records the batch before.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path

from tireg import config
from tireg.converters import Embedding, EmbeddingFileError, internal
from tireg.errors import TiregError
from tireg.files import TMP_SUFFIX, atomic_write_bytes, atomic_writer

SUFFIX = ".safetensors"
#: a temporary older than this belongs to a writer that died; younger ones may be in flight in
#: another process, and deleting those would make its publish fail
STALE_TEMP_AGE_S = 15 * 60


class StoreError(TiregError):
    """The content store cannot be written or read (permissions, a full disk)."""


@dataclass
class StoreCheck:
    """What :meth:`ContentStore.verify` found."""

    checked: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    @property
    def ok(self) -> bool:
        return not self.bad


def relative_path(vectors_sha256: str) -> str:
    """Where the embedding with these vectors lives, relative to the store root."""
    return f"{vectors_sha256[:2]}/{vectors_sha256}{SUFFIX}"


class ContentStore:
    """The store under ``root`` (default :func:`tireg.config.store_dir`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else config.store_dir()
        self.swept = self._sweep_stale_temporaries()

    def path(self, vectors_sha256: str) -> Path:
        return self.root / relative_path(vectors_sha256)

    def __contains__(self, vectors_sha256: str) -> bool:
        return self.path(vectors_sha256).is_file()

    def put(self, embedding: Embedding) -> str:
        """Store ``embedding`` unless its vectors are already here; return the relative path.

        An existing file is re-read and kept only if its vectors hash to its name, so a file
        damaged on disk is healed by the next import of the same vectors.
        """
        return self.put_hashed(embedding.vectors_sha256(), embedding)

    def put_hashed(self, sha: str, embedding: Embedding) -> str:
        """:meth:`put`, given ``embedding.vectors_sha256()`` as the caller just computed it (an
        import hashes each file's vectors once, for both the store and the catalogue)."""
        target = self.path(sha)
        try:
            try:
                # the writer refuses an existing file before anything is encoded or created: a
                # new file costs one lookup of its name, a stored one that lookup and a read
                with atomic_writer(target, overwrite=False) as stream:
                    stream.write(internal.dumps(embedding))
            except FileExistsError:
                # stored before, by this or another process (or damaged): keep a good one
                if not self._holds(target, sha):
                    atomic_write_bytes(target, internal.dumps(embedding), overwrite=True)
        except OSError as exc:
            raise _store_error(exc, target) from exc
        return relative_path(sha)

    def put_many(
        self, embeddings: Iterable[tuple[str, Embedding]], pool: Executor, workers: int
    ) -> list[Future[list[str]]]:
        """Start :meth:`put_hashed` of each ``(vectors_sha256, embedding)`` on ``workers`` tasks
        of ``pool``; every file is durable once every future is done, and a :class:`StoreError`
        (a full disk, permissions) comes out of a result.

        The same vectors twice are stored once, as the last of them (one writer per file, so
        which copy the store keeps never depends on which thread finished first). Done at once,
        the file system commits the fsyncs of the whole batch together instead of one journal
        commit after another, and the waits (each small system call too, for the GIL) overlap;
        one ``pool`` for a whole import spares starting threads for every batch. Each task takes
        the next file from one shared iterator until none is left, as :mod:`tireg.files`' batch
        fsyncs do, where a future per file cost the importer's main thread a lock, a condition
        and a wake-up for every file.
        """
        wanted = dict(embeddings)
        todo = iter(wanted.items())  # a dict iterator's next() is atomic under the GIL

        def work() -> list[str]:
            return [self.put_hashed(sha, embedding) for sha, embedding in todo]

        return [pool.submit(work) for _ in range(min(workers, len(wanted)))]

    def get(self, vectors_sha256: str) -> Embedding:
        """Load a stored embedding, checking that its vectors still hash to its name."""
        target = self.path(vectors_sha256)
        try:
            embedding = internal.loads(target.read_bytes())
        except OSError as exc:
            raise StoreError(
                f"stored file unreadable: {exc.strerror}",
                path=target,
                hint="run `tireg add` on the original file again to restore it",
            ) from exc
        except EmbeddingFileError as exc:
            raise exc.with_path(target) from None
        if embedding.vectors_sha256() != vectors_sha256:
            raise StoreError(
                "stored file does not match its hash (damaged on disk)",
                path=target,
                hint="run `tireg add` on the original file again to restore it",
            )
        return embedding

    def remove(self, file: Path) -> None:
        """Delete one file of the store (``doctor --repair``'s orphans); a store that cannot be
        written says so in one line, as :meth:`put` does."""
        try:
            file.unlink(missing_ok=True)
        except OSError as exc:
            raise _store_error(exc, file) from exc

    def files(self) -> Iterator[Path]:
        """Every published store file (temporaries excluded)."""
        if self.root.is_dir():
            yield from sorted(self.root.glob(f"??/*{SUFFIX}"))

    def verify(self) -> StoreCheck:
        """Recompute the vectors hash of every store file and compare it with the file's name."""
        check = StoreCheck()
        for file in self.files():
            check.checked += 1
            rel = file.relative_to(self.root).as_posix()
            expected = file.name[: -len(SUFFIX)]
            if file.parent.name != expected[:2]:
                check.bad.append((rel, "file is in the wrong folder"))
                continue
            try:
                actual = internal.loads(file.read_bytes()).vectors_sha256()
            except (OSError, EmbeddingFileError) as exc:
                check.bad.append((rel, f"unreadable: {exc}"))
                continue
            if actual != expected:
                check.bad.append((rel, f"vectors hash to {actual}"))
        return check

    def _holds(self, target: Path, sha: str) -> bool:
        try:
            return internal.loads(target.read_bytes()).vectors_sha256() == sha
        except (OSError, EmbeddingFileError):
            return False

    def _sweep_stale_temporaries(self) -> int:
        """Remove temporaries that killed writers left behind; return how many."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - STALE_TEMP_AGE_S
        removed = 0
        for leftover in self.root.glob(f"??/*{TMP_SUFFIX}"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
            except OSError:
                continue  # gone already, or not ours to remove: harmless either way
        return removed


def _store_error(exc: OSError, target: Path) -> StoreError:
    """One actionable line for the ways writing the store fails."""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return StoreError(
            f"cannot write the store: disk full or file too large ({os.strerror(exc.errno)})",
            path=target,
            hint="free some space and run the same command again; nothing was half-written",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(
            f"cannot write the content store: {os.strerror(exc.errno)}",
            path=target,
            hint="check permissions, or set TIREG_HOME to a writable place",
        )
    return StoreError(f"cannot write the content store: {exc.strerror or exc}", path=target)
