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

from tests.sources import mega_server
from tests.sources.git_server import GitHost, serving
from tests.sources.mega_server import MegaStandIn
from tests.sources.servers.civitai_server import CivitaiModel, CivitaiServer, CivitaiVersion
from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HubServer, concept_repo, embedding_bytes

fake_mega = mega_server.fake_mega  # the fixture


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


def test_a_rentry_page_s_rows_are_found_and_installed(  # type: ignore[no-untyped-def]
    file_server: FileServer, fake_mega: MegaStandIn, tireg_cli, tmp_path: Path
) -> None:
    """A rentry page's rows (a direct link and a MEGA link) are searchable by their title as
    available entries, and the ``ref`` each carries installs it."""
    direct = file_server.add(
        "/f/8fd19x.safetensors", Served(embedding_bytes("emb_params", "safetensors", seed=11))
    )
    mega_link = fake_mega.add_file(
        "walrus.safetensors", embedding_bytes("emb_params", "safetensors", seed=12)
    )
    page = tmp_path / "embeddings.md"
    page.write_text(
        "||Model|Details|Download\n-|:-:|:-:|:-:\n"
        f"Quokka Smile|Stable Diffusion v1.4||[catbox]({direct})\n"
        f"Walrus Tusk|Waifu Diffusion v1.2||[mega.nz]({mega_link})\n"
    )
    assert tireg_cli("source", "add", "rentry", page).code == 0
    for word, ref, kind in (("quokka", direct, "url"), ("walrus", mega_link, "mega")):
        (entry,) = _search(tireg_cli, word)
        assert entry["available"] is True and entry["state"] == "remote", entry
        assert entry["kind"] == kind and entry["ref"] == ref
        done = tireg_cli("install", entry["ref"], "--to", tmp_path / "out", "--json")
        assert done.code == 0, done.stderr
        (installed,) = json.loads(done.stdout)["installed"]
        assert Path(installed["path"]).is_file()
        assert [r["state"] for r in _search(tireg_cli, word)] == ["local"]


def test_a_civitai_result_is_installed_from_its_spec_and_then_found(  # type: ignore[no-untyped-def]
    civitai_server: CivitaiServer, tireg_cli, tmp_path: Path
) -> None:
    """``search --remote civitai`` gives a spec; ``install`` takes it; plain ``search`` then finds
    the embedding by its Civitai name, recorded with its Civitai source."""
    data = embedding_bytes("emb_params", "safetensors", seed=13)
    version = CivitaiVersion(133, {"narwhal.safetensors": data}, trained_words=["narwhal-horn"])
    civitai_server.add(CivitaiModel(13, "Narwhal Horn", [version]))
    remote = tireg_cli("search", "--remote", "civitai", "narwhal", "--json")
    assert remote.code == 0, remote.stderr
    (result,) = json.loads(remote.stdout)
    assert result["spec"] == "civitai:13@133"
    done = tireg_cli("install", result["spec"], "--to", tmp_path / "out", "--json")
    assert done.code == 0, done.stderr
    (installed,) = json.loads(done.stdout)["installed"]
    assert Path(installed["path"]).is_file()
    (entry,) = _search(tireg_cli, "narwhal")
    assert entry["state"] == "local"
    sources = json.loads(tireg_cli("source", "list", "--kind", "civitai", "--json").stdout)
    assert [(s["locator"], s["status"], s["embeddings"]) for s in sources] == [
        ("13@133", "fetched", 1)
    ]


def test_a_civitai_search_result_is_found_available_and_installed(  # type: ignore[no-untyped-def]
    civitai_server: CivitaiServer, tireg_cli, tmp_path: Path
) -> None:
    """What ``search --remote civitai`` found is remembered: a plain ``search`` lists it as
    available, with the spec ``install`` takes, until it is installed (then it is local)."""
    data = embedding_bytes("emb_params", "safetensors", seed=17)
    version = CivitaiVersion(177, {"okapi.safetensors": data}, trained_words=["okapi-stripes"])
    civitai_server.add(CivitaiModel(17, "Okapi Stripes", [version]))
    assert _search(tireg_cli, "okapi") == []
    assert tireg_cli("search", "--remote", "civitai", "okapi").code == 0
    (entry,) = _search(tireg_cli, "okapi")
    assert entry["available"] is True and entry["state"] == "remote"
    assert (entry["ref"], entry["kind"], entry["trigger"]) == (
        "civitai:17@177",
        "civitai",
        "okapi-stripes",
    )
    assert entry["title"] == "Okapi Stripes"
    table = tireg_cli("search", "okapi").stdout
    assert "civitai:17@177" in table and "available" in table
    done = tireg_cli("install", entry["ref"], "--to", tmp_path / "out")
    assert done.code == 0, done.stderr
    assert [e["state"] for e in _search(tireg_cli, "okapi")] == ["local"]


def test_a_remote_search_answers_where_no_catalogue_can_be_made(  # type: ignore[no-untyped-def]
    civitai_server: CivitaiServer, tireg_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remembering the results is a convenience: an unwritable TIREG_HOME still gets them."""
    data = embedding_bytes("emb_params", "safetensors", seed=19)
    civitai_server.add(CivitaiModel(19, "Tapir", [CivitaiVersion(199, {"t.safetensors": data})]))
    monkeypatch.setenv("TIREG_HOME", "/proc/no-such-home")
    found = tireg_cli("search", "--remote", "civitai", "tapir", "--json")
    assert found.code == 0, found.stderr
    assert [r["spec"] for r in json.loads(found.stdout)] == ["civitai:19@199"]
