"""Every file tireg writes, and every ``install --ui`` result, loads in each UI bit for bit.

Each UI's loading rules are reproduced from its own source in the ``*_rules`` modules beside this
one (each cites the upstream file and function); diffusers' are its own code. Which format each UI
reads for each family follows from those rules, not from tireg:

* A1111 reads ``.pt``/``.bin``/``.safetensors`` and image cards; an SDXL model wants one file with
  ``clip_l`` and ``clip_g`` (``shape`` 2048), which diffusers' two-file SDXL pair is not;
* ComfyUI reads no images, and its SDXL clip_g tokenizer loads the same *one* file as clip_l;
* InvokeAI reads no images, and takes a diffusers or tireg file's width from ``shape[0]``, so
  of those it reads only a single ``[width]`` vector (and tireg's SDXL, which has ``clip_g``);
* diffusers reads no images; SDXL goes in two calls, one per encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

from tests.converters.test_png_card import strip_text_chunks
from tests.registry.test_install import ui_root
from tests.registry.test_query import add
from tireg.cli import output
from tireg.converters import CLIP_G, CLIP_L, Embedding, read_file, torch_file, write_file
from tireg.converters.writing import EXTENSIONS, WRITE_FORMATS
from tireg.db.session import Catalogue, open_catalogue
from tireg.registry import install as inst
from tireg.registry.importer import add_paths
from tireg.registry.install import Destination

from . import a1111_rules, comfyui_rules, diffusers_rules, invokeai_rules

CLIP_H = "clip_h"
WIDTH = {CLIP_L: 768, CLIP_H: 1024, CLIP_G: 1280}
#: the encoders of each family, and the width A1111 checks an embedding against
ENCODERS = {"sd1": (CLIP_L,), "sd2": (CLIP_H,), "sdxl": (CLIP_L, CLIP_G)}
A1111_SHAPE = {"sd1": 768, "sd2": 1024, "sdxl": 768 + 1280}
#: ComfyUI's tokenizers per family
COMFY_TOKENIZERS = {
    "sd1": {CLIP_L: comfyui_rules.CLIP_L},
    "sd2": {CLIP_H: comfyui_rules.CLIP_H},
    "sdxl": {CLIP_L: comfyui_rules.CLIP_L, CLIP_G: comfyui_rules.CLIP_G},
}
DIFFUSERS_PAIR = ("diffusers-bin", "diffusers-safetensors")


def sample(family: str, n: int = 3, *, name: str = "tireg-test") -> Embedding:
    rng = np.random.default_rng(n * 100 + len(family))
    return Embedding(
        name=name,
        vectors={
            e: rng.standard_normal((n, WIDTH[e])).astype(np.float32) for e in ENCODERS[family]
        },
        step=500,
        trained_on_hash="e6e8e1fc",
        trained_on_name="v1-5-pruned",
    )


def cases(ui: str) -> list[tuple[str, str]]:
    """(format, family) pairs the UI's rules can read (see the module docstring)."""
    found = []
    for fmt in WRITE_FORMATS:
        for family in ENCODERS:
            if fmt == "png" and (ui != "a1111" or family == "sdxl"):
                continue  # only A1111 reads image cards, and they hold no SDXL
            if family == "sdxl" and fmt in DIFFUSERS_PAIR and ui != "diffusers":
                continue  # the two-file pair is diffusers' own SDXL layout
            one_tensor = fmt in DIFFUSERS_PAIR or (fmt == "tireg" and family != "sdxl")
            if ui == "invokeai" and one_tensor:
                continue  # width from shape[0]: see test_invokeai_width_rule_for_one_tensor_files
            found.append((fmt, family))
    return found


def same(tensor: torch.Tensor, expected: np.ndarray) -> bool:
    """Bit-identical float32 vectors of the same shape."""
    got = tensor.detach().to(torch.float32).numpy()
    return got.shape == expected.shape and got.tobytes() == expected.tobytes()


def write(emb: Embedding, folder: Path, fmt: str, stem: str = "e") -> list[Path]:
    return write_file(emb, folder / f"{stem}{EXTENSIONS[fmt]}", fmt)


