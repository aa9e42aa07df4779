"""rentry.org link pages: turn a ``Name | Model | Details | Download`` table into sources.

A rentry page (rentry.org/embeddings) is a hand-kept table of links to 2022-era file hosts. We
read either its Markdown (a saved copy, or ``/raw`` where the owner allows it) or the rendered
HTML that ``https://rentry.org/ID`` serves to everyone (``/raw`` needs an access code since 2024).
Each download link is routed by host:

* **direct** (``url``): GitLab/gitgud raw files (``/-/raw/``), GitHub raw, HF ``/resolve/``,
  catbox and pomf-style hosts: a plain GET returns the file;
* **mega**: MEGA file and folder links (:mod:`tireg.sources.mega`);
* **manual**: Google Drive and ufile.io answer with an HTML landing page (virus-scan interstitial,
  a download button behind JavaScript), so the row is kept with the reason and the user downloads
  it by hand.

The "Model" column (``Waifu Diffusion v1.2``) is kept verbatim as a base-model hint.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from tireg import config
from tireg.sources import SourceError
from tireg.sources.http import (
    RETRY_STATUSES,
    TIMEOUT,
    RetryPolicy,
    http_session,
    looks_like_html,
)
from tireg.sources.mega import is_mega_link

DIRECT, MEGA, MANUAL = "url", "mega", "manual"
DIRECT_HOSTS = (
    "files.catbox.moe",
    "litter.catbox.moe",
    "pomf2.lain.la",
    "a.pomf.cat",
    "raw.githubusercontent.com",
    "cdn.discordapp.com",
)
MANUAL_HOSTS = {
    "drive.google.com": "Google Drive answers with an HTML confirmation page, not the file",
    "docs.google.com": "Google Drive answers with an HTML confirmation page, not the file",
    "ufile.io": "ufile.io is an HTML landing page whose download button needs a browser",
    "anonfiles.com": "anonfiles is an HTML landing page (and the host has shut down)",
}
FILE_SUFFIXES = (".pt", ".bin", ".safetensors", ".pth", ".png", ".webp")
MAX_PAGE_BYTES = 4 * 1024 * 1024
MANUAL_HINT = "download it in a browser, then `tireg add FILE`"


@dataclass(frozen=True)
class RentryRow:
    """One download link of a rentry table row."""

    name: str  # the row's name cell ("Amane Kanata")
    base_model: str | None  # the Model cell, verbatim ("Waifu Diffusion v1.2"); None if blank
    details_url: str | None  # the Details link (a README anchor, an archived thread)
    url: str  # the download link
    route: str  # url | mega | manual
    reason: str | None = None  # why a manual row cannot be fetched automatically

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()


def classify(url: str) -> tuple[str, str | None]:
    """(route, reason) for a download link: ``url`` (direct), ``mega`` or ``manual``."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return MANUAL, f"not an http(s) link: {url}"
    if is_mega_link(url):
        return MEGA, None
    if host in MANUAL_HOSTS:
        return MANUAL, MANUAL_HOSTS[host]
    path = parts.path
    if (
        host in DIRECT_HOSTS
        or host.endswith(".lain.la")
        or "/-/raw/" in path
        or (host == "github.com" and "/raw/" in path)
        or (host == "huggingface.co" and "/resolve/" in path)
    ):
        return DIRECT, None
    if path.lower().endswith(FILE_SUFFIXES):
        return DIRECT, None
    return MANUAL, f"{host} is not a host tireg knows to serve files directly"


# ------------------------------------------------------------------------------------ parsing


@dataclass
class _Cell:
    text: str
    links: list[str]


def parse(text: str, *, base_url: str | None = None) -> list[RentryRow]:
    """Rows of every link table in a rentry page, Markdown or rendered HTML (detected)."""
    if looks_like_html(text.lstrip().encode()[:1024]) or re.search(r"<table[\s>]", text, re.I):
        tables = _html_tables(text)
    else:
        tables = _markdown_tables(text)
    rows: list[RentryRow] = []
    for table in tables:
        rows += _rows_of(table, base_url)
    return rows


_MD_LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_BARE_URL = re.compile(r"(?<![(<\"])\bhttps?://[^\s|)>\]]+")


def _md_cell(raw: str) -> _Cell:
    links = [m[2] for m in _MD_LINK.finditer(raw)]
    rest = _MD_LINK.sub(lambda m: m[1], raw)
    links += _BARE_URL.findall(rest)
    text = re.sub(r"[*_`]", "", rest).strip()
    return _Cell(text, links)


