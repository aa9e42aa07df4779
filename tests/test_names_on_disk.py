"""Embedding names that reach the disk through install and convert follow tireg.paths' rule:
no bidi or other formatting controls, no Windows device names, a bounded length that keeps two
long names distinct."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.registry.test_install import ui_root
from tests.registry.test_query import add, make
from tireg.converters import write_file
from tireg.db.session import Catalogue, open_catalogue
from tireg.registry import install as inst
from tireg.registry.install import Destination

#: hostile names and a character that must not be in the file name made from them
HOSTILE = {
    "bidi_override": ("evil\u202egnp.pt", "\u202e"),
    "bidi_isolates": ("a\u2066b\u2067c\u2068d\u2069", "\u2066"),
    "zero_width": ("zero\u200bwidth", "\u200b"),
    "device": ("CON", None),
    "device_ext": ("nul.txt", None),
    "device_com": ("COM1", None),
    "device_lpt": ("LPT9.pt", None),
    "trailing": ("name. . ", None),
}

LONG = "名" * 100  # 300 bytes of UTF-8: over every file system's 255


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def _plain(name: str, banned: str | None) -> None:
    stem = name.split(".")[0].rstrip(" ")
    assert stem.upper() not in {"CON", "NUL", "COM1", "LPT9"}, name
    assert not name.endswith((".", " ")) and len(name.encode()) < 255, name
    if banned:
        assert banned not in name


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("ui", ["dir", "a1111", "comfyui", "invokeai"])
def test_install_file_names_are_safe(
    tmp_path: Path, catalogue: Catalogue, case: str, ui: str
) -> None:
    name, banned = HOSTILE[case]
    add(catalogue, make(name, 3))
    dest = (
        Destination.folder(tmp_path / "out")
        if ui == "dir"
        else Destination.ui(ui, ui_root(tmp_path, ui))
    )
    (out,) = inst.install(catalogue, [name], dest, force=True)
    path = Path(out.path)
    assert path.is_file() and path.resolve().is_relative_to(dest.root.resolve())
    _plain(path.name, banned)


def test_install_of_long_names_fits_and_keeps_them_apart(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    """Two 300-byte names that differ only at the end: two files, each under 255 bytes."""
    add(catalogue, make(LONG, 1))
    add(catalogue, make(LONG[:-1] + "字", 2))
    dest = Destination.folder(tmp_path / "out")
    outs = inst.install(catalogue, [LONG, LONG[:-1] + "字"], dest)
    names = {Path(o.path).name for o in outs}
    assert len(names) == 2
    assert all(len(n.encode()) < 255 for n in names)
    again = inst.install(catalogue, [LONG], dest)  # the same name gives the same file
    assert [o.status for o in again] == ["present"]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_convert_file_names_are_safe(tireg_cli, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    name, banned = HOSTILE[case]
    src = tmp_path / "in.safetensors"
    write_file(make(name, 4), src, "tireg")
    result = tireg_cli("convert", src, "--to", "a1111-pt", "--out-dir", tmp_path / "out")
    assert result.code == 0, result.stderr
    (written,) = (tmp_path / "out").iterdir()
    _plain(written.name, banned)


def test_convert_of_a_long_name_fits(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the longest name a reader accepts (converters.limits: 200 bytes) still gets a short file
    # name of its own; longer names are refused where they enter (tests/converters/test_hostile)
    longest = "名" * 66
    for i, name in enumerate([longest, longest[:-1] + "字"]):
        write_file(make(name, 5 + i), tmp_path / f"in{i}.safetensors", "tireg")
    result = tireg_cli(
        "convert", tmp_path / "in0.safetensors", tmp_path / "in1.safetensors",
        "--to", "safetensors", "--out-dir", tmp_path / "out",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 2 and all(len(n.encode()) < 255 for n in written)
