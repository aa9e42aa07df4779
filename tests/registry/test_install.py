"""Installing into UI folders: layout, formats, collisions, idempotence, states, uninstall."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.numpy import load_file
from sqlalchemy import func, select

from tests.registry.test_query import add, make
from tireg.converters import encode, read_file
from tireg.db.schema import InstallRow
from tireg.db.session import Catalogue, open_catalogue
from tireg.registry import install as inst
from tireg.registry.install import Destination, InstallError
from tireg.registry.uis import UiError


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def ui_root(tmp_path: Path, ui: str) -> Path:
    root = tmp_path / ui
    if ui in ("a1111", "forge"):
        (root / "embeddings").mkdir(parents=True)
    elif ui == "comfyui":
        (root / "models" / "embeddings").mkdir(parents=True)
        (root / "comfy").mkdir()
    else:
        (root / "models").mkdir(parents=True)
        (root / "invokeai.yaml").write_text("")
    return root


def install_count(catalogue: Catalogue) -> int:
    with catalogue.reading() as session:
        return session.scalar(select(func.count()).select_from(InstallRow)) or 0


@pytest.mark.parametrize(
    ("ui", "relative", "prompt"),
    [
        ("a1111", "embeddings/gasai yuno.safetensors", "gasai yuno"),
        ("forge", "embeddings/gasai yuno.safetensors", "gasai yuno"),
        ("comfyui", "models/embeddings/gasai_yuno.safetensors", "embedding:gasai_yuno"),
        ("invokeai", "models/sd-1/embedding/gasai yuno.safetensors", "<gasai yuno>"),
    ],
)
def test_install_sd1_into_each_ui(
    tmp_path: Path, catalogue: Catalogue, ui: str, relative: str, prompt: str
) -> None:
    embedding = make("gasai yuno", 1, n=8)
    add(catalogue, embedding)
    root = ui_root(tmp_path, ui)
    (out,) = inst.install(catalogue, ["gasai yuno"], Destination.ui(ui, root))
    path = root.resolve() / relative
    assert (out.path, out.status, out.prompt, out.format) == (
        str(path),
        "installed",
        prompt,
        "safetensors",
    )
    tensors = load_file(str(path))  # an independent reader: one emb_params tensor [8, 768]
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].shape == (8, 768)
    assert read_file(path).vectors_sha256() == embedding.vectors_sha256()
    (listed,) = inst.installed(catalogue)
    assert (listed.path, listed.state, listed.target) == (str(path), "ok", ui)


def test_sdxl_goes_to_clip_l_clip_g_and_invokeai_sdxl_folder(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    embedding = make("xl-thing", 2, sdxl=True, n=2)
    add(catalogue, embedding)
    root = ui_root(tmp_path, "invokeai")
    (out,) = inst.install(catalogue, ["xl-thing"], Destination.ui("invokeai", root))
    assert Path(out.path) == root.resolve() / "models/sdxl/embedding/xl-thing.safetensors"
    tensors = load_file(out.path)
    assert {k: v.shape for k, v in tensors.items()} == {"clip_l": (2, 768), "clip_g": (2, 1280)}


def test_unknown_width_only_goes_to_a_plain_folder(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("ldm-bert", 3, width=1280))
    with pytest.raises(UiError, match="works in no"):
        inst.install(catalogue, ["ldm-bert"], Destination.ui("a1111", ui_root(tmp_path, "a1111")))
    (out,) = inst.install(catalogue, ["ldm-bert"], Destination.folder(tmp_path / "anywhere"))
    assert Path(out.path).is_file()


def test_installing_again_is_a_no_op(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("cat-toy", 4))
    dest = Destination.ui("comfyui", ui_root(tmp_path, "comfyui"))
    inst.install(catalogue, ["cat-toy"], dest)
    (again,) = inst.install(catalogue, ["cat-toy"], dest)
    assert again.status == "present"
    assert install_count(catalogue) == 1


def test_a_different_embedding_is_never_overwritten(tmp_path: Path, catalogue: Catalogue) -> None:
    first, second = make("cat-toy", 5), make("cat-toy", 6)
    add(catalogue, first, source=("hf", "sd-concepts-library/cat-toy"))
    add(catalogue, second)
    dest = Destination.ui("a1111", ui_root(tmp_path, "a1111"))
    (out,) = inst.install(catalogue, ["cat-toy"], dest, source="hf")
    before = Path(out.path).read_bytes()
    with pytest.raises(InstallError, match="--as NEWNAME") as err:
        inst.install(catalogue, ["cat-toy"], dest, source="local")
    assert "a different embedding is already installed here" in str(err.value)
    assert Path(out.path).read_bytes() == before
    (renamed,) = inst.install(catalogue, ["cat-toy"], dest, source="local", as_name="cat-toy-2")
    assert Path(renamed.path).name == "cat-toy-2.safetensors" and renamed.prompt == "cat-toy-2"
    (forced,) = inst.install(catalogue, ["cat-toy"], dest, source="local", force=True)
    assert forced.status == "replaced"
    assert read_file(forced.path).vectors_sha256() == second.vectors_sha256()
    states = {f.path: (f.state, f.ref) for f in inst.installed(catalogue)}
    assert len(states) == 2 and all(s == "ok" for s, _ in states.values())
    assert states[out.path][1].startswith("cat-toy@" + second.vectors_sha256()[:8])


def test_a_file_we_did_not_write_is_respected(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("mine", 7))
    root = ui_root(tmp_path, "a1111")
    (root / "embeddings" / "mine.safetensors").write_bytes(b"somebody else's file")
    with pytest.raises(InstallError, match="--force"):
        inst.install(catalogue, ["mine"], Destination.ui("a1111", root))
    assert install_count(catalogue) == 0


def test_same_stem_other_extension_counts(tmp_path: Path, catalogue: Catalogue) -> None:
    """A1111 finds ``NAME.pt`` under the same name: same vectors -> present, others -> refused."""
    same, other = make("yuno", 8), make("yuno-other", 9)
    add(catalogue, same)
    root = ui_root(tmp_path, "a1111")
    pt = root / "embeddings" / "sub" / "YUNO.pt"
    pt.parent.mkdir()
    pt.write_bytes(encode(same, "a1111-pt")[0])
    (out,) = inst.install(catalogue, ["yuno"], Destination.ui("a1111", root))
    assert (out.status, Path(out.path)) == ("present", pt)
    assert install_count(catalogue) == 0  # not ours: never recorded, never uninstalled
    pt.write_bytes(encode(other, "a1111-pt")[0])
    with pytest.raises(InstallError, match="already called 'yuno'"):
        inst.install(catalogue, ["yuno"], Destination.ui("a1111", root))


def test_two_specs_that_would_share_a_file(tmp_path: Path, catalogue: Catalogue) -> None:
    a, b = make("dup", 10), make("dup", 11)
    add(catalogue, a)
    add(catalogue, b)
    refs = [f"dup@{a.vectors_sha256()[:8]}", f"dup@{b.vectors_sha256()[:8]}"]
    root = ui_root(tmp_path, "a1111")
    with pytest.raises(InstallError, match="would share this file"):
        inst.install(catalogue, refs, Destination.ui("a1111", root))
    assert list((root / "embeddings").iterdir()) == []
    with pytest.raises(InstallError, match="--as renames one"):
        inst.install(catalogue, refs, Destination.ui("a1111", root), as_name="x")


def test_folder_in_another_format_records_every_file(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("pair", 12, sdxl=True))
    outs = inst.install(
        catalogue, ["pair"], Destination.folder(tmp_path / "out", "diffusers-safetensors")
    )
    assert [Path(o.path).name for o in outs] == ["pair.safetensors", "pair_2.safetensors"]
    assert install_count(catalogue) == 2
    with pytest.raises(InstallError, match="unknown format"):
        Destination.folder(tmp_path, "jpeg")


def test_states_and_uninstall(tmp_path: Path, catalogue: Catalogue) -> None:
    for i, name in enumerate(["keep", "edit", "gone"]):
        add(catalogue, make(name, 20 + i))
    root = ui_root(tmp_path, "forge")
    outs = {
        o.ref: Path(o.path)
        for o in inst.install(catalogue, ["keep", "edit", "gone"], Destination.ui("forge", root))
    }
    outs["edit"].write_bytes(outs["edit"].read_bytes() + b" ")
    outs["gone"].unlink()
    states = {f.name: f.state for f in inst.installed(catalogue, target="forge")}
    assert states == {"keep": "ok", "edit": "modified", "gone": "missing"}
    assert inst.installed(catalogue, target="comfyui") == []
    assert len(inst.installed(catalogue, under=root)) == 3
    result = {u.ref: u.status for u in inst.uninstall(catalogue, ["keep", "edit", "gone"])}
    assert result == {"keep": "removed", "edit": "kept", "gone": "forgotten"}
    assert not outs["keep"].exists() and outs["edit"].exists()
    assert [f.name for f in inst.installed(catalogue)] == ["edit"]
    (forced,) = inst.uninstall(catalogue, ["edit"], force=True)
    assert forced.status == "removed" and not outs["edit"].exists()
    assert install_count(catalogue) == 0


def test_uninstall_only_from_the_target_named(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("both", 30))
    a1111, comfy = ui_root(tmp_path, "a1111"), ui_root(tmp_path, "comfyui")
    inst.install(catalogue, ["both"], Destination.ui("a1111", a1111))
    inst.install(catalogue, ["both"], Destination.ui("comfyui", comfy))
    (done,) = inst.uninstall(catalogue, ["both"], target="comfyui")
    assert "comfyui" in done.path
    assert [f.target for f in inst.installed(catalogue)] == ["a1111"]
