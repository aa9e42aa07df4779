"""rentry link pages: the archived Markdown, rendered HTML, and host routing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tireg.sources import rentry

HTML = """<!DOCTYPE html><html><head><title>embeddings</title></head><body>
<div class="entry-text"><article>
<h1>list of <a href="https://textual-inversion.github.io/">Textual Inversion</a> embeddings</h1>
<div class="text-center"><a href="https://huggingface.co/sd-concepts-library">sd-concepts-library</a></div>
<div class="ntable-wrapper"><table class="ntable">
<thead><tr><th></th><th>Model</th><th>Details</th><th>Download</th></tr></thead>
<tbody>
<tr><td>Amane Kanata</td><td>Waifu Diffusion v1.2</td>
<td><a href="https://gitlab.com/cattoroboto/waifu-diffusion-embeds#amane-kanata-hololive">gitlab.com</a></td>
<td><a href="https://gitlab.com/cattoroboto/waifu-diffusion-embeds/-/raw/main/embeddings/kanata-hololive.bin">gitlab.com</a></td></tr>
<tr><td>fortune &amp; cookie</td><td></td>
<td><a href="https://desuarchive.org/g/thread/88902753/#88905430">desuarchive.org</a></td>
<td><a href="https://mega.nz/file/IABX1QKS#8vsSqlUm-o6QNB2gjSQeJzED1dtKOZVWdE8-By0INlI">mega.nz</a></td></tr>
<tr><td>Usada Pekora new</td><td>Waifu Diffusion v1.2</td>
<td><a href="https://github.com/AUTOMATIC1111/stable-diffusion-webui/wiki/Textual-Inversion">github.com</a></td>
<td><a href="https://drive.google.com/file/d/1MDSmzSbzkIcw5_aw_i79xfO3CRWQDl-8">drive.google.com</a></td></tr>
<tr><td>relative</td><td>SD 1.5</td><td></td><td><a href="/files/x.pt">here</a></td></tr>
</tbody></table></div>
<table><tr><th>Other</th><th>table</th></tr><tr><td>a</td><td>b</td></tr></table>
</article></div></body></html>
"""


def test_corpus_page_gives_every_row(corpus: Path) -> None:
    rows = rentry.parse((corpus / "rentry-embeddings-2023.md").read_text())
    assert len(rows) == 26
    assert Counter(r.host for r in rows) == {
        "files.catbox.moe": 10,
        "gitlab.com": 5,
        "gitgud.io": 5,
        "mega.nz": 2,
        "ufile.io": 2,
        "pomf2.lain.la": 1,
        "drive.google.com": 1,
    }
    assert Counter(r.route for r in rows) == {"url": 21, "mega": 2, "manual": 3}
    kanata = rows[0]
    assert kanata.name == "Amane Kanata"
    assert kanata.base_model == "Waifu Diffusion v1.2"
    assert (
        kanata.details_url
        == "https://gitlab.com/cattoroboto/waifu-diffusion-embeds#amane-kanata-hololive"
    )
    assert kanata.url.endswith("/-/raw/main/embeddings/kanata-hololive.bin")
    by_name = {r.name: r for r in rows}
    assert by_name["cookies"].base_model is None
    assert by_name["Hellhound (MGE) v2"].base_model == "Yiffy e15"
    assert by_name["Hoshimachi Suisei"].base_model  # two rows share the name; both kept
    assert sum(r.name == "Hoshimachi Suisei" for r in rows) == 2
    manual = {r.name: r.reason for r in rows if r.route == "manual"}
    assert set(manual) == {"Morfydd Clark as Galadriel", "Sanna Marin", "Usada Pekora new"}
    assert "Google Drive" in manual["Usada Pekora new"]
    assert "ufile.io" in manual["Sanna Marin"]


def test_rendered_html_page() -> None:
    rows = rentry.parse(HTML, base_url="https://rentry.org/embeddings")
    assert [(r.name, r.route) for r in rows] == [
        ("Amane Kanata", "url"),
        ("fortune & cookie", "mega"),
        ("Usada Pekora new", "manual"),
        ("relative", "url"),
    ]
    assert rows[0].base_model == "Waifu Diffusion v1.2" and rows[1].base_model is None
    assert rows[3].url == "https://rentry.org/files/x.pt"


@pytest.mark.parametrize(
    ("url", "route"),
    [
        ("https://files.catbox.moe/8fd19x.bin", "url"),
        ("https://pomf2.lain.la/f/r8jqvmne.pt", "url"),
        (
            "https://gitgud.io/viper1/stable-diffusion-embeddings/-/raw/master/embeddings/botan-50000.pt",
            "url",
        ),
        (
            "https://huggingface.co/sd-concepts-library/cat-toy/resolve/main/learned_embeds.bin",
            "url",
        ),
        ("https://mega.nz/#!IABX1QKS!8vsSqlUm-o6QNB2gjSQeJzED1dtKOZVWdE8-By0INlI", "mega"),
        ("https://mega.co.nz/folder/7k0R2arB#5_u6PYfdn-ZS7sRdoecD2A", "mega"),
        ("https://drive.google.com/file/d/1MDSmzSbzkIcw5_aw_i79xfO3CRWQDl-8", "manual"),
        ("https://ufile.io/ng7ele1w", "manual"),
        ("https://example.com/thread/123", "manual"),
        ("ftp://example.com/x.pt", "manual"),
    ],
)
def test_classify(url: str, route: str) -> None:
    assert rentry.classify(url)[0] == route


def test_tables_without_a_download_column_are_ignored() -> None:
    assert rentry.parse("a|b\n-|-\n1|2\n") == []
    assert rentry.parse("no tables here") == []


def test_load_reads_files_and_refuses_offline_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "page.md"
    page.write_text("x")
    assert rentry.load(str(page)) == ("x", None)
    with pytest.raises(rentry.SourceError, match="cannot read"):
        rentry.load(str(tmp_path / "missing.md"))
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    with pytest.raises(rentry.SourceError, match="offline"):
        rentry.load("https://rentry.org/embeddings")