def _md_split(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def _markdown_tables(text: str) -> list[list[list[_Cell]]]:
    """GitHub-style pipe tables: a header row, a ``-|:-:`` delimiter row, then body rows."""
    lines = text.splitlines()
    tables: list[list[list[_Cell]]] = []
    i = 0
    while i + 1 < len(lines):
        delimiter = lines[i + 1].strip()
        if "|" in lines[i] and re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", delimiter):
            table = [[_md_cell(c) for c in _md_split(lines[i])]]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                table.append([_md_cell(c) for c in _md_split(lines[i])])
                i += 1
            tables.append(table)
        else:
            i += 1
    return tables


class _TableParser(HTMLParser):
    """Collect the cells (text and hrefs) of every ``<table>`` in a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[_Cell]]] = []
        self._depth = 0
        self._row: list[_Cell] | None = None
        self._cell: _Cell | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
            if self._depth == 1:
                self.tables.append([])
        elif self._depth == 1 and tag == "tr":
            self._row = []
        elif self._depth == 1 and tag in ("td", "th") and self._row is not None:
            self._cell = _Cell("", [])
            self._row.append(self._cell)
        elif tag == "a" and self._cell is not None:
            href = dict(attrs).get("href")
            if href:
                self._cell.links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._depth = max(0, self._depth - 1)
        elif self._depth == 1 and tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data


def _html_tables(text: str) -> list[list[list[_Cell]]]:
    parser = _TableParser()
    parser.feed(text)
    parser.close()
    for table in parser.tables:
        for row in table:
            for cell in row:
                cell.text = " ".join(cell.text.split())
    return parser.tables


def _rows_of(table: list[list[_Cell]], base_url: str | None) -> list[RentryRow]:
    """Rows of one table whose header has a Download column (Model/Details optional)."""
    if not table:
        return []
    header = [c.text.strip().lower() for c in table[0]]
    if "download" not in header:
        return []
    col_download = header.index("download")
    col_model = header.index("model") if "model" in header else None
    col_details = header.index("details") if "details" in header else None
    col_name = header.index("name") if "name" in header else 0
    rows: list[RentryRow] = []
    for cells in table[1:]:
        if len(cells) <= col_download:
            continue
        name = cells[col_name].text if col_name < len(cells) else ""
        model = cells[col_model].text if col_model is not None and col_model < len(cells) else ""
        details = (
            cells[col_details].links[:1]
            if col_details is not None and col_details < len(cells)
            else []
        )
        for link in cells[col_download].links:
            url = urljoin(base_url, link) if base_url else link
            route, reason = classify(url)
            rows.append(
                RentryRow(
                    name or Path(urlsplit(url).path).stem,
                    model or None,
                    details[0] if details else None,
                    url,
                    route,
                    reason,
                )
            )
    return rows


# ------------------------------------------------------------------------------------ loading


def load(page: str) -> tuple[str, str | None]:
    """The text of a rentry page and its URL: ``page`` is a local file, or a URL fetched as the
    rendered HTML (``/raw`` is access-gated since 2024, so it is not asked for)."""
    local = Path(page).expanduser()
    if not re.match(r"^https?://", page):
        try:
            data = local.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read the page: {exc.strerror or exc}", path=page) from None
        if len(data) > MAX_PAGE_BYTES:
            raise SourceError("too large for a rentry page", path=page)
        return data.decode("utf-8", "replace"), None
    if config.offline():
        raise SourceError(
            "offline: not fetching the page",
            path=page,
            hint="save the page and pass the file instead",
        )
    return _get_page(page), page


def _get_page(url: str) -> str:
    policy = RetryPolicy.from_env()
    reason = ""
    for attempt in range(policy.attempts):
        if attempt:
            time.sleep(policy.delay(attempt - 1))
        try:
            resp = http_session().get(url, timeout=TIMEOUT)
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = type(exc).__name__
            continue
        if resp.status_code in RETRY_STATUSES:
            reason = f"HTTP {resp.status_code}"
            continue
        if resp.status_code != 200:
            raise SourceError(
                f"HTTP {resp.status_code} for the page",
                path=url,
                hint="check the rentry id, or save the page and pass the file",
            )
        if len(resp.content) > MAX_PAGE_BYTES:
            raise SourceError("too large for a rentry page", path=url)
        return resp.text
    raise SourceError(f"could not fetch the page ({reason})", path=url, hint="retry later")
