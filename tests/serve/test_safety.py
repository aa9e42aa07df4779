"""The gallery is safe by default: loopback only, CSRF-checked POSTs, pictures by id only, no
directory listing, and failures in the CLI's own words. All against a real ``tireg serve``."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy import select

from tests.serve.conftest import Server, Setup
from tireg.db.schema import EmbeddingRow, PreviewRow
from tireg.db.session import open_catalogue


def _ids(name: str) -> list[int]:
    with open_catalogue() as catalogue, catalogue.reading() as session:
        return list(session.scalars(select(EmbeddingRow.id).where(EmbeddingRow.name == name)))


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def test_binds_loopback_by_default(server: Server) -> None:
    assert urlsplit(server.url).hostname == "127.0.0.1"
    port = urlsplit(server.url).port
    assert requests.get(server.url, headers={"Host": f"localhost:{port}"}).status_code == 200
    # DNS rebinding: another site's name pointed at 127.0.0.1 must not reach the gallery
    rebound = requests.get(server.url, headers={"Host": f"attacker.example:{port}"})
    assert rebound.status_code == 403
    assert "answers only to 127.0.0.1 and localhost" in rebound.text


def test_a_post_without_the_token_is_refused(server: Server, gallery_setup: Setup) -> None:
    (cat,) = _ids("cat-toy")
    browser = requests.Session()
    page = browser.get(f"{server.url}/e/{cat}")
    assert page.status_code == 200
    token = _csrf(page.text)
    for form in ({"ui": "a1111"}, {"ui": "a1111", "csrf": "forged"}):
        refused = browser.post(f"{server.url}/e/{cat}/install", data=form)
        assert refused.status_code == 403
        assert "security token is missing or stale" in refused.text
    # another client (no session cookie) cannot use a token it read from someone else's page
    stranger = requests.post(f"{server.url}/e/{cat}/install", data={"ui": "a1111", "csrf": token})
    assert stranger.status_code == 403
    assert list((gallery_setup.a1111 / "embeddings").iterdir()) == []
    done = browser.post(f"{server.url}/e/{cat}/install", data={"ui": "a1111", "csrf": token})
    assert done.status_code == 200
    assert (gallery_setup.a1111 / "embeddings" / "cat-toy.safetensors").is_file()
    assert "installed: " in done.text


def test_pictures_only_by_id(server: Server, gallery_setup: Setup, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes((gallery_setup.files / "part0" / "cat-toy.preview.png").read_bytes())
    with open_catalogue() as catalogue, catalogue.reading() as session:
        preview_id = session.scalars(select(PreviewRow.id)).first()
    assert requests.get(f"{server.url}/preview/{preview_id}").headers["content-type"] == (
        "image/png"
    )
    home = gallery_setup.home
    for attempt in (
        "/preview/../catalogue.sqlite",
        "/preview/%2e%2e%2fcatalogue.sqlite",
        "/preview/..%2F..%2Fetc%2Fpasswd",
        f"/preview/{secret}",
        f"/preview//{secret}",
        f"/thumb/%2F{str(secret).lstrip('/')}",
        "/preview/999999",
        "/static/../serve/app.py",
        "/static/%2e%2e/app.py",
        f"/static/{home}/catalogue.sqlite",
        "/static/",
        "/static",
        "/preview/",
    ):
        answer = requests.get(server.url + attempt)  # werkzeug may first merge slashes (308)
        assert answer.status_code == 404, attempt
        assert "Traceback" not in answer.text
        assert "catalogue.sqlite" not in answer.text or attempt.endswith("catalogue.sqlite")
    assert requests.get(f"{server.url}/static/style.css").status_code == 200


def test_thumbnails_are_made_once(server: Server, gallery_setup: Setup) -> None:
    with open_catalogue() as catalogue, catalogue.reading() as session:
        preview_id = session.scalars(select(PreviewRow.id)).first()
    first = requests.get(f"{server.url}/thumb/{preview_id}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    (cached,) = (gallery_setup.home / "cache" / "thumbs").rglob("*.jpg")
    made = cached.stat().st_mtime_ns
    again = requests.get(f"{server.url}/thumb/{preview_id}")
    assert again.content == first.content
    assert cached.stat().st_mtime_ns == made
    assert list((gallery_setup.home / "cache" / "thumbs").rglob("*.jpg")) == [cached]


def test_errors_are_the_cli_line(server: Server, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    cli = tireg_cli("list", "--tag", "nosuchtag")
    assert cli.code == 1
    line = cli.stderr.strip().removeprefix("error: ")
    page = requests.get(f"{server.url}/", params={"tag": "nosuchtag"})
    shown = re.search(r'id="error">error: (.*?)</p>', page.text)
    assert shown is not None
    assert _unescape(shown.group(1)) == line
    missing = requests.get(f"{server.url}/ref", params={"spec": "no-such-thing"})
    assert missing.status_code == 404
    cli = tireg_cli("show", "no-such-thing")
    assert cli.stderr.strip().removeprefix("error: ") in _unescape(missing.text)
    assert "Traceback" not in missing.text


def _unescape(html: str) -> str:
    import html as html_lib

    return html_lib.unescape(html)


def test_validations_and_their_grids(server: Server) -> None:
    (painting,) = _ids("sd2-painting")
    page = requests.get(f"{server.url}/e/{painting}").text
    section = page.split('id="validations"', 1)[1].split("</section>", 1)[0]
    assert "on sd2 test model; seeds 1; 2 images" in _unescape(section)
    run_id = re.search(r'href="/grid/(\d+)"', section)
    assert run_id is not None
    grid = requests.get(f"{server.url}/grid/{run_id.group(1)}")
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    thumb = requests.get(f"{server.url}/grid/{run_id.group(1)}/thumb")
    assert thumb.headers["content-type"] == "image/jpeg"
    gallery = requests.get(f"{server.url}/", params={"family": "sd2"}).text
    assert f'src="/grid/{run_id.group(1)}/thumb"' in gallery
    assert requests.get(f"{server.url}/grid/999").status_code == 404
    (cat,) = _ids("cat-toy")
    assert "not validated yet" in requests.get(f"{server.url}/e/{cat}").text
