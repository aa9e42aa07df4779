"""The one rule for names and paths built from remote or file-supplied text (tireg.paths)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tireg.paths import (
    _PLAIN_NAME,
    MAX_NAME_BYTES,
    UnsafePathError,
    _plain,
    join_under,
    safe_part,
    safe_relative_path,
)


@pytest.mark.parametrize(
    ("remote", "safe"),
    [
        ("../../x.pt", "x.pt"),
        ("/etc/passwd", "passwd"),
        ("C:\\Windows\\evil.bin", "evil.bin"),
        ("..", "download"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("com1.pt", "_com1.pt"),
        ("LPT9.pt", "_LPT9.pt"),
        ("con .pt", "_con .pt"),
        ("aux...", "_aux"),
        ("name. . ", "name"),
        ("a\x00b\x1b[31m.pt", "ab[31m.pt"),
        ("we<i>rd:na|me?.pt", "we_i_rd_na_me_.pt"),
        (" .hidden. ", "hidden"),
        ("evil\u202egnp.pt", "evilgnp.pt"),
        ("\u2066a\u2067b\u2068c\u2069\u202a\u202b\u202c\u202d\u200f\u061c.pt", "abc.pt"),
        ("zero\u200bwidth\ufeff.pt", "zerowidth.pt"),
        ("line\u2028break\u2029.pt", "linebreak.pt"),
        ("lone\ud800surrogate.pt", "lonesurrogate.pt"),
        ("\u202e\u202e", "download"),
    ],
)
def test_safe_part(remote: str, safe: str) -> None:
    assert safe_part(remote, fallback="download") == safe


@pytest.mark.parametrize("long", ["x" * 300 + ".safetensors", "é" * 300 + ".pt", "名" * 300])
def test_long_names_are_capped_in_bytes_with_a_stable_hash(long: str) -> None:
    short = safe_part(long)
    assert len(short.encode()) <= MAX_NAME_BYTES
    assert short == safe_part(long)  # stable: the same name always gives the same file
    assert short.endswith(PurePosixPath(long).suffix)
    other = safe_part(long[:-20] + "y" + long[-19:])  # same prefix, one character differs
    assert other != short and len(other.encode()) <= MAX_NAME_BYTES


def test_cap_leaves_room_for_a_suffix() -> None:
    stem = safe_part("s" * 400, max_bytes=160)
    assert len(stem.encode()) <= 160
    assert len(f".{stem}.safetensors_2.0123456789ab.tireg-tmp".encode()) < 255


def test_safe_relative_path() -> None:
    assert str(safe_relative_path("concept_images/0.jpeg")) == "concept_images/0.jpeg"
    assert str(safe_relative_path("a\\b/c\u202e.pt")) == "a/b/c.pt"
    for bad in ("../x", "a/../../x", "/abs", "C:/x", "", "a\\..\\..\\x", "a/\x00/b"):
        with pytest.raises(UnsafePathError):
            safe_relative_path(bad)


def test_join_under_keeps_inside(tmp_path: Path) -> None:
    assert join_under(tmp_path, "a", PurePosixPath("b/c.pt")) == tmp_path / "a" / "b" / "c.pt"
    for bad in ("..", "../x", "a/../../x", "/etc/passwd", "C:\\x", "a\\..\\b", "a\x00b", "x" * 256):
        with pytest.raises(UnsafePathError):
            join_under(tmp_path, bad)
    assert not any(tmp_path.iterdir())  # refusing creates nothing


def test_join_under_refuses_a_symlink_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePathError, match="resolves outside"):
        join_under(root, "link", "x.pt")


def test_join_under_judges_links_as_resolving_the_whole_path_does(tmp_path: Path) -> None:
    """join_under looks only at the names below its root; on every path through a tree of
    links (out, back in, chained, relative, dangling, through a file, a loop), and under a
    root reached through a link itself, it accepts exactly what ``realpath`` of the whole
    joined path and of the root would."""
    real, outside = tmp_path / "real", tmp_path / "outside"
    (real / "sub" / "deep").mkdir(parents=True)
    (outside / "back").mkdir(parents=True)
    (real / "file").write_text("x")
    os.symlink(outside, real / "out")
    os.symlink(real / "sub", outside / "in")  # out/in leads back under the root
    os.symlink("sub/deep", real / "rel")
    os.symlink(real / "out", real / "chain")
    os.symlink(tmp_path / "missing", real / "dangling")
    os.symlink("loop", real / "loop")
    os.symlink("..", real / "sub" / "up")  # sub/up is the root itself
    os.symlink(real, tmp_path / "alias")
    names = ["sub", "deep", "out", "in", "back", "rel", "chain", "dangling", "loop", "up"]
    names += ["file", "new"]
    paths = [[a] for a in names] + [[a, b] for a in names for b in names]
    paths += [[a, b, "x.pt"] for a in names for b in names]
    for root in (real, tmp_path / "alias"):
        for parts in paths:
            whole = os.path.realpath(root.joinpath(*parts))
            inside = Path(whole).is_relative_to(os.path.realpath(root))
            try:
                joined = join_under(root, *parts)
            except UnsafePathError:
                assert not inside, parts
            else:
                assert inside and joined == root.joinpath(*parts), parts


_NAME_CHARS = st.sampled_from(list("aZ09 ._-~()[]{}!'#$%&+,;=@`^") + list('<>:"|?*/\\\x00\x1f\x7f'))


@settings(max_examples=3000, deadline=None)
@given(st.text(_NAME_CHARS | st.characters(), max_size=12))
def test_plain_names_shortcut_is_what_the_steps_give(name: str) -> None:
    """safe_part keeps a name its plain-name pattern matches without running steps 1-5: the
    steps must give that name back unchanged, and every name they leave alone that is printable
    ASCII must match (the shortcut is taken for every ordinary file name)."""
    if _PLAIN_NAME.fullmatch(name):
        assert _plain(name) == name
    elif name and name.isascii() and name.isprintable():
        assert _plain(name) != name


def test_plain_names_of_the_corpus_and_the_hub_listing() -> None:
    corpus = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    index = json.loads((corpus / "sd-concepts-library-index.json").read_text())
    names = [p.name for p in corpus.iterdir()] + [e["model_name"] for e in index]
    for name in names:
        assert _PLAIN_NAME.fullmatch(name) and safe_part(name) == _plain(name) == name
