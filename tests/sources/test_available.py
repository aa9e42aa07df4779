"""Search finds everything available, not only what is downloaded, and install takes it from there.

``sync hf`` without ``--download`` and ``source add`` record sources with no files; ``search``
lists them marked ``available`` with the ref ``install`` takes (``hf:REPO``, the URL, or
``source:ID`` for a git repo).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sources.git_server import GitHost, serving
from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HubServer, concept_repo, embedding_bytes


def _search(tireg_cli, *words: str) -> list[dict]:  # type: ignore[no-untyped-def]
    found = tireg_cli("search", *words, "--json")
    assert found.code == 0, found.stderr
    return json.loads(found.stdout)  # type: ignore[no-any-return]


def test_a_listed_hub_concept_is_found_and_installed(  # type: ignore[no-untyped-def]
    hub: HubServer, tireg_cli, tmp_path: Path
) -> None:
    hub.add(concept_repo("sd-concepts-library/zebra-quilt", "<zebra-quilt>", "object"))
    assert tireg_cli("sync", "hf", "--hf-endpoint", hub.url).code == 0
    (entry,) = _search(tireg_cli, "zebra")
    assert entry["state"] == "remote" and entry["available"] is True
    assert (
        entry["ref"] == "hf:sd-concepts-library/zebra-quilt" and entry["trigger"] == "<zebra-quilt>"
    )
    table = tireg_cli("search", "zebra").stdout
    assert "hf:sd-concepts-library/zebra-quilt" in table and "available" in table
    done = tireg_cli("install", entry["ref"], "--to", tmp_path / "out", "--hf-endpoint", hub.url)
    assert done.code == 0, done.stderr
    (now,) = _search(tireg_cli, "zebra")
    assert now["state"] == "local" and now["ref"] == "<zebra-quilt>"


def test_an_added_url_is_found_and_installed(  # type: ignore[no-untyped-def]
    file_server: FileServer, tireg_cli, tmp_path: Path
) -> None:
    url = file_server.add(
        "/files/kitsune-style.safetensors", Served(embedding_bytes("x", "safetensors"))
    )
    added = tireg_cli("source", "add", "url", url)
    assert added.code == 0, added.stderr
    (entry,) = _search(tireg_cli, "kitsune")
    assert entry["ref"] == url and entry["kind"] == "url"
    assert tireg_cli("install", entry["ref"], "--to", tmp_path / "out").code == 0
    assert [r["state"] for r in _search(tireg_cli, "kitsune")] == ["local"]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[GitHost]:
    with serving(GitHost(tmp_path / "served")) as h:
        project = h.project("viper1/koala-embeddings", branch="master")
        project.commit({"koala-9000.safetensors": embedding_bytes("koala", "safetensors")})
        yield h


def test_a_git_source_is_installed_by_its_source_ref(  # type: ignore[no-untyped-def]
    host: GitHost, tireg_cli, tmp_path: Path
) -> None:
    url = host.repo_url("viper1/koala-embeddings")
    assert tireg_cli("source", "add", "git", url, "--ref", "master").code == 0
    (entry,) = _search(tireg_cli, "koala")
    assert entry["kind"] == "git" and entry["ref"].startswith("source:")
    done = tireg_cli("install", entry["ref"], "--to", tmp_path / "out", "--json")
    assert done.code == 0, done.stderr
    (installed,) = json.loads(done.stdout)["installed"]
    assert Path(installed["path"]).name == "koala-9000.safetensors"
