"""The per-repo work of ``tireg sync hf``: fetch, read and store each repo, on threads, and for
a large download in more than one process.

Fetching a concept repo is a few small requests, a restricted unpickle, two hashes and a store
write: short stretches of Python between short waits. On threads in one interpreter, every
small system call hands the interpreter lock to another thread, and a first sync of a thousand
repos spent as much CPU handing it over as working, on one core. Split between processes (each
with its share of the threads, so the Hub sees the same number of requests in flight), the
same work takes far less CPU and runs on every core (``bench/sync.py``).

A worker process is ``python -m tireg.registry.sync_workers`` running the same code as its
parent. Nothing crosses between them as a pickle: the worker reads JSON lines on stdin (a header
with the settings, then one repo's listing entry per line, handed to it a few ahead of its
threads, so a worker still starting simply gets fewer) and writes one JSON line per repo as it
finishes: its facts, error, and each embedding it read as the internal format's bytes (what the
store holds), which the parent reads back through :func:`tireg.converters.internal.loads`. The
store files are written by the worker, durably, before it reports them, exactly as on a thread.
The catalogue is only ever written by the parent. Should a worker fail (it cannot start, or
dies), the parent fetches the repos it did not report itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import tireg
from tireg.converters import internal
from tireg.errors import TiregError
from tireg.registry import ingest
from tireg.registry.store import ContentStore
from tireg.sources import Fetched, hf, http

#: most processes a sync uses (the parent included): the Hub's rate limits, not the CPU, set the
#: ceiling on a large machine, and the threads are shared out between them
MAX_PROCESSES = 4
#: fewest repos per process worth a process: starting one costs about half a second of imports
MIN_REPOS_PER_PROCESS = 100


@dataclass
class RepoResult:
    """What fetching one listed repo gave (nothing is recorded yet)."""

    summary: hf.RepoSummary
    listing: str | None  # new | changed | None (listed before, never downloaded)
    facts: dict[str, str] = field(default_factory=dict)
    prepared: ingest.Prepared | None = None
    error: str | None = None
    gated: bool = False


@dataclass(frozen=True)
class Settings:
    """What every repo of one sync is fetched with."""

    download: bool
    endpoint: str | None
    logged_in: bool


def sync_one(
    summary: hf.RepoSummary, listing: str | None, store: ContentStore, settings: Settings
) -> RepoResult:
    """Network, parsing and store writes for one repo (no catalogue access)."""
    result = RepoResult(summary, listing)
    try:
        if summary.gated and not settings.logged_in:
            result.gated = True
            return result  # no token-less access to its files; the listing facts are recorded
        if not settings.download:
            result.facts = hf.concept_facts(summary, endpoint_url=settings.endpoint)
            return result
        fetched = ingest.fetch(
            "hf",
            summary.repo_id,
            revision=summary.sha,
            hf_endpoint=settings.endpoint,
            previews=False,
            hf_summary=summary,
        )
        result.facts = fetched.facts
        result.prepared = ingest.prepare(fetched, store, strict=True)
    except TiregError as exc:
        result.error = str(exc)
    return result


def processes_for(repos: int, settings: Settings, wanted: int | None = None) -> int:
    """How many processes fetch ``repos`` repos: more than one only for a download large enough
    to pay for starting them (``wanted`` overrides, for tests)."""
    if wanted is not None:
        return max(1, min(wanted, repos))
    if not settings.download:
        return 1  # two small text files per repo: not worth a process
    return max(1, min(MAX_PROCESSES, _cores(), repos // MIN_REPOS_PER_PROCESS))


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the whole machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fetch_all(
    todo: Sequence[tuple[hf.RepoSummary, str | None]],
    store: ContentStore,
    settings: Settings,
    *,
    concurrency: int,
    processes: int = 1,
    done: Callable[[RepoResult], None],
) -> None:
    """:func:`sync_one` for every repo of ``todo``, ``concurrency`` at a time in all, shared
    between this process and ``processes - 1`` workers; ``done`` is called (on this thread) with
    each repo's result as it finishes, in no particular order.

    Steps:
    """
    # 1. one board of repos to do: this process's threads take from it, and a feeder per worker
    #    keeps that worker a few repos ahead of its threads (a worker still starting, or slower,
    #    simply takes fewer); the threads are shared out, so the Hub sees ``concurrency`` at most
    threads = max(1, concurrency // processes)
    board = _Board(len(todo))
    started = (_Worker.start(todo, board, store, settings, threads) for _ in range(processes - 1))
    workers = [worker for worker in started if worker is not None]

    def local() -> None:
        while (index := board.take()) is not None:
            summary, listing = todo[index]
            try:
                board.finished.put(sync_one(summary, listing, store, settings))
            except BaseException as exc:  # a bug: raised on the caller's thread below
                board.finished.put(exc)

    # 2. every result, from a thread of this process or a worker's line, as it comes
    reported = 0
    try:
        with (
            http.netrc_per_host(),  # one look at .netrc per host, not per request
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tireg-sync") as pool,
        ):
            try:
                for _ in range(threads):
                    pool.submit(local)
                while reported < len(todo):
                    item = board.finished.get()
                    if isinstance(item, BaseException):
                        raise item
                    reported += 1
                    done(item)
            finally:
                board.close()  # the threads stop taking repos (after their current one)
    finally:
        for worker in workers:
            worker.stop()


class _Board:
    """The repos not yet taken, shared by this process's threads and the workers' feeders.

    A repo handed to a worker is *out* until the worker reports it; should the worker end
    without reporting it, it goes back on the board, so whoever takes repos waits while any
    are out, rather than stopping while a worker might still give some back.
    """

    def __init__(self, count: int) -> None:
        self.pending = deque(range(count))
        self.out = 0
        self.closed = False
        self.finished: queue.Queue[RepoResult | BaseException] = queue.Queue()
        self.changed = threading.Condition()

    def take(self, wait_while: Callable[[], bool] = lambda: False) -> int | None:
        """The next repo, waiting while none is left but some are out (or ``wait_while()``);
        None once none can come."""
        with self.changed:
            while not self.closed and (wait_while() or (not self.pending and self.out)):
                self.changed.wait()
            if self.closed or not self.pending:
                return None
            return self.pending.popleft()

    def hand_out(self) -> None:
        with self.changed:
            self.out += 1

    def put_back(self, index: int) -> None:
        """A repo taken but not handed out after all."""
        with self.changed:
            self.pending.appendleft(index)
            self.changed.notify_all()

    def reported(self) -> None:
        with self.changed:
            self.out -= 1
            self.changed.notify_all()

    def give_back(self, indices: Iterable[int]) -> None:
        with self.changed:
            for index in indices:
                self.pending.appendleft(index)
                self.out -= 1
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()


class _Worker:
    """One worker process, the thread that feeds it repos and the one that reads its lines."""

    #: repos a worker holds beyond one per thread: its threads never wait for the next line
    AHEAD = 4

    def __init__(
        self,
        todo: Sequence[tuple[hf.RepoSummary, str | None]],
        board: _Board,
        process: subprocess.Popen[bytes],
        threads: int,
    ) -> None:
        self.todo, self.board, self.process = todo, board, process
        self.limit = threads + self.AHEAD
        self.held: set[int] = set()  # handed to it, not yet reported
        self.ended = False  # its output ended: nothing more is handed to it
        self.lock = threading.Lock()
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)

    @classmethod
    def start(
        cls,
        todo: Sequence[tuple[hf.RepoSummary, str | None]],
        board: _Board,
        store: ContentStore,
        settings: Settings,
        threads: int,
    ) -> _Worker | None:
        """Start a worker (None where no process can be started: the others do its part)."""
        header = {"settings": asdict(settings), "store": str(store.root), "threads": threads}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=_child_env(),
            )
        except OSError:
            return None
        worker = cls(todo, board, process, threads)
        assert process.stdin is not None
        with contextlib.suppress(OSError):  # it died at once: nothing was handed to it yet
            process.stdin.write(json.dumps(header).encode() + b"\n")
        worker.feeder.start()
        worker.reader.start()
        return worker

    def _feed(self) -> None:
        """Hand the worker repos while it holds fewer than its limit; close its input at the end."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while (index := self.board.take(lambda: len(self.held) >= self.limit)) is not None:
                with self.lock:
                    if self.ended:
                        self.board.put_back(index)
                        return
                    self.held.add(index)
                    self.board.hand_out()
                summary = _summary_to_json(self.todo[index][0])
                stdin.write(json.dumps({"index": index, "summary": summary}).encode() + b"\n")
                stdin.flush()
        except OSError:
            pass  # the worker is gone: its reader gives back what it held
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read(self) -> None:
        """Each line the worker writes becomes a result; at its end (it finished, died, or wrote
        nonsense), whatever it held goes back on the board."""
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                index, result = _result_from_json(json.loads(line), self.todo)
                with self.lock:
                    if index not in self.held:
                        continue  # not handed to it, or reported before: counted once
                    self.held.discard(index)
                self.board.finished.put(result)
                self.board.reported()
        except (OSError, ValueError, KeyError, TypeError, IndexError, TiregError):
            pass
        finally:
            with self.lock:
                self.ended = True
                left, self.held = sorted(self.held), set()
            self.process.kill()  # a worker that wrote nonsense is not trusted with more
            self.board.give_back(left)

    def stop(self) -> None:
        """End the process (it has finished, or the sync is being abandoned) and its threads."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join()
        self.feeder.join()


def _child_env() -> dict[str, str]:
    """This environment, with this very ``tireg`` first on the worker's import path."""
    env = dict(os.environ)
    package_root = str(Path(tireg.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


# ---------------------------------------------------------------------------- the JSON lines


def _summary_to_json(summary: hf.RepoSummary) -> dict[str, Any]:
    return asdict(summary)


def _summary_from_json(data: dict[str, Any]) -> hf.RepoSummary:
    data = dict(data)
    data["files"] = tuple(data["files"])
    data["blobs"] = {path: tuple(blob) for path, blob in data["blobs"].items()}
    return hf.RepoSummary(**data)


def _result_to_json(index: int, result: RepoResult) -> dict[str, Any]:
    """One worker line: the repo's index in the sync's list and what fetching it gave."""
    line: dict[str, Any] = {
        "index": index,
        "facts": result.facts,
        "error": result.error,
        "gated": result.gated,
        "prepared": None,
    }
    prepared = result.prepared
    if prepared is not None:
        fetch = prepared.fetch
        line["prepared"] = {
            "fetch": {
                "kind": fetch.kind,
                "locator": fetch.locator,
                "revision": fetch.revision,
                "facts": fetch.facts,
                "preview_urls": fetch.preview_urls,
                "blobs": fetch.blobs,
                "problems": fetch.problems,
                "offline": fetch.offline,
            },
            "items": [
                {
                    "file": {
                        **asdict(item),
                        "path": str(item.path),
                        "previews": [str(p) for p in item.previews],
                    },
                    "embedding": base64.b64encode(internal.dumps(embedding)).decode("ascii"),
                    "vectors_sha256": sha,
                }
                for item, embedding, sha in prepared.items
            ],
        }
    return line


def _result_from_json(
    line: dict[str, Any], todo: Sequence[tuple[hf.RepoSummary, str | None]]
) -> tuple[int, RepoResult]:
    """A worker line back into the :class:`RepoResult` a thread would have given."""
    index = int(line["index"])
    summary, listing = todo[index]
    result = RepoResult(summary, listing, dict(line["facts"]), None, line["error"], line["gated"])
    data = line["prepared"]
    if data is not None:
        fetch = ingest.Fetch(
            **{**data["fetch"], "problems": [tuple(p) for p in data["fetch"]["problems"]]}
        )
        prepared = ingest.Prepared(fetch)
        for entry in data["items"]:
            file = entry["file"]
            paths = {"path": Path(file["path"]), "previews": [Path(p) for p in file["previews"]]}
            item = Fetched(**{**file, **paths})
            embedding = internal.loads(base64.b64decode(entry["embedding"]))
            fetch.files.append(item)
            prepared.items.append((item, embedding, entry["vectors_sha256"]))
        result.prepared = prepared
    return index, result


# ------------------------------------------------------------------------------ worker process


def _serve(requests: IO[bytes], out: IO[bytes]) -> None:
    """A worker's whole life: a header line (settings, store, threads), then one line per repo
    until its input ends; each repo fetched on its threads, one line out as each finishes."""
    header = json.loads(requests.readline())
    settings = Settings(**header["settings"])
    store = ContentStore(Path(header["store"]))
    lock = threading.Lock()

    def work(index: int, summary: hf.RepoSummary) -> None:
        result = sync_one(summary, None, store, settings)
        line = json.dumps(_result_to_json(index, result)).encode() + b"\n"
        with lock:
            out.write(line)
            out.flush()

    with (
        http.netrc_per_host(),  # as in fetch_all: one look at .netrc per host
        ThreadPoolExecutor(max_workers=max(1, int(header["threads"]))) as pool,
    ):
        for line in requests:
            repo = json.loads(line)
            pool.submit(work, int(repo["index"]), _summary_from_json(repo["summary"]))


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
