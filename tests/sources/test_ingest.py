"""Every source kind goes through the one ingest path (``tireg.registry.ingest``).

Shown by what only one path can give: a bad file is reported in the same words and as the same
error whatever brought it (HF, Civitai, a URL, MEGA, git, a rentry row), and a good file is kept
exactly once, in its kind's one cache, whatever command fetched it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.sources import mega_server
from tests.sources.git_server import GitHost, serving
from tests.sources.servers.civitai_server import CivitaiModel, CivitaiServer, CivitaiVersion
from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HubRepo, HubServer, concept_repo, embedding_bytes
from tireg import config
from tireg.db.schema import EmbeddingRow, ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.registry import ingest, remote, source_sync

fake_mega = mega_server.fake_mega  # the fixture

#: a torch zip cut short: every reader calls it truncated
BAD = b"PK\x03\x04 not really a zip"
#: the cache folder each kind keeps its files in (git: the cached clone)
CACHES = {"hf": "hf", "civitai": "civitai", "url": "downloads", "mega": "mega", "git": "git"}


@pytest.fixture
def git_host(tmp_path: Path) -> Iterator[GitHost]:
    with serving(GitHost(tmp_path / "served")) as host:
        yield host


class Publisher:
    """Puts one file on each kind of server and says how tireg reaches it."""

    def __init__(
        self,
        hub: HubServer,
        civitai: CivitaiServer,
        files: FileServer,
        mega: mega_server.MegaStandIn,
        git: GitHost,
    ) -> None:
        self.hub, self.civitai, self.files, self.mega, self.git = hub, civitai, files, mega, git

    def spec(self, kind: str, data: bytes, seed: int) -> str:
        """A spec ``tireg install`` takes (hf, civitai, url, mega) or a git URL."""
        name = f"thing{seed}.pt"
        if kind == "hf":
            self.hub.add(HubRepo(f"someone/thing{seed}", {name: data}))
            return f"hf:someone/thing{seed}"
        if kind == "civitai":
            self.civitai.add(CivitaiModel(seed, "Thing", [CivitaiVersion(seed * 10, {name: data})]))
            return f"civitai:{seed}"
        if kind == "url":
            return self.files.add(f"/{name}", Served(data))
        if kind == "mega":
            return self.mega.add_file(name, data)
        project = self.git.project(f"owner/thing{seed}")
        project.commit({f"embeddings/{name}": data})
        return self.git.repo_url(f"owner/thing{seed}")


@pytest.fixture
def publish(
    hub: HubServer,
    civitai_server: CivitaiServer,
    file_server: FileServer,
    fake_mega: mega_server.MegaStandIn,
    git_host: GitHost,
) -> Publisher:
    return Publisher(hub, civitai_server, file_server, fake_mega, git_host)


def sync_one(catalogue: Catalogue, kind: str, locator: str) -> source_sync.SourceOutcome:
    """``tireg source add`` + ``tireg source sync`` of one source."""
    (source_id,) = source_sync.add_source(catalogue, kind, locator)
    (outcome,) = source_sync.sync_sources(catalogue, ids=[source_id]).sources
    return outcome


def test_a_bad_file_reads_the_same_whatever_brought_it(
    publish: Publisher, catalogue: Catalogue, tmp_path: Path
) -> None:
    said: dict[str, str] = {}
    # installs are strict: the one error type, naming the file by where it came from
    for seed, kind in enumerate(("hf", "civitai", "url", "mega"), 1):
        spec = publish.spec(kind, BAD, seed)
        with pytest.raises(ingest.UnreadableError) as info:
            remote.install_remote(catalogue, spec, hf_endpoint=publish.hub.url)
        assert info.value.path and info.value.path.startswith(("http://", "https://"))
        said[f"install {kind}"] = info.value.message
    # syncs go on past a bad file and report it, in the same words
    for seed, kind in enumerate(("url", "mega", "git"), 10):
        outcome = sync_one(catalogue, kind, publish.spec(kind, BAD, seed))
        [(_, reason)] = outcome.problems
        said[f"source sync {kind}"] = reason
    page = tmp_path / "page.md"
    page.write_text(
        "||Model|Details|Download\n-|:-:|:-:|:-:\n"
        f"Bad row|SD 1.5||[catbox]({publish.files.add('/row.pt', Served(BAD))})\n"
    )
    (row_id,) = source_sync.add_source(catalogue, "rentry", str(page))
    (outcome,) = source_sync.sync_sources(catalogue, ids=[row_id]).sources
    said["rentry row"] = outcome.problems[0][1]
    # sync hf --download: a concept repo whose learned_embeds.bin is the bad file
    repo = concept_repo("bad-author/thing-sync", "<thing-sync>", "object")
    publish.hub.add(replace(repo, files={**repo.files, "learned_embeds.bin": BAD}))
    synced = remote.sync_hf(catalogue, "bad-author", download=True, endpoint=publish.hub.url)
    [failed] = synced.failed
    where, _, reason = (failed.message or "").partition(": ")
    assert where.startswith("http://") and where.endswith("/learned_embeds.bin"), failed.message
    said["sync hf --download"] = reason
    # lookup of the bad file, which Civitai knows by its hash: read strictly, like an install
    local = tmp_path / "thing-local.pt"
    local.write_bytes(BAD)
    publish.civitai.add(CivitaiModel(99, "Thing", [CivitaiVersion(990, {local.name: BAD})]))
    with pytest.raises(ingest.UnreadableError) as info:
        remote.lookup(catalogue, str(local))
    said["lookup"] = info.value.message

    assert len(set(said.values())) == 1, said
    assert "truncated" in said["install hf"]
    with catalogue.reading() as session:
        assert session.scalars(select(EmbeddingRow)).all() == []


def test_a_good_file_is_kept_once_in_its_kinds_cache(
    publish: Publisher, catalogue: Catalogue
) -> None:
    expected: dict[str, str] = {}  # sha256 -> kind
    for seed, kind in enumerate(CACHES, 1):
        data = embedding_bytes(f"<kind-{kind}>", "safetensors", seed=seed)
        expected[hashlib.sha256(data).hexdigest()] = kind
        spec = publish.spec(kind, data, seed)
        if kind == "git":
            assert sync_one(catalogue, "git", spec).imported
        else:
            assert remote.install_remote(catalogue, spec, hf_endpoint=publish.hub.url)

    cache = config.cache_dir()
    kept: dict[str, list[Path]] = {}
    for path in cache.rglob("*"):
        if path.is_file() and ".git" not in path.relative_to(cache).parts:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if sha in expected:
                kept.setdefault(sha, []).append(path.relative_to(cache))
    for sha, kind in expected.items():
        [where] = kept[sha]  # one copy, no second cache
        assert where.parts[0] == CACHES[kind], (kind, where)
    assert not (cache / "url").exists()
    with catalogue.reading() as session:
        recorded = dict(
            session.execute(
                select(ProvenanceRow.original_sha256, SourceRow.kind).join(
                    SourceRow, SourceRow.id == ProvenanceRow.source_id
                )
            ).all()
        )
        statuses = set(session.scalars(select(SourceRow.status)))
    assert recorded == expected and statuses == {"fetched"}


def _catalogue_rows(catalogue: Catalogue) -> dict[str, list[tuple[object, ...]]]:
    """Every recorded fact that does not depend on insertion order or time."""
    from tireg.db.schema import CompatRow, TagRow
    from tireg.registry import search_index

    with catalogue.reading() as session:
        ids = {row.id: row.vectors_sha256 for row in session.scalars(select(EmbeddingRow))}
        locators = {row.id: row.locator for row in session.scalars(select(SourceRow))}
        columns = ("name", "concept_type", "description", "licence", "nsfw", "family")
        return {
            "embeddings": sorted(
                (row.vectors_sha256, *(getattr(row, c) for c in columns))
                for row in session.scalars(select(EmbeddingRow))
            ),
            "provenance": sorted(
                (ids[p.embedding_id], locators.get(p.source_id), p.location, p.original_sha256)
                for p in session.scalars(select(ProvenanceRow))
            ),
            "compat": sorted(
                (ids[c.embedding_id], c.relation, c.model_ref, c.evidence)
                for c in session.scalars(select(CompatRow))
            ),
            "tags": sorted((ids[t.embedding_id], t.tag) for t in session.scalars(select(TagRow))),
            "sources": sorted(
                (s.locator, s.title, s.trigger, s.status, s.revision)
                for s in session.scalars(select(SourceRow))
            ),
            "search": sorted(
                (ids[i], sorted(doc.items()))
                for i, doc in search_index.documents(session, list(ids)).items()
            ),
        }


def test_recording_many_files_at_once_gives_what_one_at_a_time_gives(tmp_path: Path) -> None:
    """``sync hf`` records a transaction's repos together (``import_embeddings``, each file
    with its own hints): the same rows as ``import_embedding`` one file at a time, also for the
    same vectors in two files with different facts."""
    import numpy as np

    from tireg.converters import CLIP_L, Embedding
    from tireg.db.session import open_catalogue
    from tireg.registry.importer import FileFacts, import_embedding, import_embeddings
    from tireg.registry.store import ContentStore

    rng = np.random.default_rng(7)
    vectors = [{CLIP_L: rng.standard_normal((2, 768)).astype(np.float32)} for _ in range(3)]
    said = [
        {"trigger": "<cat-toy>", "concept_type": "object", "licence": "mit", "tags": "cat,toy"},
        {"trigger": "<twin>", "description": "the same vectors", "base_model_hint": "SD 1.5"},
        {"trigger": "<style>", "concept_type": "style", "nsfw": "true", "tags": "art"},
        {"base_model_hint": "SDXL", "base_model_evidence": "civitai baseModel", "tags": "art"},
    ]
    # (vectors, hints) per file: files 0 and 1 share vectors, as do files 2 and 3
    layout = [(0, 0), (0, 1), (1, 2), (1, 3), (2, 0)]
    files = [
        (
            Embedding(name=f"file-{v}", vectors=vectors[v]),
            FileFacts(
                f"https://hub/r{n}/resolve/x/learned_embeds.bin",
                original_sha256=hashlib.sha256(b"%d" % n).hexdigest(),
                revision="1" * 40,
                hints=said[h],
            ),
        )
        for n, (v, h) in enumerate(layout)
    ]
    one = open_catalogue(f"sqlite:///{tmp_path / 'one.sqlite'}")
    many = open_catalogue(f"sqlite:///{tmp_path / 'many.sqlite'}")
    store = ContentStore()
    try:
        for embedding, file in files:
            with one.transaction() as session:
                import_embedding(
                    session,
                    embedding,
                    location=file.location,
                    original_sha256=file.original_sha256,
                    revision=file.revision,
                    hints=file.hints,
                    store=store,
                )
        with many.transaction() as session:
            done = import_embeddings(session, files, store=store)
        assert [created for _, created in done] == [True, False, True, False, True]
        rows = _catalogue_rows(many)
        assert rows == _catalogue_rows(one)
        sha = [embedding.vectors_sha256() for embedding, _ in files]
        by_sha = {row[0]: row[1:] for row in rows["embeddings"]}
        # named by the first file, facts filled in by the later ones
        assert by_sha[sha[0]][:4] == ("<cat-toy>", "object", "the same vectors", "mit")
        assert by_sha[sha[2]][:2] == ("<style>", "style") and by_sha[sha[2]][4]  # nsfw
        assert sorted(rows["tags"]) == sorted(
            [(sha[0], "cat"), (sha[0], "toy"), (sha[2], "art"), (sha[4], "cat"), (sha[4], "toy")]
        )
        evidence = {(row[0], row[3]) for row in rows["compat"]}
        assert (sha[0], "source hint") in evidence and (sha[2], "civitai baseModel") in evidence
        assert len(rows["provenance"]) == 5
    finally:
        one.close()
        many.close()
