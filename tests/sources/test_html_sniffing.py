"""A page is a page by its Content-Type or a real HTML root, never by a file's first bytes alone.

The real concept ``sd-concepts-library/metagabe`` has ``<metagabe>`` as its trigger, so its
``token_identifier.txt`` starts with ``<meta``: taking that for an HTML page broke ``sync hf``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HubServer, concept_repo
from tireg.sources import SourceError, hf
from tireg.sources.http import download, looks_like_html


def test_a_tag_like_file_is_not_a_page() -> None:
    for text in (b"<metagabe>", b"<head-knight>", b"<body-paint>", b"<title-card>", b"<!--x-->"):
        assert not looks_like_html(text, "text/plain"), text
        assert not looks_like_html(text, None), text
        assert not looks_like_html(text, "application/octet-stream"), text
    assert not looks_like_html(b"<htmlcat>", None)


def test_a_page_is_still_a_page() -> None:
    assert looks_like_html(b"\xef\xbb\xbf\n<!DOCTYPE html><title>x</title>", None)
    assert looks_like_html(b"<html lang=en><head>", "application/octet-stream")
    assert looks_like_html(b"<html>", None)
    assert looks_like_html(b"<meta charset=utf-8><title>Log in</title>", "text/html")


def test_metagabe_trigger_downloads(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/token_identifier.txt", Served(b"<metagabe>", content_type="text/plain"))
    assert download(url, tmp_path).path.read_bytes() == b"<metagabe>"
    file_server.add("/login", Served(b"<meta http-equiv=refresh>", content_type="text/html"))
    with pytest.raises(SourceError, match="HTML page"):
        download(file_server.url + "/login", tmp_path)


def test_sync_of_the_metagabe_concept(hub: HubServer) -> None:
    hub.add(concept_repo("sd-concepts-library/metagabe", "<metagabe>", "object"))
    got = hf.fetch("sd-concepts-library/metagabe", endpoint_url=hub.url)
    assert got[0].hints["trigger"] == "<metagabe>"
