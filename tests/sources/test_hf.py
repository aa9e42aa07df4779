"""tireg.sources.hf with the real huggingface_hub client against a loopback Hub."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.sources.servers.hub_server import HF_TEST_TOKEN, HubServer, concept_repo
from tireg.paths import UnsafePathError
from tireg.sources import SourceError, hf


def first_open(hub: HubServer) -> str:
    return next(r.repo_id for r in hub.repos.values() if not r.gated)


def first_gated(hub: HubServer) -> str:
    return next(r.repo_id for r in hub.repos.values() if r.gated)


def test_parse_spec() -> None:
    assert hf.parse_spec("hf:sd-concepts-library/cat-toy@abc") == (
        "sd-concepts-library/cat-toy",
        "abc",
    )
    assert hf.parse_spec("a/b") == ("a/b", None)
    for bad in ("hf:cat-toy", "hf:../x/y", "hf:a/b/c"):
        with pytest.raises(SourceError):
            hf.parse_spec(bad)


def test_list_repos_pages_and_expands(hub: HubServer) -> None:
    repos = list(hf.list_repos("sd-concepts-library", endpoint_url=hub.url))
    assert len(repos) == 30  # 5 pages of 7, following Link: rel="next"
    assert hub.count("GET", "/api/models?") == 5
    by_id = {r.repo_id: r for r in repos}
    repo = by_id[first_open(hub)]
    assert repo.sha == hub.repos[repo.repo_id].sha and repo.licence == "mit"
    assert "token_identifier.txt" in repo.files and repo.embedding_files() == [
        "learned_embeds.safetensors"
    ]
    assert by_id[first_gated(hub)].gated


def test_fetch_pins_sha_and_verifies(hub: HubServer) -> None:
    repo_id = first_open(hub)
    got = hf.fetch(repo_id, endpoint_url=hub.url)
    assert len(got) == 1
    item = got[0]
    repo = hub.repos[repo_id]
    assert item.revision == repo.sha and item.kind == "hf" and item.locator == repo_id
    assert item.sha256 == hashlib.sha256(repo.files["learned_embeds.safetensors"]).hexdigest()
    assert item.hints["trigger"] == repo.files["token_identifier.txt"].decode()
    assert item.hints["licence"] == "mit"
    assert [p.name for p in item.previews] == [
        p.split("/")[-1] for p in repo.files if p.startswith("concept_")
    ]
    assert f"/resolve/{repo.sha}/" in item.location


def test_gated_repo_without_token_says_how_to_log_in(hub: HubServer) -> None:
    with pytest.raises(SourceError, match="gated") as info:
        hf.fetch(first_gated(hub), endpoint_url=hub.url)
    assert "HF_TOKEN" in str(info.value)


def test_gated_repo_with_token(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TEST_TOKEN)
    assert hf.fetch(first_gated(hub), endpoint_url=hub.url)[0].path.is_file()


def test_unknown_repo_and_revision(hub: HubServer) -> None:
    with pytest.raises(SourceError, match="no such repo"):
        hf.fetch("sd-concepts-library/does-not-exist", endpoint_url=hub.url)
    with pytest.raises(SourceError, match="no such revision"):
        hf.fetch(first_open(hub), revision="f" * 40, endpoint_url=hub.url)


def test_transient_failures_are_retried(hub: HubServer) -> None:
    repo_id = first_open(hub)
    sha = hub.repos[repo_id].sha
    path = f"/{repo_id}/resolve/{sha}/learned_embeds.safetensors"
    hub.fault("GET", path, "500", "drop")
    hub.fault("GET", f"/api/models/{repo_id}/revision/main", "503")
    assert hf.fetch(repo_id, revision="main", endpoint_url=hub.url, previews=False)[
        0
    ].path.is_file()


def test_wrong_hash_is_refused_and_not_kept(hub: HubServer) -> None:
    repo_id = first_open(hub)
    sha = hub.repos[repo_id].sha
    hub.fault("GET", f"/{repo_id}/resolve/{sha}/learned_embeds.safetensors", "hash")
    with pytest.raises(SourceError, match="sha256 mismatch"):
        hf.fetch(repo_id, endpoint_url=hub.url, previews=False)
    assert hf.fetch(repo_id, endpoint_url=hub.url, previews=False)[0].path.is_file()


def test_a_listed_repo_is_fetched_without_model_info_and_still_verified(hub: HubServer) -> None:
    """A listing's summary names the commit and files; each file is checked against the LFS
    sha256 and size its resolve response sends, and the commit it answers for."""
    repo_id = first_open(hub)
    repo = hub.repos[repo_id]
    summary = next(
        s
        for s in hf.list_repos("sd-concepts-library", endpoint_url=hub.url)
        if s.repo_id == repo_id
    )
    assert not summary.blobs  # a listing says no sizes or hashes
    hub.fault("GET", f"/{repo_id}/resolve/{repo.sha}/learned_embeds.safetensors", "hash")
    with pytest.raises(SourceError, match="sha256 mismatch"):
        hf.fetch(repo_id, endpoint_url=hub.url, previews=False, summary=summary)
    [item] = hf.fetch(repo_id, endpoint_url=hub.url, previews=False, summary=summary)
    assert item.sha256 == hashlib.sha256(repo.files["learned_embeds.safetensors"]).hexdigest()
    assert (
        item.revision == repo.sha
        and item.hints["trigger"] == repo.files["token_identifier.txt"].decode()
    )
    assert hub.count("GET", "/api/models/") == 0


def test_a_resolve_for_another_commit_is_refused(hub: HubServer) -> None:
    repo_id = first_open(hub)
    summary = next(
        s
        for s in hf.list_repos("sd-concepts-library", endpoint_url=hub.url)
        if s.repo_id == repo_id
    )
    hub.repos[repo_id].commit_header = "f" * 40  # serves the pinned URL, says another commit
    with pytest.raises(SourceError, match="answered for commit"):
        hf.fetch(repo_id, endpoint_url=hub.url, previews=False, summary=summary)
    hub.repos[repo_id].commit_header = None
    assert hf.fetch(repo_id, endpoint_url=hub.url, previews=False, summary=summary)


def test_offline_uses_cache_and_says_when_missing(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id = first_open(hub)
    online = hf.fetch(repo_id, endpoint_url=hub.url)
    before = len(hub.http.requests)
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    cached = hf.fetch(repo_id, endpoint_url=hub.url)
    assert (
        cached[0].sha256 == online[0].sha256
        and cached[0].hints["trigger"] == online[0].hints["trigger"]
    )
    assert len(hub.http.requests) == before
    with pytest.raises(SourceError, match="offline"):
        hf.fetch("sd-concepts-library/other", endpoint_url=hub.url)
    with pytest.raises(SourceError, match="offline"):
        hf.list_repos("sd-concepts-library", endpoint_url=hub.url)


def test_endpoint_comes_from_env_at_call_time(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    assert hf.endpoint() == hub.url
    repo = hub.add(concept_repo("someone/thing", "<thing>", "object", fmt="safetensors", images=0))
    assert hf.fetch("someone/thing")[0].revision == repo.sha


def _listed(hub: HubServer, repo_id: str) -> hf.RepoSummary:
    return next(
        s
        for s in hf.list_repos("sd-concepts-library", endpoint_url=hub.url)
        if s.repo_id == repo_id
    )


@pytest.mark.parametrize("planted", ["snapshot", "file"])
def test_a_link_planted_in_the_hub_cache_is_refused(
    hub: HubServer, tmp_path: Path, planted: str
) -> None:
    """The snapshot folder is proven once per repo and each file below it: a symbolic link
    leading out of the cache, at either level, stops the fetch before anything is written."""
    repo_id = first_open(hub)
    summary = _listed(hub, repo_id)
    snapshot = hf.hub_cache() / "repos" / repo_id / str(summary.sha)
    outside = tmp_path / "outside"
    outside.mkdir()
    if planted == "snapshot":
        snapshot.parent.mkdir(parents=True)
        snapshot.symlink_to(outside, target_is_directory=True)
    else:
        snapshot.mkdir(parents=True)
        (snapshot / "token_identifier.txt").symlink_to(outside / "token_identifier.txt")
    with pytest.raises(UnsafePathError, match="resolves outside"):
        hf.fetch(repo_id, endpoint_url=hub.url, previews=False, summary=summary)
    assert list(outside.iterdir()) == []
    assert hub.count("GET", f"/{repo_id}/resolve/") == 0


def test_files_cached_at_the_commit_are_reused_and_a_new_snapshot_is_fetched_whole(
    hub: HubServer,
) -> None:
    repo_id = first_open(hub)
    summary = _listed(hub, repo_id)
    first = hf.fetch(repo_id, endpoint_url=hub.url, previews=False, summary=summary)
    fetched = hub.count("GET", f"/{repo_id}/resolve/")
    assert fetched == 3  # two text files and the embedding, into a snapshot new to the cache
    again = hf.fetch(repo_id, endpoint_url=hub.url, previews=False, summary=summary)
    assert hub.count("GET", f"/{repo_id}/resolve/") == fetched  # all three reused
    assert (again[0].sha256, again[0].hints) == (first[0].sha256, first[0].hints)
    assert again[0].path.read_bytes() == hub.repos[repo_id].files[again[0].path.name]
