"""End to end: each source installs a real-format embedding into the catalogue."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from tests.sources import mega_server
from tests.sources.conftest import reads_pickles
from tests.sources.servers.civitai_server import (
    CIVITAI_TEST_KEY,
    CivitaiModel,
    CivitaiServer,
    CivitaiVersion,
)
from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HF_TEST_TOKEN, HubServer, concept_repo, embedding_bytes
from tireg.db.schema import EmbeddingRow, PreviewRow, ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.errors import TiregError
from tireg.registry import doctor, query, remote
from tireg.sources import SourceError


def rows(catalogue: Catalogue, model):  # type: ignore[no-untyped-def]
    with catalogue.reading() as session:
        return list(session.scalars(select(model)))


def test_is_remote_spec() -> None:
    for spec in ("hf:a/b", "civitai:1", "https://x/y.pt", "https://mega.nz/file/abc#def"):
        assert remote.is_remote_spec(spec)
    for spec in ("embeddings/x.pt", "cat-toy", "C:\\x.pt"):
        assert not remote.is_remote_spec(spec)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_install_hf_end_to_end(hub: HubServer, catalogue: Catalogue, fmt: str) -> None:
    if fmt == "bin" and not reads_pickles():
        pytest.skip("the converters do not read torch .bin files yet")
    repo = hub.add(
        concept_repo("sd-concepts-library/cat-toy", "<cat-toy>", "object", fmt=fmt, images=3)
    )
    [embedding_id] = remote.install_remote(
        catalogue, "hf:sd-concepts-library/cat-toy", hf_endpoint=hub.url
    )
    [row] = rows(catalogue, EmbeddingRow)
    assert row.id == embedding_id and row.name == "<cat-toy>" and row.family == "sd1"
    assert row.concept_type == "object" and row.licence == "mit"
    [source] = rows(catalogue, SourceRow)
    assert (source.kind, source.locator, source.revision, source.status) == (
        "hf",
        "sd-concepts-library/cat-toy",
        repo.sha,
        "fetched",
    )
    [prov] = rows(catalogue, ProvenanceRow)
    assert prov.revision == repo.sha and prov.source_id == source.id
    assert prov.original_sha256 == hashlib.sha256(repo.files[f"learned_embeds.{fmt}"]).hexdigest()
    previews = rows(catalogue, PreviewRow)
    assert len(previews) == 3 and all(p.sha256 for p in previews)


def test_install_hf_failure_leaves_catalogue_unchanged(
    hub: HubServer, catalogue: Catalogue
) -> None:
    hub.add(concept_repo("someone/broken", "<b>", "style", fmt="safetensors", images=0))
    hub.repos["someone/broken"].files["learned_embeds.safetensors"] = (
        b"\x08" + b"\x00" * 7 + b"{not json"
    )
    with pytest.raises(TiregError):
        remote.install_remote(catalogue, "hf:someone/broken", hf_endpoint=hub.url)
    assert rows(catalogue, EmbeddingRow) == [] and rows(catalogue, SourceRow) == []


def test_install_url_end_to_end(file_server: FileServer, catalogue: Catalogue) -> None:
    data = embedding_bytes("<shiny>", "safetensors", seed=3)
    url = file_server.add(
        "/dl", Served(data, disposition='attachment; filename="shiny.safetensors"'), "429", "drop"
    )
    [embedding_id] = remote.install_remote(catalogue, url, sha256=hashlib.sha256(data).hexdigest())
    [source] = rows(catalogue, SourceRow)
    assert (source.kind, source.locator) == ("url", url)
    [prov] = rows(catalogue, ProvenanceRow)
    assert (
        prov.original_sha256 == hashlib.sha256(data).hexdigest()
        and prov.embedding_id == embedding_id
    )


def test_install_url_wrong_sha_and_html(file_server: FileServer, catalogue: Catalogue) -> None:
    url = file_server.add("/dl", Served(embedding_bytes("<a>", "safetensors")))
    with pytest.raises(SourceError, match="sha256 mismatch"):
        remote.install_remote(catalogue, url, sha256="ab" * 32)
    url = file_server.add("/login", Served(b""), "html")
    with pytest.raises(SourceError, match="HTML page"):
        remote.install_remote(catalogue, url)
    assert rows(catalogue, EmbeddingRow) == []


def civitai_model(login: bool = False, wrong_hash: bool = False) -> CivitaiModel:
    version = CivitaiVersion(
        77,
        {"easy-neg.safetensors": embedding_bytes("emb_params", "safetensors", seed=9)},
        trained_words=["easynegative"],
        login_required=login,
        wrong_hash=wrong_hash,
        images=2,
    )
    return CivitaiModel(7, "EasyNegative", [version])


def test_install_civitai_end_to_end(civitai_server: CivitaiServer, catalogue: Catalogue) -> None:
    civitai_server.add(civitai_model())
    [embedding_id] = remote.install_remote(catalogue, "civitai:7")
    [row] = rows(catalogue, EmbeddingRow)
    assert row.id == embedding_id
    assert row.name == "easynegative" and row.description == "A test embedding."
    [source] = rows(catalogue, SourceRow)
    assert (source.kind, source.locator, source.revision) == ("civitai", "7@77", "77")
    assert source.base_model_hint == "SD 1.5"
    assert len(rows(catalogue, PreviewRow)) == 2


def test_civitai_login_required(
    civitai_server: CivitaiServer, catalogue: Catalogue, monkeypatch
) -> None:
    civitai_server.add(civitai_model(login=True))
    with pytest.raises(SourceError, match="requires a login") as info:
        remote.install_remote(catalogue, "civitai:7@77")
    assert "CIVITAI_API_KEY" in str(info.value)
    monkeypatch.setenv("CIVITAI_API_KEY", CIVITAI_TEST_KEY)
    assert remote.install_remote(catalogue, "civitai:7@77")


def test_civitai_wrong_hash_and_cloudflare(
    civitai_server: CivitaiServer, catalogue: Catalogue
) -> None:
    civitai_server.add(civitai_model(wrong_hash=True))
    with pytest.raises(SourceError, match="sha256 mismatch"):
        remote.install_remote(catalogue, "civitai:7")
    civitai_server.http.faults["GET /api/v1/models/7"] = ["html"]  # a 403 challenge page
    with pytest.raises(SourceError, match="Cloudflare"):
        remote.install_remote(catalogue, "civitai:7")
    civitai_server.add(civitai_model())
    civitai_server.http.faults["/files/77/easy-neg.safetensors"] = ["html"]  # 200, but a page
    with pytest.raises(SourceError, match="HTML page"):
        remote.install_remote(catalogue, "civitai:7")
    civitai_server.http.faults["GET /api/v1/model-versions/77"] = ["429", "500"]
    assert remote.install_remote(catalogue, "civitai:7")


def test_search_remote_civitai_pages_with_cursor(civitai_server: CivitaiServer) -> None:
    for i in range(1, 8):
        civitai_server.add(
            CivitaiModel(
                i,
                f"Style {i}",
                [
                    CivitaiVersion(
                        100 + i, {"s.pt": b"x"}, base_model="SD 1.5" if i % 2 else "SDXL 1.0"
                    )
                ],
            )
        )
    found = remote.search_remote("civitai", "style", limit=5)
    assert [r["spec"] for r in found] == [f"civitai:{i}@{100 + i}" for i in range(1, 6)]
    civitai_server.http.requests.clear()
    sdxl = remote.search_remote("civitai", "style", base_model="SDXL 1.0", limit=2)
    assert [r["base_models"] for r in sdxl] == [["SDXL 1.0"]] * 2
    from tireg.sources import civitai

    found_all = civitai.search("style", limit=7)
    assert len(found_all) == 7


def test_lookup_records_civitai_facts(
    civitai_server: CivitaiServer, catalogue: Catalogue, tmp_path
) -> None:
    model = civitai_server.add(civitai_model())
    local = tmp_path / "mystery.safetensors"
    local.write_bytes(model.versions[0].files["easy-neg.safetensors"])
    [result] = remote.lookup(catalogue, str(local))
    assert (
        result.found and result.spec == "civitai:7@77" and result.trigger_words == ["easynegative"]
    )
    assert result.base_model == "SD 1.5" and len(result.preview_urls) == 2
    [row] = rows(catalogue, EmbeddingRow)
    assert row.name == "easynegative"
    other = tmp_path / "other.safetensors"
    other.write_bytes(embedding_bytes("<z>", "safetensors", seed=5))
    [missing] = remote.lookup(catalogue, str(other))
    assert not missing.found


def test_sync_hf_then_resync_asks_only_the_listing(hub: HubServer, catalogue: Catalogue) -> None:
    first = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    gated = [r for r in hub.repos.values() if r.gated]
    assert first.listed == 30 and len(first.new) == 30 and len(first.gated) == len(gated)
    assert len(first.downloaded) == 30 - len(gated) and not first.failed
    sources = {s.locator: s for s in rows(catalogue, SourceRow)}
    some = next(r for r in hub.repos.values() if not r.gated)
    assert sources[some.repo_id].trigger == some.files["token_identifier.txt"].decode()
    assert sources[some.repo_id].status == "fetched"
    assert json.loads(sources[some.repo_id].preview_urls)[0].endswith("concept_images/0.jpeg")
    assert sources[gated[0].repo_id].gated and "HF_TOKEN" in sources[gated[0].repo_id].status_reason
    assert len(rows(catalogue, EmbeddingRow)) == 30 - len(gated)

    hub.http.requests.clear()
    again = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert again.unchanged == 30 and not again.new and not again.changed and not again.downloaded
    assert all(p.startswith("/api/models?") for _, p, _ in hub.http.requests)

    new_sha = hub.touch(
        some.repo_id, "learned_embeds.safetensors", embedding_bytes("<new>", "safetensors", seed=99)
    )
    del hub.repos[gated[0].repo_id]
    third = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert third.changed == [some.repo_id] and third.downloaded == [some.repo_id]
    assert third.gone == [gated[0].repo_id]
    sources = {s.locator: s for s in rows(catalogue, SourceRow)}
    assert sources[some.repo_id].revision == new_sha and sources[gated[0].repo_id].status == "gone"


def test_sync_download_asks_no_model_info_and_verifies_each_file(
    hub: HubServer, catalogue: Catalogue
) -> None:
    """The listing names each repo's commit and files; the resolve replies give the hashes."""
    bad = next(r for r in hub.repos.values() if not r.gated)
    hub.fault("GET", f"/{bad.repo_id}/resolve/{bad.sha}/learned_embeds.safetensors", "hash")
    report = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert hub.count("GET", "/api/models/") == 0
    [failed] = report.failed
    assert failed.locator == bad.repo_id and "sha256 mismatch" in str(failed.message)
    open_repos = [r for r in hub.repos.values() if not r.gated]
    assert len(report.downloaded) == len(open_repos) - 1
    again = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert again.downloaded == [bad.repo_id] and not again.failed