# ------------------------------------------------------------------------------------- A1111


def a1111_loads(path: Path, emb: Embedding, family: str) -> a1111_rules.A1111Embedding:
    found = a1111_rules.load_from_file(path)
    assert found is not None
    assert found.shape == A1111_SHAPE[family] and found.vectors == emb.num_vectors
    if isinstance(found.vec, dict):
        assert set(found.vec) == {CLIP_L, CLIP_G}
        assert all(same(found.vec[k], emb.vectors[k]) for k in (CLIP_L, CLIP_G))
    else:
        ((_, matrix),) = emb.vectors.items()
        assert same(found.vec, matrix)
    return found


@pytest.mark.parametrize(("fmt", "family"), cases("a1111"))
def test_a1111_loads_every_format(tmp_path: Path, fmt: str, family: str) -> None:
    emb = sample(family)
    (path,) = write(emb, tmp_path, fmt)
    if path.suffix in (".pt", ".bin"):
        a1111_rules.check_pt(path)  # "may be malicious" otherwise
    found = a1111_loads(path, emb, family)
    if fmt in ("a1111-pt", "png") and family != "sdxl":
        assert (found.step, found.sd_checkpoint, found.sd_checkpoint_name) == (
            500, "e6e8e1fc", "v1-5-pruned"
        )  # fmt: skip
    # the prompt word: the file stem, but a card's own name
    assert found.name == ("tireg-test" if fmt == "png" else path.name.rsplit(".", 1)[0])
    if fmt == "png":  # the pixel payload alone (text chunks stripped) gives the same vectors
        path.write_bytes(strip_text_chunks(path.read_bytes()))
        a1111_loads(path, emb, family)


def test_a1111_rule_refuses_what_torch_2_1_adds(tmp_path: Path) -> None:
    """The allow-list is A1111's: torch.save's newer members are "bad file inside"."""
    path = tmp_path / "saved.pt"
    torch.save({"emb_params": torch.ones(1, 768)}, path)
    with pytest.raises(a1111_rules.Refused, match=r"bad file inside .*(format_version|byteorder)"):
        a1111_rules.check_pt(path)


def test_a1111_sdxl_branch_detaches_every_value(tmp_path: Path) -> None:
    """Why SDXL a1111-pt holds the two tensors alone: a name beside them breaks A1111."""
    path = tmp_path / "xl.pt"
    xl = sample("sdxl")
    path.write_bytes(torch_file.dumps({**xl.vectors, "name": "xl", "step": 5}))
    a1111_rules.check_pt(path)
    with pytest.raises(AttributeError, match="detach"):
        a1111_rules.load_from_file(path)


def test_readme_convert_example_lands_a_file_a1111_accepts(
    corpus: Path, tmp_path: Path, tireg_cli: Any
) -> None:
    """``tireg convert learned_embeds.bin --to a1111-pt --out-dir .../embeddings``."""
    source = tmp_path / "learned_embeds.bin"
    shutil.copy(corpus / "sd-concepts-birb-style.bin", source)
    embeddings = tmp_path / "stable-diffusion-webui" / "embeddings"
    embeddings.mkdir(parents=True)
    result = tireg_cli("convert", source, "--to", "a1111-pt", "--out-dir", embeddings)
    assert result.code == 0, result.stderr
    (written,) = embeddings.iterdir()
    a1111_rules.check_pt(written)
    found = a1111_rules.load_from_file(written)
    assert found is not None and found.shape == 768 and found.vectors == 1
    birb = torch.load(source, weights_only=True)["<birb-style>"]
    assert same(found.vec, birb.reshape(1, 768).numpy())


# ------------------------------------------------------------------------------------ ComfyUI


def comfy_loads(folder: Path, stem: str, emb: Embedding, family: str) -> None:
    for encoder, tokenizer in COMFY_TOKENIZERS[family].items():
        assert same(comfyui_rules.load_embed(stem, folder, tokenizer), emb.vectors[encoder])


