"""Fixtures for source clients: loopback servers and quick retries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sources.servers.civitai_server import CivitaiServer
from tests.sources.servers.http_server import FileServer, running
from tests.sources.servers.hub_server import INDEX, HubServer, seed_from_index
from tireg.db.session import Catalogue, open_catalogue


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back off in milliseconds, so injected 429s and 500s cost no test time."""
    monkeypatch.setenv("TIREG_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("TIREG_HTTP_RETRIES", "4")


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A plain HTTP server on 127.0.0.1 (Range, ETag, scripted faults)."""
    with running(FileServer()) as server:
        yield server


@pytest.fixture
def hub() -> Iterator[HubServer]:
    """A Hub API stand-in seeded with the first 30 repos of the real sd-concepts listing."""
    if not INDEX.is_file():
        pytest.skip(f"shared corpus not found at {INDEX}")
    server = HubServer(seed_from_index(30, fmt="safetensors"), page_size=7)
    with running(server.http):
        yield server


@pytest.fixture
def civitai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[CivitaiServer]:
    """A Civitai API stand-in; TIREG_CIVITAI_API points at it."""
    server = CivitaiServer()
    monkeypatch.setenv("TIREG_CIVITAI_API", server.api)
    for name in ("CIVITAI_API_KEY", "TIREG_CIVITAI_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with running(server.http):
        yield server


@pytest.fixture
def catalogue() -> Iterator[Catalogue]:
    """A fresh catalogue in this test's TIREG_HOME."""
    opened = open_catalogue()
    try:
        yield opened
    finally:
        opened.close()


def reads_pickles() -> bool:
    """Whether tireg's converters read torch ``.bin`` files yet (restricted loader)."""
    import io

    import torch

    from tireg.converters import read_bytes

    buffer = io.BytesIO()
    torch.save({"<x>": torch.zeros(768)}, buffer)
    try:
        read_bytes(buffer.getvalue(), name_hint="x")
    except Exception:
        return False
    return True
