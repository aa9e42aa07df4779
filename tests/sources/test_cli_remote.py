"""`tireg sync hf` and `tireg lookup` in-process, against the loopback servers."""

from __future__ import annotations

import json

import pytest

from tests.sources.servers.civitai_server import CivitaiModel, CivitaiServer, CivitaiVersion
from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HubServer, embedding_bytes


def test_sync_hf_cli_download_then_resync(hub: HubServer, tireg_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli("sync", "hf", "--hf-endpoint", hub.url, "--download", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["listed"] == 30 and len(report["downloaded"]) == 30 - len(report["gated"])
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # read at call time, not at import
    again = tireg_cli("sync", "hf")
    assert again.code == 0 and "unchanged (skipped)" in again.stdout


def test_sync_hf_offline_says_so(tireg_cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = tireg_cli("sync", "hf", "--hf-endpoint", "http://127.0.0.1:9")
    assert result.code == 1 and "offline" in result.stderr and "Traceback" not in result.stderr


def test_lookup_cli(civitai_server: CivitaiServer, tireg_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = embedding_bytes("emb_params", "safetensors", seed=4)
    civitai_server.add(
        CivitaiModel(
            5,
            "Bad Hands",
            [CivitaiVersion(55, {"bh.safetensors": data}, trained_words=["bad-hands"])],
        )
    )
    (tmp_path / "bh.safetensors").write_bytes(data)
    result = tireg_cli("lookup", tmp_path / "bh.safetensors", "--json")
    assert result.code == 0, result.stderr
    [found] = json.loads(result.stdout)
    assert found["spec"] == "civitai:5@55" and found["trigger_words"] == ["bad-hands"]
    by_name = tireg_cli("lookup", "bad-hands")
    assert by_name.code == 0 and "civitai:5@55" in by_name.stdout


def test_lookup_records_preview_urls_that_show_lists(  # type: ignore[no-untyped-def]
    civitai_server: CivitaiServer, tireg_cli, tmp_path
) -> None:
    data = embedding_bytes("emb_params", "safetensors", seed=6)
    version = CivitaiVersion(66, {"s.safetensors": data}, trained_words=["shown"], images=2)
    civitai_server.add(CivitaiModel(6, "Shown", [version]))
    (tmp_path / "s.safetensors").write_bytes(data)
    for _ in range(2):  # a second lookup adds nothing twice
        result = tireg_cli("lookup", tmp_path / "s.safetensors", "--json")
        assert result.code == 0, result.stderr
    [found] = json.loads(result.stdout)
    assert len(found["preview_urls"]) == 2
    shown = tireg_cli("show", "shown", "--json")
    assert shown.code == 0, shown.stderr
    previews = json.loads(shown.stdout)["previews"]
    assert previews == [{"location": url, "sha256": None} for url in found["preview_urls"]]
    assert all(url.startswith(civitai_server.url + "/images/66/") for url in found["preview_urls"])


def test_lookup_prints_civitai_text_as_text(
    civitai_server: CivitaiServer, tireg_cli, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Civitai's names and trigger words are anybody's text: ``[/bold]`` in one is printed as
    it is, never read as rich markup (which raised a MarkupError traceback)."""
    data = embedding_bytes("emb_params", "safetensors", seed=8)
    version = CivitaiVersion(88, {"m.safetensors": data}, trained_words=["[red]word[/red]"])
    civitai_server.add(CivitaiModel(8, "Marked [/bold] up", [version]))
    path = tmp_path / "[b]m.safetensors"
    path.write_bytes(data)
    result = tireg_cli("lookup", path)
    assert result.code == 0, result.stderr
    for text in ("[/bold]", "[red]word[/red]", "[b]m.safetensors"):
        assert text in result.stdout, result.stdout


def test_source_sync_prints_a_url_as_text(file_server: FileServer, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    """A source's URL is anybody's text: ``[/x]`` in its query is no rich markup."""
    url = file_server.add("/files/fox.safetensors", Served(embedding_bytes("x", "safetensors")))
    assert tireg_cli("source", "add", "url", url + "?v=[/x]").code == 0
    synced = tireg_cli("source", "sync")
    assert synced.code == 0, synced.stderr
    assert "[/x]" in synced.stdout, synced.stdout