@pytest.mark.parametrize(("fmt", "family"), cases("comfyui"))
def test_comfyui_loads_every_format(tmp_path: Path, fmt: str, family: str) -> None:
    emb = sample(family)
    (path,) = write(emb, tmp_path, fmt, stem="my_emb")
    (name,) = comfyui_rules.embedding_names(f"a photo of embedding:{path.stem}, best")
    comfy_loads(tmp_path, name.rstrip(","), emb, family)


# ----------------------------------------------------------------------------------- InvokeAI


def invoke_loads(path: Path, emb: Embedding, family: str) -> None:
    name, base = invokeai_rules.probe(path)
    assert name == path.stem and base == {"sd1": "sd-1", "sd2": "sd-2", "sdxl": "sdxl"}[family]
    for encoder in ENCODERS[family]:
        assert same(invokeai_rules.vectors_for(path, WIDTH[encoder]), emb.vectors[encoder])


@pytest.mark.parametrize(("fmt", "family"), cases("invokeai"))
def test_invokeai_loads_every_format(tmp_path: Path, fmt: str, family: str) -> None:
    emb = sample(family)
    (path,) = write(emb, tmp_path, fmt)
    invoke_loads(path, emb, family)


@pytest.mark.parametrize("fmt", [*DIFFUSERS_PAIR, "tireg"])
@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_invokeai_width_rule_for_one_tensor_files(tmp_path: Path, fmt: str, family: str) -> None:
    """InvokeAI reads a one-tensor file's width from ``shape[0]``: a ``[width]`` file (older
    diffusers, the sd-concepts-library) loads, and what tireg writes from it must stay ``[width]``
    (through its own format too); a ``[1, width]`` file is no embedding to InvokeAI."""
    (encoder,) = ENCODERS[family]
    vector = np.random.default_rng(7).standard_normal(WIDTH[encoder]).astype(np.float32)
    source = tmp_path / "learned_embeds.safetensors"
    safetensors.torch.save_file({"<concept>": torch.from_numpy(vector)}, source)
    invoke_loads(source, read_file(source), family)
    (path,) = write(read_file(source), tmp_path, fmt, stem="copy")
    if fmt == "tireg":  # the internal file is [1, D] by spec; what tireg writes from it is not
        (path,) = write(read_file(path), tmp_path, "diffusers-bin", stem="again")
    invoke_loads(path, read_file(source), family)
    (wide,) = write(sample(family, 1), tmp_path, fmt, stem="wide")
    with pytest.raises(invokeai_rules.NotAMatch, match=r"token dimension 1$"):
        invokeai_rules.probe(wide)


def test_a_catalogued_flat_concept_installs_flat(
    corpus: Path, tmp_path: Path, catalogue: Catalogue
) -> None:
    """Through the store and back: ``add`` of a ``[768]`` concept, then ``install --to DIR
    --format diffusers-bin``, gives a ``[768]`` file InvokeAI registers as SD 1."""
    source = tmp_path / "learned_embeds.bin"
    shutil.copy(corpus / "sd-concepts-birb-style.bin", source)
    add_paths(catalogue, [source])
    dest = Destination.folder(tmp_path / "out", "diffusers-bin")
    (out,) = inst.install(catalogue, ["birb-style"], dest)
    path = Path(out.path)
    assert torch.load(path, weights_only=True)["birb-style"].shape == (768,)
    invoke_loads(path, read_file(source), "sd1")


def test_the_sdxl_pair_is_for_diffusers_only(tmp_path: Path) -> None:
    """Why the SDXL cases above leave the two-file diffusers pair to diffusers: A1111 and
    ComfyUI read its first file alone, 768 wide, where SDXL needs 2048 (A1111) or 1280 (clip_g)."""
    first, _ = write(sample("sdxl"), tmp_path, "diffusers-safetensors")
    found = a1111_rules.load_from_file(first)
    assert found is not None and found.shape == 768 != A1111_SHAPE["sdxl"]
    with pytest.raises(comfyui_rules.Ignored, match="shape mismatch"):
        comfyui_rules.load_embed(first.stem, tmp_path, comfyui_rules.CLIP_G)


# ----------------------------------------------------------------------------------- diffusers


