"""``add`` records a batch of files in a handful of statements and stores it durably at once.

What made ``tireg add`` slow (issue 9 §5) was a dozen ORM statements per file and one journal
commit per store file; these tests pin down that a batch costs the same few statements whatever
its size, that bulk recording keeps every rule per-file recording had, that
:meth:`ContentStore.put_many` still makes every file durable before its futures are done, and
that a batch is stored, while the one before is recorded, before it is recorded itself.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, select

from tests.registry.make_files import random_embedding, write_mixed, write_one
from tireg.converters import Embedding, internal, read_file
from tireg.db import Catalogue, open_catalogue
from tireg.db.schema import EmbeddingRow, PromptWordRow, ProvenanceRow
from tireg.registry import importer
from tireg.registry.importer import add_paths
from tireg.registry.store import ContentStore


@pytest.fixture
def catalogue() -> Iterator[Catalogue]:
    with open_catalogue() as cat:
        yield cat


def _statements(catalogue: Catalogue, folder: Path) -> int:
    """How many SQL statements importing ``folder`` runs."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(catalogue.engine, "before_cursor_execute", count)
    try:
        report = add_paths(catalogue, [folder])
    finally:
        event.remove(catalogue.engine, "before_cursor_execute", count)
    assert not report.errors, report.errors
    return len(seen)


