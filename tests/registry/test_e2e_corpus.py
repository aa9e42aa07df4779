"""End to end on real files: add ../shared/corpus, search it, show one, install it for every UI,
and load each installed file back with that UI's own loading rules (and diffusers as a real
consumer)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.registry.test_install import ui_root
from tireg.converters import read_file

# what each UI does with a safetensors file, from its loader (see reference/formats.md §1.2, §3, §5)


def a1111_load(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """A1111/Forge: the name is the file stem; string_to_param, else clip_g+clip_l, else a
    one-key dict; 1-D becomes [1, D]."""
    data = load_file(str(path))
    if "clip_g" in data and "clip_l" in data:
        return path.stem, {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    assert len(data) == 1, "A1111: embedding file has multiple terms in it"
    (vec,) = data.values()
    return path.stem, {"emb": vec.reshape(1, -1) if vec.ndim == 1 else vec}


def comfyui_load(path: Path, embed_key: str) -> np.ndarray:
    """ComfyUI: embed_key (clip_l for the 768 tokenizer) if present, else the first value."""
    data = load_file(str(path))
    return data[embed_key] if embed_key in data else next(iter(data.values()))


def invokeai_probe(path: Path) -> str:
    """InvokeAI: a TI if it has string_to_param/emb_params/clip_g; base from the width."""
    data = load_file(str(path))
    if "clip_g" in data:
        width = data["clip_g"].shape[-1]
    elif "emb_params" in data:
        width = data["emb_params"].shape[-1]
    else:
        raise AssertionError(f"InvokeAI would not probe {path} as a textual inversion")
    return {768: "sd-1", 1024: "sd-2", 1280: "sdxl"}[width]


def _json(result: Any) -> Any:
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_corpus_add_search_show_install_everywhere(tireg_cli, corpus: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    added = _json(tireg_cli("add", corpus, "--json"))
    assert added["counts"]["imported"] == 4  # birb-style and three gasai yuno steps

    birb = _json(tireg_cli("search", "birb", "--json"))
    # A1111 types a tensor file by its stem (the prompt word); the name inside is "trained as"
    assert [(h["name"], h["trained_as"]) for h in birb] == [
        ("sd-concepts-birb-style", "<birb-style>")
    ]
    birb_ref = birb[0]["ref"]
    yuno = _json(tireg_cli("search", "gasai", "--family", "sd1", "--json"))
    assert len(yuno) == 3
    assert all(h["trained_as"] == "gasai yuno" and h["num_vectors"] == 8 for h in yuno)

    ambiguous = tireg_cli("show", "gasai yuno")
    assert ambiguous.code == 1 and "names 3 embeddings" in ambiguous.stderr
    shown = {h["ref"]: _json(tireg_cli("show", h["ref"], "--json")) for h in yuno}
    (latest,) = [ref for ref, info in shown.items() if info["step"] == 16600]
    assert shown[latest]["trained_on_hash"] == "e6e8e1fc"
    assert shown[latest]["sources"][0]["location"].endswith("a1111-gasai-yuno-16600.pt")
    assert len(shown[latest]["same_name"]) == 2
    [preview] = shown[latest]["previews"]
    assert Path(preview["location"]).name == "a1111-gasai-yuno-16600.png"
    picture = (corpus / "a1111-gasai-yuno-16600.png").read_bytes()
    assert preview["sha256"] == hashlib.sha256(picture).hexdigest()
    assert all(not info["previews"] for ref, info in shown.items() if ref != latest)
    table = tireg_cli("show", latest)
    assert table.code == 0
    lines = table.stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if line.strip() == "previews")
    cells = [line.split("│")[1:3] for line in lines[title:] if line.startswith("│")]
    location, sha = ("".join(cell[i].strip() for cell in cells) for i in (0, 1))
    assert (location, sha) == (preview["location"], preview["sha256"])  # folded cells rejoined

    originals = {
        "<birb-style>": read_file(corpus / "sd-concepts-birb-style.bin"),
        "gasai yuno": read_file(corpus / "a1111-gasai-yuno-16600.pt"),
    }
    prompts = {}
    for ui in ("a1111", "forge", "comfyui", "invokeai"):
        root = ui_root(tmp_path, ui)
        result = _json(
            tireg_cli("install", "birb-style", latest, "--ui", ui, "--ui-root", root, "--json")
        )
        outs = {o["ref"]: o for o in result["installed"]}
        assert set(outs) == {birb_ref, latest}
        for ref, name in ((birb_ref, "<birb-style>"), (latest, "gasai yuno")):
            path = Path(outs[ref]["path"])
            want = originals[name].vectors["clip_l"]
            prompts[(ui, name)] = outs[ref]["prompt"]
            if ui in ("a1111", "forge"):
                stem, vectors = a1111_load(path)
                assert stem == outs[ref]["prompt"]
                np.testing.assert_array_equal(vectors["emb"], want)
            elif ui == "comfyui":
                assert outs[ref]["prompt"] == f"embedding:{path.stem}" and " " not in path.stem
                np.testing.assert_array_equal(comfyui_load(path, "clip_l"), want)
            else:
                assert invokeai_probe(path) == path.parent.parent.name == "sd-1"
                assert outs[ref]["prompt"] == f"<{path.stem}>"
                np.testing.assert_array_equal(load_file(str(path))["emb_params"], want)
            assert read_file(path).vectors_sha256() == originals[name].vectors_sha256()
    assert prompts[("a1111", "gasai yuno")] == "a1111-gasai-yuno-16600"  # the file users know
    assert prompts[("comfyui", "gasai yuno")] == "embedding:a1111-gasai-yuno-16600"
    assert prompts[("invokeai", "<birb-style>")] == "<sd-concepts-birb-style>"

    listed = _json(tireg_cli("installed", "--json"))
    assert len(listed) == 8 and {f["state"] for f in listed} == {"ok"}
    again = _json(
        tireg_cli(
            "install", "birb-style", "--ui", "comfyui", "--ui-root", tmp_path / "comfyui", "--json"
        )
    )
    assert [o["status"] for o in again["installed"]] == ["present"]


def test_installed_file_works_in_diffusers(tireg_cli, corpus: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """diffusers, a real consumer, loads the A1111 install and puts its vectors in the table."""
    pytest.importorskip("diffusers")
    from tests.pipelines import build_sd_pipeline, token_rows, write_clip_tokenizer

    _json(tireg_cli("add", corpus / "a1111-gasai-yuno-1000.pt", "--json"))
    root = ui_root(tmp_path, "a1111")
    (out,) = _json(
        tireg_cli("install", "gasai yuno", "--ui", "a1111", "--ui-root", root, "--json")
    )["installed"]
    write_clip_tokenizer(tmp_path / "pipe" / "tokenizer")
    pipe = build_sd_pipeline(tmp_path / "pipe", width=768)
    pipe.load_textual_inversion(out["path"], token="yuno")
    rows = token_rows(pipe.tokenizer, pipe.text_encoder, "yuno", 8)
    np.testing.assert_array_equal(
        rows, read_file(corpus / "a1111-gasai-yuno-1000.pt").vectors["clip_l"]
    )
