"""rentry pages end to end: add the page, sync its direct and MEGA rows from 127.0.0.1 servers,
keep manual rows with their reasons, and the CLI on top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.sources import mega_server
from tests.sources.mega_server import MegaStandIn
from tests.sources.servers.http_server import FileServer, Served
from tireg.converters import safetensors_file
from tireg.db import open_catalogue
from tireg.db.schema import CompatRow, EmbeddingRow, ProvenanceRow, SourceRow
from tireg.registry import source_sync

fake_mega = mega_server.fake_mega  # the fixture


def emb(seed: int, vectors: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_file.dumps(
        {"emb_params": rng.standard_normal((vectors, 768), dtype=np.float32)}
    )


def pt_bytes(seed: int) -> bytes:
    """An A1111 .pt (a torch zip pickle), made by torch as A1111 does."""
    import io

    import torch

    gen = torch.Generator().manual_seed(seed)
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.randn(2, 768, generator=gen)},
        "name": "gigachad",
        "step": 5000,
    }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


@pytest.fixture
def page(tmp_path: Path, file_server: FileServer, fake_mega: MegaStandIn) -> Path:
    direct = file_server.add("/8fd19x.safetensors", Served(emb(1)))
    pt = file_server.add("/f/1g5r0v.pt", Served(pt_bytes(2)))
    broken = file_server.add("/gone.pt", Served(b"", status=404))
    mega_link = fake_mega.add_file("fortune cookie.safetensors", emb(3, vectors=2))
    dead_mega = fake_mega.add_file("jojo.safetensors", emb(4))
    fake_mega.files.pop(mega_link_handle(dead_mega))  # deleted on MEGA: -9
    text = f"""# list of embeddings