def test_sync_download_leaves_the_search_index_as_a_rebuild_would(
    hub: HubServer, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each transaction reindexes its repos' embeddings once, after all their rows."""
    monkeypatch.setattr(remote, "RECORD_BATCH", 4)  # several transactions
    remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert doctor.examine(catalogue).index_drift == 0
    some = next(r for r in hub.repos.values() if not r.gated)
    trigger = some.files["token_identifier.txt"].decode()
    found = query.search_catalogue(catalogue, trigger.strip("<>")).local
    assert trigger in [hit.name for hit in found]


def test_sync_without_download_records_available(hub: HubServer, catalogue: Catalogue) -> None:
    report = remote.sync_hf(catalogue, "sd-concepts-library", endpoint=hub.url, concurrency=4)
    assert not report.downloaded and rows(catalogue, EmbeddingRow) == []
    assert {s.status for s in rows(catalogue, SourceRow)} == {"available"}
    assert hub.count("GET", "/api/models/") == 0  # no model_info needed without --download


def test_offline_installs_come_from_the_cache(
    hub: HubServer,
    civitai_server: CivitaiServer,
    file_server: FileServer,
    catalogue: Catalogue,
    monkeypatch,
) -> None:
    civitai_server.add(civitai_model())
    hub.add(concept_repo("someone/thing", "<thing>", "object", fmt="safetensors", images=1))
    url = file_server.add("/e.safetensors", Served(embedding_bytes("<e>", "safetensors", seed=8)))
    online = [
        remote.install_remote(catalogue, "civitai:7@77"),
        remote.install_remote(catalogue, "hf:someone/thing", hf_endpoint=hub.url),
        remote.install_remote(catalogue, url),
    ]
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    hub.http.requests.clear()
    civitai_server.http.requests.clear()
    file_server.requests.clear()
    offline = [
        remote.install_remote(catalogue, "civitai:7@77"),
        remote.install_remote(catalogue, "hf:someone/thing", hf_endpoint=hub.url),
        remote.install_remote(catalogue, url),
    ]
    assert offline == online
    assert not hub.http.requests and not civitai_server.http.requests and not file_server.requests
    for spec in ("civitai:7", "hf:someone/other", file_server.url + "/nope"):
        with pytest.raises(SourceError, match="offline"):
            remote.install_remote(catalogue, spec, hf_endpoint=hub.url)


def test_sync_with_token_fetches_gated_repos(
    hub: HubServer, catalogue: Catalogue, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TEST_TOKEN)
    report = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert not report.gated and len(report.downloaded) == 30


fake_mega = mega_server.fake_mega  # H7's MEGA stand-in fixture


def test_install_mega_link_end_to_end(
    fake_mega: mega_server.MegaStandIn, catalogue: Catalogue
) -> None:
    data = embedding_bytes("<mega-thing>", "safetensors", seed=12)
    link = fake_mega.add_file("mega thing.safetensors", data)
    [embedding_id] = remote.install_remote(catalogue, link, sha256=hashlib.sha256(data).hexdigest())
    [source] = rows(catalogue, SourceRow)
    [prov] = rows(catalogue, ProvenanceRow)
    assert source.kind == "mega" and prov.embedding_id == embedding_id
    assert prov.original_sha256 == hashlib.sha256(data).hexdigest()


def test_sync_downloads_gated_repos_once_a_token_is_set(
    hub: HubServer, catalogue: Catalogue, monkeypatch
) -> None:
    gated = sorted(r.repo_id for r in hub.repos.values() if r.gated)
    assert gated, "the seeded listing has gated repos"
    first = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert sorted(first.gated) == gated and len(first.downloaded) == 30 - len(gated)
    again = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert sorted(again.gated) == gated and not again.downloaded  # counted on every sync
    assert again.unchanged == 30

    monkeypatch.setenv("HF_TOKEN", HF_TEST_TOKEN)  # the stand-in serves gated files for it
    hub.http.requests.clear()
    third = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert sorted(third.downloaded) == gated and not third.gated and not third.failed
    assert third.unchanged == 30 - len(gated)  # the shas did not change; only the token did
    resolved = {
        p.split("/resolve/")[0].lstrip("/") for _, p, _ in hub.http.requests if "/resolve/" in p
    }
    assert resolved == set(gated)
    sources = {s.locator: s for s in rows(catalogue, SourceRow)}
    assert all(sources[r].status == "fetched" and not sources[r].status_reason for r in gated)
    with catalogue.reading() as session:
        imported = set(
            session.scalars(
                select(SourceRow.locator)
                .join(ProvenanceRow, ProvenanceRow.source_id == SourceRow.id)
                .where(SourceRow.locator.in_(gated))
            )
        )
    assert imported == set(gated)
    assert len(rows(catalogue, EmbeddingRow)) == 30
    fourth = remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    assert fourth.unchanged == 30 and not fourth.downloaded and not fourth.gated


def test_caches_hold_no_temporaries_after_installs_and_syncs(
    hub: HubServer, civitai_server: CivitaiServer, file_server: FileServer, catalogue: Catalogue
) -> None:
    from tireg import config
    from tireg.files import TMP_SUFFIX

    civitai_server.add(civitai_model())
    remote.sync_hf(catalogue, "sd-concepts-library", download=True, endpoint=hub.url)
    remote.install_remote(catalogue, "civitai:7@77")
    for i in range(3):
        data = embedding_bytes(f"<u{i}>", "safetensors", seed=20 + i)
        remote.install_remote(catalogue, file_server.add(f"/u{i}.safetensors", Served(data)))
    cache = config.cache_dir()
    assert list((cache / "hf" / "repos").rglob("*.txt")) and list((cache / "downloads").rglob("*"))
    assert list(cache.rglob(f"*{TMP_SUFFIX}")) == []


def test_sync_download_fetches_at_most_concurrency_repos_at_once(
    hub: HubServer, catalogue: Catalogue
) -> None:
    hub.resolve_delay = 0.01  # long enough for the workers' requests to overlap
    report = remote.sync_hf(
        catalogue, "sd-concepts-library", download=True, concurrency=3, endpoint=hub.url
    )
    assert len(report.downloaded) == 30 - len(report.gated) and not report.failed
    assert 1 < hub.max_resolving <= 3


def test_lookup_by_name_follows_the_naming_rule(
    civitai_server: CivitaiServer, catalogue: Catalogue, tmp_path
) -> None:
    from tireg.registry.importer import add_paths
    from tireg.registry.naming import NotFoundError

    model = civitai_server.add(civitai_model())
    local = tmp_path / "mystery.safetensors"
    local.write_bytes(model.versions[0].files["easy-neg.safetensors"])
    add_paths(catalogue, [local])
    [result] = remote.lookup(catalogue, "mystery")  # the prompt word: the file's stem
    assert result.found and result.spec == "civitai:7@77"
    with pytest.raises(NotFoundError, match="no embedding named 'nothing-like-it'"):
        remote.lookup(catalogue, "nothing-like-it")


def test_civitai_json_is_checked_before_use(civitai_server: CivitaiServer) -> None:
    from tireg.sources import civitai

    version = civitai.parse_version(
        {
            "id": "77",
            "modelId": 7,
            "trainedWords": ["  easy ", "", None],
            "files": [
                {"name": "a.pt", "type": "Training Data"},
                {"name": "b.pt", "primary": True, "hashes": {"SHA256": "AB" * 32}},
                {"name": "c.pt", "hashes": {"SHA256": "not a hash"}, "pickleScanResult": "Danger"},
            ],
            "images": [{"url": "https://x/1.png"}, {"url": "https://x/v.mp4", "type": "video"}],
        },
        "test",
    )
    assert (version.id, version.model_id, version.trained_words) == (77, 7, ("easy",))
    assert [f.name for f in version.embedding_files()] == ["b.pt"]
    assert version.files[1].sha256 == "ab" * 32 and version.files[2].sha256 is None
    assert version.files[2].flagged and version.image_urls == ("https://x/1.png",)
    for bad in ({"id": True}, {"id": "7; drop"}, {"id": 7, "files": {"a": 1}}, ["not", "a dict"]):
        with pytest.raises(SourceError, match="Civitai sent"):
            civitai.parse_version(bad, "test")
    civitai_server.add(civitai_model())
    found = civitai.model(7)
    assert found.spec() == "civitai:7@77" and found.facts.creator == "tester"
