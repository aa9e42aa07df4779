"""A gallery page builds each route once (``serve.app.CardLinks``): its links must be exactly
what Flask's ``url_for`` builds for every card, including under a script root."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from flask import url_for

from tireg.db import open_catalogue
from tireg.serve.app import CardLinks, create_app
from tireg.serve.pages import GalleryQuery


def test_card_links_are_what_url_for_builds() -> None:
    with open_catalogue() as catalogue:
        app = create_app(catalogue)
        wanted = GalleryQuery(words="cat toy", family="sdxl", tag="old", model=3, page=4)
        for root in ("", "/tireg"):
            with app.test_request_context("/", base_url=f"http://127.0.0.1{root}"):
                links = CardLinks(wanted)
                for i in (1, 42, 100000):
                    assert links.embedding(i) == url_for("embedding", row_id=i)
                    assert links.thumb(i) == url_for("thumb", preview_id=i)
                    assert links.grid_thumb(i) == url_for("grid_thumb", run_id=i)
                for tag in ("anime", "a&b=c", "板蓝根"):
                    built = urlsplit(links.tag(tag))
                    expected = urlsplit(url_for("gallery", **wanted.link(tag=tag, page=1)))
                    assert built.path == expected.path
                    assert parse_qs(built.query) == parse_qs(expected.query)
                    assert parse_qs(built.query)["tag"] == [tag]


def test_settle_compiles_templates_and_freezes_what_is_alive() -> None:
    """In a process of its own: what ``settle`` freezes stays for the life of the process."""
    import subprocess
    import sys

    script = (
        "import gc\n"
        "from tireg.db import open_catalogue\n"
        "from tireg.serve.app import create_app, settle\n"
        "app = create_app(open_catalogue())\n"
        "assert gc.get_freeze_count() == 0\n"
        "settle(app)\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
        "assert any(key[1] == 'gallery.html' for key in app.jinja_env.cache.keys())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
