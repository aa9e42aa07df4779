"""Reading every layout in every container, chosen by content; and every way a file can be wrong.

Files are made the way the real tools make them: torch.save / safetensors.torch.save_file with
the same keys, dtypes and containers (zip and legacy pickles).
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from tireg.converters import (
    CLIP_G,
    CLIP_H,
    CLIP_L,
    UNKNOWN_ENCODER,
    EmbeddingFileError,
    NonFiniteVectorsWarning,
    NotAnEmbeddingError,
    read_bytes,
    read_bytes_detailed,
    read_file,
    read_file_detailed,
    read_sdxl_pair,
    reading,
)


def torch_bytes(obj: Any, *, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def rand(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def a1111_dict(vec: torch.Tensor, **meta: Any) -> dict[str, Any]:
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vec},
        "name": meta.get("name", "my emb"),
        "step": meta.get("step", 500),
        "sd_checkpoint": meta.get("sd_checkpoint", "a9263745"),
        "sd_checkpoint_name": meta.get("sd_checkpoint_name", "v1-5-pruned"),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a1111_pt(legacy: bool) -> None:
    vec = rand(4, 768)
    result = read_bytes_detailed(torch_bytes(a1111_dict(vec), legacy=legacy), name_hint="stem")
    emb = result.embedding
    assert (emb.name, emb.step, emb.trained_on_hash, emb.trained_on_name) == (
        "my emb",
        500,
        "a9263745",
        "v1-5-pruned",
    )
    assert emb.source_format == "a1111-pt" and emb.family.value == "sd1"
    assert emb.vectors[CLIP_L].tobytes() == vec.numpy().tobytes()
    assert result.container == ("torch-pickle" if legacy else "torch-zip")
    assert result.safety == reading.SAFE_PICKLE


def test_original_rinongal_pt_with_parameter_dict() -> None:
    """string_to_token holds a 0-d token id, string_to_param a ParameterDict; no name, no step."""
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(rand(2, 768))})
    data = torch_bytes({"string_to_token": {"*": torch.tensor(42)}, "string_to_param": params})
    result = read_bytes_detailed(data, name_hint="embeddings_gs-6099")
    assert result.layout == "original"
    assert result.embedding.name == "embeddings_gs-6099"
    assert result.embedding.step is None
    assert result.embedding.source_format == "original-pt"
    assert result.embedding.vectors[CLIP_L].tobytes() == params["*"].detach().numpy().tobytes()


def test_original_ldm_bert_width_is_unknown_not_guessed() -> None:
    data = torch_bytes(
        {"string_to_token": {"*": torch.tensor(1)}, "string_to_param": {"*": rand(1, 1280)}}
    )
    emb = read_bytes(data, name_hint="ldm")
    assert set(emb.vectors) == {UNKNOWN_ENCODER} and emb.family.value == "unknown"


@pytest.mark.parametrize("shape", [(768,), (1, 768), (3, 1024)])
def test_diffusers_bin(shape: tuple[int, ...]) -> None:
    vec = rand(*shape)
    emb = read_bytes(torch_bytes({"<cat-toy>": vec}), name_hint="learned_embeds")
    assert emb.name == "<cat-toy>" and emb.source_format == "diffusers-bin"
    assert emb.vectors[CLIP_L if shape[-1] == 768 else CLIP_H].shape == (
        1 if len(shape) == 1 else shape[0],
        shape[-1],
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kohya_pt_and_safetensors(dtype: torch.dtype) -> None:
    vec = rand(5, 768, dtype=dtype)
    expected = vec.float().numpy().tobytes()
    pt = read_bytes_detailed(torch_bytes({"emb_params": vec}), name_hint="kohya-name")
    assert pt.embedding.source_format == "kohya-pt" and pt.embedding.name == "kohya-name"
    assert pt.embedding.vectors[CLIP_L].tobytes() == expected
    meta = {
        "modelspec.title": "Titled",
        "modelspec.architecture": "stable-diffusion-v1/textual-inversion",
    }
    st = read_bytes_detailed(st_save({"emb_params": vec}, metadata=meta), name_hint="stem")
    assert st.embedding.source_format == "kohya-safetensors" and st.embedding.name == "Titled"
    assert st.embedding.extras == {
        "modelspec.architecture": "stable-diffusion-v1/textual-inversion"
    }
    assert st.embedding.vectors[CLIP_L].tobytes() == expected
    assert st.dtypes == {CLIP_L: str(dtype).removeprefix("torch.")}
    assert st.safety == reading.SAFE_SAFETENSORS


@pytest.mark.parametrize("container", ["pt", "safetensors"])
def test_sdxl_clip_l_clip_g(container: str) -> None:
    tensors = {
        "clip_l": rand(2, 768, dtype=torch.float16),
        "clip_g": rand(2, 1280, dtype=torch.float16, seed=1),
    }
    data = torch_bytes(tensors) if container == "pt" else st_save(tensors)
    emb = read_bytes(data, name_hint="xl-style")
    assert emb.family.value == "sdxl" and emb.name == "xl-style"
    assert emb.source_format == f"sdxl-{container}"
    assert emb.vectors[CLIP_G].tobytes() == tensors["clip_g"].float().numpy().tobytes()


def test_diffusers_safetensors_and_sdxl_pair(tmp_path: Path) -> None:
    first, second = (
        tmp_path / "learned_embeds.safetensors",
        tmp_path / "learned_embeds_2.safetensors",
    )
    first.write_bytes(st_save({"<s0>": rand(2, 768)}, metadata={"format": "pt"}))
    second.write_bytes(st_save({"<s0>": rand(2, 1280, seed=2)}, metadata={"format": "pt"}))
    assert read_file(first).source_format == "diffusers-safetensors"
    emb = read_sdxl_pair(second, first)  # either order: the widths decide
    assert emb.family.value == "sdxl" and emb.source_format == "diffusers-sdxl-pair"
    assert emb.vectors[CLIP_G].tobytes() == rand(2, 1280, seed=2).numpy().tobytes()
    third = tmp_path / "x.safetensors"
    third.write_bytes(st_save({"<s0>": rand(3, 1280)}))
    with pytest.raises(EmbeddingFileError, match="vector count"):
        read_sdxl_pair(first, third)
    with pytest.raises(EmbeddingFileError, match="768-wide and one 1280"):
        read_sdxl_pair(first, first)


def test_reader_is_chosen_by_content_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "really-safetensors.pt"
    path.write_bytes(st_save({"emb_params": rand(1, 768)}))
    assert read_file(path).source_format == "kohya-safetensors"
    path = tmp_path / "really-a-pickle.safetensors"
    path.write_bytes(torch_bytes({"<t>": rand(1, 768)}))
    assert read_file(path).source_format == "diffusers-bin"


def test_multiple_terms_is_an_error() -> None:
    data = torch_bytes(
        {
            "string_to_token": {"*": 265, "+": 266},
            "string_to_param": {"*": rand(1, 768), "+": rand(1, 768)},
        }
    )
    with pytest.raises(EmbeddingFileError, match="multiple terms"):
        read_bytes(data, name_hint="x")


def test_nan_vectors_load_with_a_warning(tmp_path: Path) -> None:
    vec = rand(3, 768)
    vec[1, 5] = float("nan")
    vec[2, 0] = float("inf")
    path = tmp_path / "broken.pt"
    path.write_bytes(torch_bytes({"<broken>": vec}))
    with pytest.warns(NonFiniteVectorsWarning, match="2 vector"):
        emb = read_file(path)
    assert not emb.is_finite


@pytest.mark.parametrize(
    "obj, message",
    [
        (
            {"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "epoch": 3},
            r"keys \['state_dict', 'epoch'\]",
        ),
        (
            {f"lora_unet_{i}.alpha": torch.zeros(2, 2) for i in range(40)},
            "40 tensors — looks like a checkpoint",
        ),
        ([1, 2, 3], "list of 3 items"),
        ("hello", "str"),
        ({"a": torch.zeros(2, 768), "b": torch.zeros(2, 768)}, r"keys \['a', 'b'\]"),
        ({"<x>": torch.zeros(2, 3, 768)}, "not \\[vectors, width\\]"),
        ({"<x>": torch.zeros(5000, 768)}, "1..1024 vectors"),
        ({"<x>": torch.zeros(0, 768)}, "1..1024 vectors"),
        ({"<x>": torch.zeros(4, 768, dtype=torch.int64)}, "not floats"),
        ({"<x>": torch.tensor(1.5)}, r"shape \[\]"),
        ({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(3, 1280)}, "clip_l has 2 vectors"),
        ({"string_to_param": [1]}, "not a dict"),
        ({"string_to_param": {"*": "text"}}, "not a tensor"),
    ],
)
def test_non_embeddings_say_what_they_are(obj: Any, message: str) -> None:
    with pytest.raises(EmbeddingFileError, match=message):
        read_bytes(torch_bytes(obj), name_hint="x")


def test_bare_tensor_pickle_is_read_as_a_named_file() -> None:
    emb = read_bytes(torch_bytes(rand(2, 768)), name_hint="bare")
    assert emb.name == "bare" and emb.source_format == "diffusers-bin"


def test_big_safetensors_checkpoint_is_described_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "MAX_FILE_BYTES", 10_000)
    path = tmp_path / "model.safetensors"
    path.write_bytes(st_save({f"model.layer{i}.weight": torch.zeros(8, 8) for i in range(1131)}))
    with pytest.raises(
        NotAnEmbeddingError, match=r"1,131 tensors .* looks like a checkpoint"
    ) as info:
        read_file(path)
    assert str(path) in str(info.value)
    other = tmp_path / "big.bin"
    other.write_bytes(b"\0" * 20_000)
    with pytest.raises(NotAnEmbeddingError, match="too large"):
        read_file(other)


# -- hostile and broken bytes ------------------------------------------------------------------


def _st_raw(header: dict[str, Any], body: bytes, *, length: int | None = None) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head) if length is None else length) + head + body


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"\x00" * 7, "unrecognised"),
        (b"\x01\x02\x03GARBAGE" * 4, "unrecognised"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML page"),
        (b'{"error": "not found"}', "JSON text"),
        (b"just some words\n", "text file"),
        (
            _st_raw(
                {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                b"\0" * 8,
                length=10_000,
            ),
            "truncated: ends after 77 bytes, inside its 10,000-byte header",
        ),
        (_st_raw({}, b"", length=200_000_000), "claims 200000000 bytes"),
        (
            _st_raw(
                {
                    "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "overlap",
        ),
        (_st_raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "gap"),
        (
            _st_raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
            "truncated: ends after 73 of 77 bytes",
        ),
        (
            _st_raw(
                {
                    "__metadata__": {"a": 1},
                    "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                },
                b"\0" * 4,
            ),
            "strings to strings",
        ),
        (
            _st_raw(
                {"x": {"dtype": "F32", "shape": [10**12, 10**12], "data_offsets": [0, 4]}},
                b"\0" * 4,
            ),
            "impossibly large shape",
        ),
        (
            _st_raw({"x": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "unknown dtype",
        ),
        (
            _st_raw(
                {"x": {"dtype": "I32", "shape": [1, 768], "data_offsets": [0, 3072]}}, b"\0" * 3072
            ),
            "not floats",
        ),
        (b"PK\x03\x04" + b"\0" * 40, "."),
        (b"\x80\x02" + b"\xff" * 30, "."),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_broken_files_are_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(EmbeddingFileError, match=message):
        read_bytes(data, name_hint="x")


def test_truncations_of_every_container_fail_cleanly() -> None:
    samples = [
        torch_bytes(a1111_dict(rand(2, 768))),
        torch_bytes(a1111_dict(rand(2, 768)), legacy=True),
        st_save({"emb_params": rand(2, 768)}),
    ]
    for blob in samples:
        for cut in sorted({0, 1, 8, 9, 16, len(blob) // 3, len(blob) // 2, len(blob) - 1}):
            with pytest.raises(EmbeddingFileError):
                read_bytes(blob[:cut], name_hint="x")


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.pt"
    path.write_bytes(b"")
    with pytest.raises(EmbeddingFileError) as info:
        read_file(path)
    assert str(info.value).startswith(str(path)) and "empty" in str(info.value)
    with pytest.raises(EmbeddingFileError, match="cannot read"):
        read_file(tmp_path / "missing.pt")


def test_detailed_reports_original_dtype(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(
        st_save(
            {
                "clip_l": rand(1, 768, dtype=torch.float16),
                "clip_g": rand(1, 1280, dtype=torch.bfloat16),
            }
        )
    )
    result = read_file_detailed(path)
    assert result.dtypes == {CLIP_L: "float16", CLIP_G: "bfloat16"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_file(path)  # finite vectors: no warning
    assert np.asarray(result.embedding.vectors[CLIP_G]).dtype == np.float32
