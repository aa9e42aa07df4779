"""UI layout rules: where each UI's embeddings go, what the file is called, what is typed."""

from __future__ import annotations

import re
from hashlib import sha256
from pathlib import Path

import pytest

from tireg.registry import uis


def _a1111(root: Path) -> Path:
    (root / "embeddings").mkdir(parents=True)
    (root / "webui.py").write_text("")
    return root


def _comfy(root: Path) -> Path:
    (root / "models" / "embeddings").mkdir(parents=True)
    (root / "comfy").mkdir()
    return root


def _invoke(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "invokeai.yaml").write_text("schema_version: 4.0.2\n")
    return root


@pytest.mark.parametrize(
    ("ui", "family", "parts"),
    [
        ("a1111", "sd1", ("embeddings",)),
        ("forge", "sdxl", ("embeddings",)),
        ("comfyui", "sd2", ("models", "embeddings")),
        ("invokeai", "sd1", ("models", "sd-1", "embedding")),
        ("invokeai", "sd2", ("models", "sd-2", "embedding")),
        ("invokeai", "sdxl", ("models", "sdxl", "embedding")),
    ],
)
def test_embeddings_dir_per_ui_and_family(
    tmp_path: Path, ui: str, family: str, parts: tuple[str, ...]
) -> None:
    target = uis.UiRoot(ui, tmp_path)
    assert uis.embeddings_dir(target, family) == tmp_path.joinpath(*parts)


@pytest.mark.parametrize("ui", uis.UIS)
def test_unknown_family_works_in_no_ui(tmp_path: Path, ui: str) -> None:
    with pytest.raises(uis.UiError, match="works in no"):
        uis.embeddings_dir(uis.UiRoot(ui, tmp_path), "unknown")


@pytest.mark.parametrize(
    ("target", "trigger", "stem", "typed"),
    [
        ("a1111", "gasai yuno", "gasai yuno", "gasai yuno"),
        ("forge", "<birb-style>", "birb-style", "birb-style"),
        ("comfyui", "gasai yuno", "gasai_yuno", "embedding:gasai_yuno"),
        ("comfyui", "<birb-style>", "birb-style", "embedding:birb-style"),
        ("invokeai", "<birb-style>", "birb-style", "<birb-style>"),
        ("invokeai", "gasai yuno", "gasai yuno", "<gasai yuno>"),
        ("invokeai", "gasai yuno@1000", "gasai yuno_1000", "<gasai yuno_1000>"),
        # a name with characters InvokeAI cannot type gets a stable hash of its NFC form
        ("invokeai", "café+1", "emb-1212fa51", "<emb-1212fa51>"),
        ("invokeai", "cafe\u0301+1", "emb-1212fa51", "<emb-1212fa51>"),
        ("invokeai", "大猫板蓝根-100000", "emb-8a15f653", "<emb-8a15f653>"),
        ("invokeai", "<大猫>", "emb-" + sha256("大猫".encode()).hexdigest()[:8], None),
        ("comfyui", "大猫板蓝根-100000", "大猫板蓝根-100000", "embedding:大猫板蓝根-100000"),
        ("a1111", "大猫板蓝根-100000", "大猫板蓝根-100000", "大猫板蓝根-100000"),
        ("a1111", "a/b:c", "a_b_c", "a_b_c"),
        ("dir", "..hidden", "hidden", "hidden"),
    ],
)
def test_file_stem_and_prompt_word(target: str, trigger: str, stem: str, typed: str | None) -> None:
    assert uis.file_stem(target, trigger) == stem
    assert uis.prompt_word(target, stem) == (typed or f"<{stem}>")
    if target == "invokeai":  # what InvokeAI's trigger regex finds in a prompt is the whole word
        assert re.findall(r"<[a-zA-Z0-9., _-]+>", f"a {uis.prompt_word(target, stem)} cat") == [
            uis.prompt_word(target, stem)
        ]


@pytest.mark.parametrize("trigger", ["", "<>", "///", "  "])
def test_file_stem_refuses_names_that_leave_nothing(trigger: str) -> None:
    with pytest.raises(uis.UiError, match="--as"):
        uis.file_stem("a1111", trigger)


def test_locate_prefers_cwd_then_home(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    _a1111(home / "stable-diffusion-webui")
    found = uis.locate("a1111", cwd=cwd, user_home=home, env={})
    assert found == uis.UiRoot("a1111", (home / "stable-diffusion-webui").resolve())
    _a1111(cwd / "stable-diffusion-webui")
    assert (
        uis.locate("a1111", cwd=cwd, user_home=home, env={}).root
        == (cwd / "stable-diffusion-webui").resolve()
    )


def test_locate_forge_and_comfy_desktop(tmp_path: Path) -> None:
    _a1111(tmp_path / "stable-diffusion-webui-forge")
    _comfy(tmp_path / "Documents" / "ComfyUI")
    assert uis.locate("forge", cwd=tmp_path / "x", user_home=tmp_path, env={}).root.name == (
        "stable-diffusion-webui-forge"
    )
    assert (
        uis.locate("comfyui", cwd=tmp_path / "x", user_home=tmp_path, env={}).root
        == (tmp_path / "Documents" / "ComfyUI").resolve()
    )


def test_locate_invokeai_root_from_environment(tmp_path: Path) -> None:
    root = _invoke(tmp_path / "somewhere")
    found = uis.locate(
        "invokeai", cwd=tmp_path / "x", user_home=tmp_path, env={"INVOKEAI_ROOT": str(root)}
    )
    assert found.root == root.resolve()


def test_locate_names_every_place_it_looked(tmp_path: Path) -> None:
    with pytest.raises(uis.UiError, match="no ComfyUI install found") as err:
        uis.locate("comfyui", cwd=tmp_path, user_home=tmp_path / "h", env={})
    assert str(tmp_path / "h" / "ComfyUI") in str(err.value)
    assert "--ui-root" in str(err.value)


def test_given_root_must_look_like_the_ui(tmp_path: Path) -> None:
    with pytest.raises(uis.UiError, match="no InvokeAI install recognised here"):
        uis.locate("invokeai", tmp_path)
    _invoke(tmp_path / "inv")
    assert uis.locate("invokeai", tmp_path / "inv").root == (tmp_path / "inv").resolve()


def test_rival_files_found_recursively_by_stem_any_case(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Cat-Toy.pt").write_bytes(b"x")
    (tmp_path / "cat-toy.preview.png").write_bytes(b"x")
    (tmp_path / "cat-toy.txt").write_bytes(b"x")
    assert uis.rival_files(tmp_path, "cat-toy") == [tmp_path / "sub" / "Cat-Toy.pt"]
    assert uis.rival_files(tmp_path / "missing", "cat-toy") == []
