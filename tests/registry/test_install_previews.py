"""Previews travel with installs: A1111/Forge's Extra Networks show ``NAME.preview.png`` found
beside ``NAME.pt`` (``modules/ui_extra_networks.py``, ``ExtraNetworksPage.find_preview``), so
``install`` writes the catalogue's picture there and ``uninstall`` removes it with the file, or
says why it kept either.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.registry.make_files import random_embedding, write_one


def _picture() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def _setup(tireg_cli, tmp_path: Path) -> tuple[Path, bytes]:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    write_one(random_embedding(np.random.default_rng(3), "cat-toy"), folder, "cat-toy", "a1111-pt")
    picture = _picture()
    (folder / "cat-toy.preview.png").write_bytes(picture)
    assert tireg_cli("add", folder).code == 0
    root = tmp_path / "webui"
    (root / "embeddings").mkdir(parents=True)
    (root / "webui.py").write_text("")
    return root, picture


def _install(tireg_cli, root: Path) -> dict:  # type: ignore[no-untyped-def]
    done = tireg_cli("install", "cat-toy", "--ui", "a1111", "--ui-root", root, "--force", "--json")
    assert done.code == 0, done.stderr
    (record,) = json.loads(done.stdout)["installed"]
    return record  # type: ignore[no-any-return]


def test_install_writes_the_preview_where_a1111_looks(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, picture = _setup(tireg_cli, tmp_path)
    record = _install(tireg_cli, root)
    preview = root / "embeddings" / "cat-toy.preview.png"
    assert record["preview"] == str(preview) and preview.read_bytes() == picture
    listed = json.loads(tireg_cli("installed", "--json").stdout)
    assert [Path(r["path"]).name for r in listed] == [Path(record["path"]).name]
    gone = tireg_cli("uninstall", "cat-toy", "--json")
    assert gone.code == 0 and {r["status"] for r in json.loads(gone.stdout)} == {"removed"}
    assert sorted(p.name for p in (root / "embeddings").iterdir()) == []


def test_uninstall_says_why_it_kept_files(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, _ = _setup(tireg_cli, tmp_path)
    record = _install(tireg_cli, root)
    Path(record["path"]).write_bytes(b"edited by hand")
    kept = tireg_cli("uninstall", "cat-toy")
    assert kept.code == 0
    modified = "modified since tireg installed it; --force deletes it"
    with_it = "its embedding file was kept; --force deletes both"
    assert sorted(kept.stdout.splitlines()) == sorted(
        [
            f"kept: cat-toy: {record['path']} ({modified})",
            f"kept: cat-toy: {record['preview']} ({with_it})",
        ]
    )
    assert Path(record["preview"]).is_file()
    assert tireg_cli("uninstall", "cat-toy", "--force").code == 0
    assert list((root / "embeddings").iterdir()) == []


def test_install_for_forge_writes_the_preview_beside_its_file(tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Forge keeps A1111's Extra Networks (``modules/ui_extra_networks.py``, ``find_preview``
    in lllyasviel/stable-diffusion-webui-forge): ``NAME.preview.png`` beside ``NAME.<ext>``,
    whatever extension tireg writes for Forge."""
    root, picture = _setup(tireg_cli, tmp_path)
    done = tireg_cli("install", "cat-toy", "--ui", "forge", "--ui-root", root, "--json")
    assert done.code == 0, done.stderr
    (record,) = json.loads(done.stdout)["installed"]
    installed = Path(record["path"])
    assert installed.parent == root / "embeddings" and installed.stem == "cat-toy"
    preview = installed.with_name(f"{installed.stem}.preview.png")
    assert record["preview"] == str(preview) and preview.read_bytes() == picture
    gone = tireg_cli("uninstall", "cat-toy", "--json")
    assert gone.code == 0, gone.stderr
    assert {r["status"] for r in json.loads(gone.stdout)} == {"removed"}
    assert not installed.exists() and not preview.exists()
    assert list((root / "embeddings").iterdir()) == []