||Model|Details|Download
-|:-:|:-:|:-:
Christina Ricci|Waifu Diffusion v1.2|[desuarchive.org](https://desuarchive.org/g/thread/1/#2)|[catbox]({direct})
GigaChad|Stable Diffusion v1.4|[desuarchive.org](https://desuarchive.org/g/thread/3/#4)|[catbox]({pt})
fortune cookie||[desuarchive.org](https://desuarchive.org/g/thread/5/#6)|[mega.nz]({mega_link})
Jojo|Stable Diffusion v1.4||[mega.nz]({dead_mega})
Dead link|SD 1.5||[x]({broken})
Sanna Marin|Stable Diffusion v1.4|[d](https://desuarchive.org/g/thread/7/#8)|[ufile.io](https://ufile.io/6em92kus)
Usada Pekora new|Waifu Diffusion v1.2||[drive.google.com](https://drive.google.com/file/d/1MDSmzSbzkIcw5_aw_i79xfO3CRWQDl-8)
"""
    path = tmp_path / "embeddings.md"
    path.write_text(text)
    return path


def mega_link_handle(link: str) -> str:
    return link.split("/file/")[1].split("#")[0]


def test_rentry_page_end_to_end(page: Path, fake_mega: MegaStandIn) -> None:
    catalogue = open_catalogue()
    ids = source_sync.add_source(catalogue, "rentry", str(page))
    assert len(ids) == 7
    listed = {s.title: s for s in source_sync.list_sources(catalogue)}
    assert listed["fortune cookie"].kind == "mega"
    assert listed["Christina Ricci"].kind == "url"
    assert listed["Christina Ricci"].base_model_hint == "Waifu Diffusion v1.2"
    assert listed["Sanna Marin"].status == "manual" and "ufile.io" in (
        listed["Sanna Marin"].status_reason or ""
    )
    assert "Google Drive" in (listed["Usada Pekora new"].status_reason or "")

    report = source_sync.sync_sources(catalogue)
    by_title = {listed_title(catalogue, o.id): o for o in report.sources}
    assert (
        by_title["Christina Ricci"].status == "synced"
        and len(by_title["Christina Ricci"].imported) == 1
    )
    assert by_title["GigaChad"].status == "synced" and len(by_title["GigaChad"].imported) == 1
    assert by_title["fortune cookie"].status == "synced"
    assert by_title["Jojo"].status == "gone" and "no longer exists" in (
        by_title["Jojo"].message or ""
    )
    assert by_title["Dead link"].status == "failed" and "404" in (
        by_title["Dead link"].message or ""
    )
    assert by_title["Sanna Marin"].status == "manual"
    assert len(report.failed) == 2

    with catalogue.reading() as session:
        rows = {r.name: r for r in session.scalars(select(EmbeddingRow))}
        assert set(rows) == {"8fd19x", "gigachad", "fortune cookie"}
        assert rows["gigachad"].num_vectors == 2 and rows["gigachad"].step == 5000
        assert rows["8fd19x"].description.startswith(
            "Christina Ricci (details: https://desuarchive"
        )
        hints = session.scalars(
            select(CompatRow.model_ref).where(CompatRow.relation == "base_model_hint")
        ).all()
        assert set(hints) == {"Waifu Diffusion v1.2", "Stable Diffusion v1.4"}
        mega_prov = session.scalars(
            select(ProvenanceRow).join(SourceRow).where(SourceRow.kind == "mega")
        ).one()
        assert mega_prov.location.startswith("https://mega.nz/file/")
        statuses = {r[0]: r[1] for r in session.execute(select(SourceRow.title, SourceRow.status))}
        assert statuses["Jojo"] == "gone" and statuses["Christina Ricci"] == "fetched"

    again = source_sync.sync_sources(
        catalogue, ids=[listed["fortune cookie"].id, listed["Christina Ricci"].id]
    )
    assert [len(o.known) for o in again.sources] == [1, 1]
    assert all(not o.imported for o in again.sources)
    catalogue.close()


def listed_title(catalogue, source_id: int) -> str:  # type: ignore[no-untyped-def]
    with catalogue.reading() as session:
        return session.get(SourceRow, source_id).title


def test_corpus_page_becomes_sources_without_network(corpus: Path) -> None:
    catalogue = open_catalogue()
    ids = source_sync.add_source(catalogue, "rentry", str(corpus / "rentry-embeddings-2023.md"))
    sources = source_sync.list_sources(catalogue)
    assert len(ids) == 26 and len(sources) == 26
    kinds = {(s.kind, s.status) for s in sources}
    assert kinds == {("url", "available"), ("mega", "available"), ("url", "manual")}
    assert sum(s.status == "manual" for s in sources) == 3
    assert sum(s.kind == "mega" for s in sources) == 2
    assert {s.base_model_hint for s in sources} >= {"Waifu Diffusion v1.2", "Yiffy e15", None}
    # adding the same page again updates, never duplicates
    assert (
        source_sync.add_source(catalogue, "rentry", str(corpus / "rentry-embeddings-2023.md"))
        == ids
    )
    catalogue.close()


def test_cli_add_list_sync(page: Path, tireg_cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    added = tireg_cli("source", "add", "rentry", str(page), "--json")
    assert added.code == 0, added.stderr
    assert len(json.loads(added.stdout)) == 7
    listed = tireg_cli("source", "list", "--status", "manual", "--json")
    assert [s["title"] for s in json.loads(listed.stdout)] == ["Sanna Marin", "Usada Pekora new"]
    table = tireg_cli("source", "list")
    assert table.code == 0 and "manual" in table.stdout
    synced = tireg_cli("source", "sync", "--json")
    assert synced.code == 1  # two sources failed (gone, 404)
    counts = json.loads(synced.stdout)["counts"]
    assert counts["imported"] == 3 and counts["gone"] == 1 and counts["failed"] == 1
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    ids = [
        s["id"] for s in json.loads(tireg_cli("source", "list", "--kind", "mega", "--json").stdout)
    ]
    offline = tireg_cli("source", "sync", str(ids[0]))
    assert offline.code == 0 and "offline" in offline.stdout
    bad = tireg_cli("source", "add", "svn", "x")
    assert bad.code == 1 and "unknown source kind" in bad.stderr
    missing = tireg_cli("source", "sync", "999")
    assert missing.code == 1 and "no source with id 999" in missing.stderr
