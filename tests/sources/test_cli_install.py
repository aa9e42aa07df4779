"""`tireg install` of remote specs and `tireg search --remote`, in-process, on loopback servers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.registry.test_install import ui_root
from tests.sources.servers.civitai_server import CivitaiModel, CivitaiServer, CivitaiVersion
from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HubServer, concept_repo, embedding_bytes
from tireg.converters import read_file


def _json(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _shown(tireg_cli, ref: str):  # type: ignore[no-untyped-def]
    return _json(tireg_cli("show", ref, "--json"))


def test_install_hf_spec_catalogues_it(hub: HubServer, tireg_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    repo = hub.add(concept_repo("someone/cat-toy", "<cat-toy>", "object", fmt="safetensors"))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    result = _json(tireg_cli("install", "hf:someone/cat-toy", "--json"))
    [ref] = result["fetched"]
    assert result["installed"] == [] and result["offline_cached"] == []
    shown = _shown(tireg_cli, ref)
    assert shown["name"] == "<cat-toy>" and shown["concept_type"] == "object"
    [source] = shown["sources"]
    assert source["source"]["kind"] == "hf" and source["source"]["revision"] == repo.sha
    assert len(shown["previews"]) == 2  # the repo's concept images


def test_install_hf_endpoint_option(hub: HubServer, tireg_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    hub.add(concept_repo("someone/birb", "<birb>", "style", fmt="safetensors", images=0))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    result = _json(tireg_cli("install", "hf:someone/birb", "--hf-endpoint", hub.url, "--json"))
    assert len(result["fetched"]) == 1
    assert hub.count("GET", "/api/models/someone/birb") == 1
    [source] = _shown(tireg_cli, result["fetched"][0])["sources"]
    assert source["location"].startswith(hub.url + "/someone/birb/resolve/")


def test_install_civitai_spec(civitai_server: CivitaiServer, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    data = embedding_bytes("emb_params", "safetensors", seed=31)
    civitai_server.add(
        CivitaiModel(
            9,
            "Easy Thing",
            [CivitaiVersion(99, {"easy-thing.safetensors": data}, trained_words=["easything"])],
        )
    )
    result = _json(tireg_cli("install", "civitai:9", "--json"))
    [ref] = result["fetched"]
    shown = _shown(tireg_cli, ref)
    assert shown["name"] == "easything"
    [source] = shown["sources"]
    assert source["original_sha256"] == hashlib.sha256(data).hexdigest()
    assert (source["source"]["kind"], source["source"]["locator"]) == ("civitai", "9@99")
    assert [p["location"] for p in shown["previews"]]  # the version's images, kept locally
    text = tireg_cli("install", "civitai:9")  # again, as a table: already catalogued
    assert text.code == 0 and f"catalogued {ref}" in text.stdout


@pytest.mark.parametrize("into_ui", [False, True])
def test_install_url_with_sha256(
    file_server: FileServer,
    tireg_cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    into_ui: bool,
) -> None:
    data = embedding_bytes("<shiny>", "safetensors", seed=32)
    sha = hashlib.sha256(data).hexdigest()
    url = file_server.add("/dl/shiny.safetensors", Served(data))
    wrong = tireg_cli("install", url, "--sha256", "ab" * 32)
    assert wrong.code == 1 and "sha256 mismatch" in wrong.stderr
    assert _json(tireg_cli("list", "--json")) == []  # nothing half-recorded
    args = ["install", url, "--sha256", sha, "--json"]
    if into_ui:
        args += ["--ui", "comfyui", "--ui-root", str(ui_root(tmp_path, "comfyui"))]
    result = _json(tireg_cli(*args))
    [ref] = result["fetched"]
    [source] = _shown(tireg_cli, ref)["sources"]
    assert source["location"] == url and source["original_sha256"] == sha
    if not into_ui:
        assert result["installed"] == []
        return
    [done] = result["installed"]
    path = Path(done["path"])
    assert done["target"] == "comfyui" and done["status"] == "installed"
    assert path.parent == tmp_path / "comfyui" / "models" / "embeddings"
    assert done["prompt"] == f"embedding:{path.stem}"
    assert read_file(path).vectors_sha256() == _shown(tireg_cli, ref)["vectors_sha256"]
    assert [f["state"] for f in _json(tireg_cli("installed", "--json"))] == ["ok"]


def test_search_remote_civitai_cli(civitai_server: CivitaiServer, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    for i, base in enumerate(["SD 1.5", "SDXL 1.0", "SDXL 1.0"], 1):
        words = [f"word{i}"]
        civitai_server.add(
            CivitaiModel(i, f"Ink Style {i}", [CivitaiVersion(40 + i, {"s.pt": b"x"}, base, words)])
        )
    found = _json(
        tireg_cli("search", "ink", "--remote", "civitai", "--base-model", "SDXL 1.0", "--json")
    )
    assert [(f["spec"], f["base_models"], f["trigger"]) for f in found] == [
        ("civitai:2@42", ["SDXL 1.0"], "word2"),
        ("civitai:3@43", ["SDXL 1.0"], "word3"),
    ]
    assert all(f["remote"] == "civitai" and f["name"].startswith("Ink Style") for f in found)
    table = tireg_cli("search", "ink", "--remote", "civitai")
    assert table.code == 0 and "civitai:1@41" in table.stdout


def test_offline_install_says_it_used_the_cache(
    hub: HubServer,
    civitai_server: CivitaiServer,
    file_server: FileServer,
    tireg_cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub.add(concept_repo("someone/thing", "<thing>", "object", fmt="safetensors", images=1))
    data = embedding_bytes("emb_params", "safetensors", seed=33)
    civitai_server.add(CivitaiModel(8, "Eight", [CivitaiVersion(88, {"e.safetensors": data})]))
    url = file_server.add("/e.safetensors", Served(embedding_bytes("<e>", "safetensors", seed=34)))
    specs = ["hf:someone/thing", "civitai:8@88", url]
    online = tireg_cli("install", *specs, "--hf-endpoint", hub.url)
    assert online.code == 0 and "offline" not in online.stderr
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    offline = tireg_cli("install", *specs, "--hf-endpoint", hub.url, "--json")
    assert offline.code == 0, offline.stderr
    assert json.loads(offline.stdout)["offline_cached"] == specs
    assert offline.stderr.splitlines() == [f"offline: using the cached copy of {s}" for s in specs]
    missing = tireg_cli("install", "hf:someone/other", "--hf-endpoint", hub.url)
    assert missing.code == 1 and "not in the cache" in missing.stderr
    assert "using the cached copy" not in missing.stderr
