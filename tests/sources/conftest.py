"""Fixtures for source clients: loopback servers and quick retries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sources.servers.http_server import FileServer, running
from tests.sources.servers.hub_server import INDEX, HubServer, seed_from_index


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
