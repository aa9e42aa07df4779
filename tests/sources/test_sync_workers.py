"""``sync hf --download`` shared between worker processes records what threads alone record."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.sources.servers.hub_server import HubServer
from tireg import config
from tireg.db import open_catalogue
from tireg.db.schema import CompatRow, EmbeddingRow, ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.registry import remote, sync_workers
from tireg.registry.ingest import SyncReport
from tireg.registry.store import ContentStore
from tireg.sources import hf


def _sync(
    hub: HubServer,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    processes: int,
    concurrency: int = 6,
) -> SyncReport:
    monkeypatch.setenv("TIREG_HOME", str(home))
    catalogue = open_catalogue()
    try:
        return remote.sync_hf(
            catalogue,
            download=True,
            endpoint=hub.url,
            concurrency=concurrency,
            processes=processes,
        )
    finally:
        catalogue.close()


def _contents(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Everything a sync records, without row ids and times (which differ run to run)."""
    monkeypatch.setenv("TIREG_HOME", str(home))
    catalogue = open_catalogue()
    try:
        with catalogue.reading() as session:
            shas = {row.id: row.vectors_sha256 for row in session.scalars(select(EmbeddingRow))}
            sources = sorted(
                (s.kind, s.locator, s.revision, s.status, s.status_reason, s.trigger,
                 s.concept_type, s.licence, s.gated, s.title, s.preview_urls)
                for s in session.scalars(select(SourceRow))
            )  # fmt: skip
            embeddings = sorted(
                (e.vectors_sha256, e.name, e.family, e.num_vectors, e.widths, e.concept_type,
                 e.licence, e.step, e.store_path)
                for e in session.scalars(select(EmbeddingRow))
            )  # fmt: skip
            provenance = sorted(
                (shas[p.embedding_id], p.location, p.original_format, p.original_sha256,
                 p.name_in_file, p.revision)
                for p in session.scalars(select(ProvenanceRow))
            )  # fmt: skip
            facts = sorted(
                (shas[c.embedding_id], c.relation, c.model_ref, c.evidence)
                for c in session.scalars(select(CompatRow))
            )
    finally:
        catalogue.close()
    store = sorted(p.name for p in config.store_dir().rglob("*.safetensors"))
    return {
        "sources": sources,
        "embeddings": embeddings,
        "provenance": provenance,
        "facts": facts,
        "store": store,
    }


def _outcomes(report: SyncReport) -> list[tuple[Any, ...]]:
    return sorted(
        (o.locator, o.status, o.listing, o.message, o.gated, len(o.imported), len(o.known))
        for o in report.sources
    )


def test_worker_processes_record_what_threads_record(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three processes (this one and two workers) against one: the same catalogue, store and
    report, a failing repo included (its one-line reason travels back from a worker).

    Each of the three has one thread, and the Hub holds each file request a while: requests in
    flight at once prove that the workers fetched repos, not this process alone."""
    bad = next(r for r in hub.repos.values() if not r.gated)
    faulty = f"/{bad.repo_id}/resolve/{bad.sha}/learned_embeds.safetensors"
    hub.fault("GET", faulty, "hash")  # a fault serves one request: set again for each sync
    alone = _sync(hub, tmp_path / "threads", monkeypatch, processes=1)
    hub.fault("GET", faulty, "hash")
    hub.resolve_delay, hub.max_resolving = 0.05, 0
    shared = _sync(hub, tmp_path / "processes", monkeypatch, processes=3, concurrency=3)
    assert hub.max_resolving > 1
    assert [o.locator for o in shared.failed] == [bad.repo_id]
    assert "sha256 mismatch" in str(shared.failed[0].message)
    assert len(shared.downloaded) == len([r for r in hub.repos.values() if not r.gated]) - 1
    assert _outcomes(shared) == _outcomes(alone)
    assert _contents(tmp_path / "processes", monkeypatch) == _contents(
        tmp_path / "threads", monkeypatch
    )


@pytest.mark.parametrize("executable", ["/bin/true", "/nonexistent/python"])
def test_repos_a_worker_never_reports_are_fetched_here(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    """A worker that cannot start, or ends at once without a line, costs nothing but speed."""
    monkeypatch.setattr(sys, "executable", executable)
    report = _sync(hub, tmp_path / "home", monkeypatch, processes=2)
    open_repos = [r for r in hub.repos.values() if not r.gated]
    assert len(report.downloaded) == len(open_repos) and not report.failed


def test_a_worker_line_round_trips_a_fetched_repo(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a worker writes for a repo reads back as the result a thread would have given."""
    monkeypatch.setenv("TIREG_HOME", str(tmp_path))
    repo = next(r for r in hub.repos.values() if not r.gated)
    summary = next(
        s
        for s in hf.list_repos("sd-concepts-library", endpoint_url=hub.url)
        if s.repo_id == repo.repo_id
    )
    settings = sync_workers.Settings(download=True, endpoint=hub.url, logged_in=False)
    store = ContentStore()
    result = sync_workers.sync_one(summary, "new", store, settings)
    assert result.prepared is not None
    line = json.loads(json.dumps(sync_workers._result_to_json(0, result)))
    index, back = sync_workers._result_from_json(line, [(summary, "new")])
    assert index == 0 and back.summary is summary and back.listing == "new"
    assert (back.facts, back.error, back.gated) == (result.facts, result.error, result.gated)
    assert back.prepared is not None
    assert back.prepared.fetch.facts == result.prepared.fetch.facts
    assert back.prepared.fetch.revision == result.prepared.fetch.revision
    [(item, embedding, sha)] = result.prepared.items
    [(item_back, embedding_back, sha_back)] = back.prepared.items
    assert item_back == item and sha_back == sha
    assert embedding_back == embedding  # names, metadata and the exact bits of every vector
    assert sync_workers._summary_from_json(json.loads(json.dumps(summary.__dict__))) == summary


def test_processes_for_a_sync() -> None:
    download = sync_workers.Settings(download=True, endpoint=None, logged_in=False)
    listing = sync_workers.Settings(download=False, endpoint=None, logged_in=False)
    assert sync_workers.processes_for(50, download) == 1  # too few to pay for a process
    assert sync_workers.processes_for(5000, listing) == 1  # text files only
    assert 1 <= sync_workers.processes_for(5000, download) <= sync_workers.MAX_PROCESSES
    assert sync_workers.processes_for(2, download, wanted=8) == 2  # never more than the repos


def test_sync_hf_cli_with_processes(hub: HubServer, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli(
        "sync", "hf", "--hf-endpoint", hub.url, "--download", "--processes", "2", "--json"
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["listed"] == 30 and len(report["downloaded"]) == 30 - len(report["gated"])


def _workers_alive() -> list[int]:
    """This process's children that are sync workers (from /proc: Linux only)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, parent = stat[0], int(stat[1])
        if parent == os.getpid() and state != "Z" and b"tireg.registry.sync_workers" in command:
            alive.append(int(entry.name))
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_an_interrupted_sync_leaves_no_worker_running(
    hub: HubServer, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (here: raised from the progress callback) ends the workers with the sync."""
    hub.resolve_delay = 0.05  # the workers are still busy when the interrupt comes

    def interrupt(done: int, total: int, repo_id: str) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        remote.sync_hf(catalogue, download=True, endpoint=hub.url, processes=2, progress=interrupt)
    assert _workers_alive() == []
    with catalogue.reading() as session:  # nothing recorded: fetched again by the next sync
        assert session.scalars(select(EmbeddingRow)).first() is None
