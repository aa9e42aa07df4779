"""Family detection from real key names: safetensors headers, .ckpt pickles, diffusers folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.checkpoints.builders import write_checkpoint, write_ckpt
from tireg.checkpoints import CheckpointError, detect_family

CASES = [
    ("sd1", "sd1", True, {"clip_l": 768}),
    ("sd1_early", "sd1", True, {"clip_l": 768}),
    ("sd2", "sd2", True, {"clip_h": 1024}),
    ("sdxl", "sdxl", True, {"clip_l": 768, "clip_g": 1280}),
    ("sdxl_refiner", "sdxl_refiner", False, {"clip_g": 1280}),
    ("sdxl_unet_only", "sdxl", True, {}),
    ("sd3", "sd3", False, {}),
    ("flux", "flux", False, {}),
    ("lora", "unknown", False, {}),
]


@pytest.mark.parametrize(("kind", "family", "supported", "widths"), CASES)
def test_safetensors_families(
    tmp_path: Path, kind: str, family: str, supported: bool, widths: dict[str, int]
) -> None:
    found = detect_family(write_checkpoint(tmp_path / f"{kind}.safetensors", kind))
    assert (found.family, found.supported, found.widths) == (family, supported, widths)
    assert found.evidence


def test_unsupported_families_are_named(tmp_path: Path) -> None:
    sd3 = detect_family(write_checkpoint(tmp_path / "a.safetensors", "sd3"))
    flux = detect_family(write_checkpoint(tmp_path / "b.safetensors", "flux"))
    assert sd3.label == "SD3" and "SD3" in sd3.evidence
    assert flux.label == "Flux" and "Flux" in flux.evidence
    lora = detect_family(write_checkpoint(tmp_path / "c.safetensors", "lora"))
    assert "LoRA" in lora.evidence


@pytest.mark.parametrize(("kind", "family"), [("sd1", "sd1"), ("sd2", "sd2"), ("sdxl", "sdxl")])
def test_ckpt_families(tmp_path: Path, kind: str, family: str) -> None:
    pytest.importorskip(
        "tireg.converters.torch_file", reason="restricted .ckpt loader not built yet"
    )
    path = write_ckpt(tmp_path / f"{kind}.ckpt", kind)
    assert detect_family(path).family == family


def test_ckpt_with_a_malicious_global_is_refused(tmp_path: Path) -> None:
    pytest.importorskip(
        "tireg.converters.torch_file", reason="restricted .ckpt loader not built yet"
    )
    import pickle

    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("owned",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {"x": Boom()}}, protocol=2))
    with pytest.raises(CheckpointError, match="print"):
        detect_family(path)


def test_diffusers_folders_from_real_pipelines(tmp_path: Path) -> None:
    from tests.pipelines import build_sd_pipeline, build_sdxl_pipeline, write_clip_tokenizer

    for sub in ("tokenizer", "tokenizer_2"):
        write_clip_tokenizer(tmp_path / sub)
    expected = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl"}
    for name, pipe in (
        ("sd1", build_sd_pipeline(tmp_path, width=768)),
        ("sd2", build_sd_pipeline(tmp_path, width=1024)),
        ("sdxl", build_sdxl_pipeline(tmp_path)),
    ):
        folder = tmp_path / f"pipe-{name}"
        pipe.save_pretrained(folder)
        found = detect_family(folder)
        assert (found.family, found.layout) == (expected[name], "diffusers")


def test_diffusers_pipeline_of_another_backbone(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    found = detect_family(tmp_path)
    assert found.family == "flux" and not found.supported


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"model_index\.json"):
        detect_family(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello there, not a model")
    with pytest.raises(CheckpointError, match="neither safetensors"):
        detect_family(text)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="unreadable"):
        detect_family(broken)
    with pytest.raises(CheckpointError, match="no such"):
        detect_family(tmp_path / "missing.safetensors")


# -- header-only detection on multi-GB files -------------------------------------------------

#: real token-embedding shapes (49,408 CLIP tokens) and a few real UNet tensors, fp16
_SPARSE_HEADERS = {
    "sd1": {
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": [49408, 768],
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": [77, 768],
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [
            320,
            768,
        ],
    },
    "sdxl": {
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": [
            49408,
            768,
        ],
        "conditioner.embedders.1.model.token_embedding.weight": [49408, 1280],
        "conditioner.embedders.1.model.text_projection": [1280, 1280],
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [
            640,
            2048,
        ],
    },
}
_SPARSE_SIZE = 8 << 30


def _sparse_checkpoint(path: Path, family: str) -> Path:
    """A valid safetensors file of 8 GiB whose data region is one hole: only the header is
    written, a filler UNet tensor makes the offsets cover the rest, truncate() sets the size."""
    import struct

    entries: dict[str, dict[str, object]] = {}
    offset = 0
    for name, shape in _SPARSE_HEADERS[family].items():
        size = 2 * shape[0] * shape[1]
        entries[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    head_room = 4096  # header bytes reserved before the data (the JSON is padded to fill it)
    filler = _SPARSE_SIZE - 8 - head_room - offset
    entries["model.diffusion_model.output_blocks.8.0.in_layers.2.weight"] = {
        "dtype": "U8",
        "shape": [filler],
        "data_offsets": [offset, offset + filler],
    }
    head = json.dumps({"__metadata__": {"format": "pt"}, **entries}).encode()
    assert len(head) <= head_room
    head += b" " * (head_room - len(head))
    with path.open("wb") as stream:
        stream.write(struct.pack("<Q", len(head)) + head)
        stream.truncate(_SPARSE_SIZE)
    return path


def _bytes_read_by_this_process() -> int:
    """rchar: every byte this process has read through read()-like calls, cache hits included."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.parametrize(
    ("family", "widths"), [("sd1", {"clip_l": 768}), ("sdxl", {"clip_l": 768, "clip_g": 1280})]
)
def test_detection_reads_only_the_header_of_a_multi_gb_file(
    tmp_path: Path, family: str, widths: dict[str, int]
) -> None:
    if not Path("/proc/self/io").is_file():
        pytest.skip("needs Linux /proc/self/io to count the bytes read")
    path = _sparse_checkpoint(tmp_path / f"{family}.safetensors", family)
    stat = path.stat()
    assert stat.st_size == _SPARSE_SIZE
    if stat.st_blocks * 512 > (1 << 20):
        pytest.skip("this file system does not keep sparse files sparse")
    before = _bytes_read_by_this_process()
    found = detect_family(path)
    read = _bytes_read_by_this_process() - before
    assert (found.family, found.widths) == (family, widths)
    assert read < 64 * 1024, f"detection read {read} bytes of an 8 GiB file"


def test_hostile_checkpoint_files_are_one_checkpoint_error(tmp_path: Path) -> None:
    """A header nested 100,000 deep (once a RecursionError through ``model add`` and
    ``install --ui``), a FIFO (once a hang at ``open()``) and a config.json nested as deep."""
    import os

    from tests.converters import malicious

    deep = malicious._deep_metadata(tmp_path, "deep.safetensors")
    with pytest.raises(CheckpointError, match="too deeply"):
        detect_family(deep)
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError):
        detect_family(fifo)
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "model_index.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="too deeply"):
        detect_family(folder)