@pytest.mark.parametrize(("fmt", "family"), cases("diffusers"))
def test_diffusers_loads_every_format(
    tmp_path: Path, clip_tokenizer: Any, fmt: str, family: str
) -> None:
    emb = sample(family)
    paths = write(emb, tmp_path, fmt)
    if family != "sdxl":
        ((encoder, matrix),) = emb.vectors.items()
        rows = diffusers_rules.load(paths[0], clip_tokenizer, WIDTH[encoder], token="<t>")
        assert same(rows, matrix)
        return
    if fmt in DIFFUSERS_PAIR:  # one file per encoder
        parts = dict(zip((CLIP_L, CLIP_G), paths, strict=True))
        for encoder, path in parts.items():
            rows = diffusers_rules.load(path, clip_tokenizer, WIDTH[encoder])
            assert same(rows, emb.vectors[encoder])
        return
    state = diffusers_rules.state_dict(paths[0])  # the documented two calls
    for encoder in (CLIP_L, CLIP_G):
        rows = diffusers_rules.load(state[encoder], clip_tokenizer, WIDTH[encoder], token="<t>")
        assert same(rows, emb.vectors[encoder])


# ---------------------------------------------------------------------------- install --ui ...


@pytest.fixture
def catalogue() -> Any:
    cat = open_catalogue()
    yield cat
    cat.close()


def ui_loads(ui: str, root: Path, out: inst.InstallOutcome, emb: Embedding, family: str) -> None:
    """Load an installed file the way ``ui`` finds it from the prompt word tireg printed."""
    path = Path(out.path)
    if ui in ("a1111", "forge"):  # Forge keeps A1111's loader
        found = a1111_loads(path, emb, family)
        assert found.name == out.prompt
    elif ui == "comfyui":
        (name,) = comfyui_rules.embedding_names(f"a {out.prompt} cat")
        comfy_loads(root / "models" / "embeddings", name, emb, family)
    else:
        (name,) = invokeai_rules.triggers(f"a {out.prompt} cat")
        assert name == path.stem
        invoke_loads(path, emb, family)


@pytest.mark.parametrize("name", ["gasai yuno", "大猫板蓝根-100000"])
@pytest.mark.parametrize("family", ENCODERS)
@pytest.mark.parametrize("ui", ["a1111", "forge", "comfyui", "invokeai"])
def test_every_install_loads_in_its_ui(
    tmp_path: Path, catalogue: Catalogue, ui: str, family: str, name: str
) -> None:
    emb = sample(family, name=name)
    add(catalogue, emb)
    root = ui_root(tmp_path, ui)
    (out,) = inst.install(catalogue, [name], Destination.ui(ui, root))
    ui_loads(ui, root, out, emb, family)
    listed = {f.path: f.prompt for f in inst.installed(catalogue)}
    assert listed == {out.path: out.prompt}


def test_cjk_names_get_distinct_invokeai_triggers(
    tmp_path: Path, catalogue: Catalogue, tireg_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two all-CJK names no longer collapse to one ``_____-100000`` trigger; ``installed``
    shows the trigger to type."""
    root = ui_root(tmp_path, "invokeai")
    names = ["大猫板蓝根-100000", "小狗板蓝根-100000"]
    outs = []
    for i, name in enumerate(names):
        emb = sample("sd1", i + 1, name=name)
        add(catalogue, emb)
        (out,) = inst.install(catalogue, [name], Destination.ui("invokeai", root))
        ui_loads("invokeai", root, out, emb, "sd1")
        outs.append(out)
    assert outs[0].prompt != outs[1].prompt
    assert all(o.prompt.startswith("<emb-") and o.prompt.isascii() for o in outs)
    listed = tireg_cli("installed", "--json")
    assert listed.code == 0
    assert {row["prompt"] for row in json.loads(listed.stdout)} == {o.prompt for o in outs}
    monkeypatch.setattr(output.console, "width", 400)  # no folding of long paths
    shown = tireg_cli("installed")
    assert "type in a prompt" in shown.stdout
    assert all(o.prompt in shown.stdout for o in outs)