def test_a_batch_costs_the_same_statements_whatever_its_size(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    write_mixed(tmp_path / "few", 4, seed=21, per_folder=4)
    write_mixed(tmp_path / "full", importer.BATCH_FILES, seed=22, per_folder=importer.BATCH_FILES)
    few = _statements(catalogue, tmp_path / "few")
    full = _statements(catalogue, tmp_path / "full")
    # per-file recording ran a dozen statements for each file; a batch runs one of each kind
    assert full <= few + 2, (few, full)
    assert full < importer.BATCH_FILES // 2, full
    with catalogue.reading() as session:
        rows = session.scalars(select(EmbeddingRow)).all()
    assert len(rows) == 4 + importer.BATCH_FILES
    assert all(row.name_key == row.name.casefold() for row in rows)  # set without the ORM


def test_same_vectors_twice_in_a_batch_fill_facts_and_name_both_files(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    plain = random_embedding(np.random.default_rng(23), "plain")
    first = write_one(plain, tmp_path / "a", "plain-one", "safetensors")
    second = write_one(
        plain.with_meta(name="trained", step=1500, trained_on_hash="E6E8E1FC"),
        tmp_path / "b",
        "trained-two",
        "a1111-pt",
    )
    report = add_paths(catalogue, [first, second])
    assert (len(report.imported), len(report.known)) == (1, 1)
    assert report.imported[0].embedding_id == report.known[0].embedding_id
    with catalogue.reading() as session:
        (row,) = session.scalars(select(EmbeddingRow)).all()
        assert row.name == "plain"  # the first file names it
        assert (row.step, row.trained_on_hash) == (1500, "e6e8e1fc")  # the second fills in
        assert len(session.scalars(select(ProvenanceRow)).all()) == 2
        words = session.scalars(select(PromptWordRow.word).order_by(PromptWordRow.id)).all()
        assert words == ["plain-one", "trained-two"]
    # the store keeps one copy, the batch's last, whichever of its writes finished first
    stored = ContentStore().get(plain.vectors_sha256())
    assert (stored.name, stored.step) == ("trained", 1500)
    again = add_paths(catalogue, [first, second])
    assert len(again.known) == 2 and not again.imported


def _hashed(embeddings: list[Embedding]) -> list[tuple[str, Embedding]]:
    """``put_many``'s input: each embedding with its vectors hash, as the importer passes it."""
    return [(e.vectors_sha256(), e) for e in embeddings]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_put_many_fsyncs_each_file_before_publishing_and_each_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ContentStore(tmp_path / "store")
    rng = np.random.default_rng(24)
    embeddings = [random_embedding(rng, f"e{i}") for i in range(20)]
    synced: list[str] = []
    published: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    def link(src: Any, dst: Any, **kwargs: Any) -> None:
        assert os.fspath(src) in synced, f"{src} published before it was fsynced"
        real_link(src, dst, **kwargs)
        published.append((os.fspath(src), os.fspath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    with ThreadPoolExecutor(4) as pool:  # the same vectors twice are stored once
        for future in store.put_many(_hashed(embeddings + embeddings[:3]), pool, 4):
            future.result()
    targets = {dst for _, dst in published}
    assert targets == {str(store.path(e.vectors_sha256())) for e in embeddings}
    assert {str(Path(dst).parent) for dst in targets} <= set(synced)
    assert store.verify().ok and store.verify().checked == len(embeddings)


def test_put_many_keeps_good_files_and_heals_damaged_ones(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    rng = np.random.default_rng(25)
    good, damaged = random_embedding(rng, "good"), random_embedding(rng, "damaged")
    with ThreadPoolExecutor(2) as pool:
        for future in store.put_many(_hashed([good, damaged]), pool, 2):
            future.result()
        kept = store.path(good.vectors_sha256()).stat()
        bad = store.path(damaged.vectors_sha256())
        bad.write_bytes(bad.read_bytes()[:-4])
        assert not store.verify().ok
        for future in store.put_many(_hashed([good, damaged]), pool, 2):
            future.result()
    assert store.verify().ok
    after = store.path(good.vectors_sha256()).stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_each_batch_is_stored_before_it_is_recorded_and_after_the_batch_before(
    catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's stores run while the batch before is recorded; never does a transaction name a
    store file not yet durable, nor a batch's stores start before the batch before is stored."""
    monkeypatch.setattr(importer, "BATCH_FILES", 8)
    write_mixed(tmp_path / "files", 40, seed=26, per_folder=40)
    events: list[tuple[str, Any]] = []
    lock = threading.Lock()
    real_put, real_commit = ContentStore.put_hashed, importer._commit_together

    def put(self: ContentStore, sha: str, embedding: Any) -> str:
        assert sha == embedding.vectors_sha256()
        with lock:
            events.append(("put", sha))
        try:
            return real_put(self, sha, embedding)
        finally:
            with lock:
                events.append(("stored", sha))

    def commit(catalogue: Catalogue, batch: list[Any], hints: Any) -> Any:
        shas = [ready.vectors_sha256 for ready in batch]  # hashed once, on a reading thread
        assert shas == [ready.embedding.vectors_sha256() for ready in batch]
        store = ContentStore()
        assert all(sha in store and store.get(sha) for sha in shas)
        with lock:
            events.append(("commit", shas))
        return real_commit(catalogue, batch, hints)

    monkeypatch.setattr(ContentStore, "put_hashed", put)
    monkeypatch.setattr(importer, "_commit_together", commit)
    report = add_paths(catalogue, [tmp_path / "files"])
    assert len(report.imported) == 40
    batches = [shas for kind, shas in events if kind == "commit"]
    assert len(batches) == 5 and sum(map(len, batches)) == 40
    at = {(kind, sha): i for i, (kind, sha) in enumerate(events) if kind != "commit"}
    commits = [i for i, (kind, _) in enumerate(events) if kind == "commit"]
    for k, shas in enumerate(batches):
        assert all(at["stored", sha] < commits[k] for sha in shas)
        if k:
            assert min(at["put", sha] for sha in shas) > max(
                at["stored", s] for s in batches[k - 1]
            )


def test_the_hash_read_once_names_the_same_store_files_and_rows_on_the_corpus(
    catalogue: Catalogue, corpus: Path
) -> None:
    """Each file's vectors are hashed once, on its reading thread, for both the store and the
    catalogue: on real files each store file holds exactly ``internal.dumps`` of a file read
    with those vectors (where two files hold the same vectors, one of them), named by their
    hash, and the rows name the same hashes."""
    report = add_paths(catalogue, [corpus])
    assert report.imported and not report.errors, report.to_dict()
    written: dict[str, set[bytes]] = {}
    for outcome in report.imported + report.known:
        read = read_file(outcome.path)
        assert outcome.vectors_sha256 == read.vectors_sha256()
        written.setdefault(read.vectors_sha256(), set()).add(internal.dumps(read))
    store = ContentStore()
    assert {p.name.removesuffix(".safetensors") for p in store.files()} == written.keys()
    for sha, candidates in written.items():
        assert store.path(sha).read_bytes() in candidates
    with catalogue.reading() as session:
        assert set(session.scalars(select(EmbeddingRow.vectors_sha256))) == written.keys()
