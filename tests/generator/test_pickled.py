"""A .ckpt rewritten as safetensors by the allow-list unpickler: exact bytes, views included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tireg import config
from tireg.files import sha256_file
from tireg.pipelines import pickled
from tireg.pipelines.errors import PipelineError


def test_views_shared_storage_and_dtypes_convert_exactly(tmp_path: Path) -> None:
    """torch.save keeps views as (storage, offset, strides): transposes, slices and rows of one
    storage, bf16 and int64 all come out as the tensors torch itself would load."""
    import torch
    from safetensors.torch import load_file

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "transposed": base.t(),
        "row": base[2],
        "columns": base[:, 1:3],
        "whole": base,
        "bf16": torch.linspace(-2, 2, 15).reshape(3, 5).to(torch.bfloat16),
        "ids": torch.arange(77)[None],
        "half": torch.full((2, 3), 0.5, dtype=torch.float16),
    }
    path = tmp_path / "views.ckpt"
    torch.save({"state_dict": {"state_dict": tensors}, "global_step": 3}, path)  # nested twice
    out = pickled.as_safetensors(path, sha256_file(path))
    assert out == config.cache_dir() / "checkpoints" / f"{sha256_file(path)}.safetensors"
    loaded = load_file(str(out))
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    assert not list(out.parent.glob("*tireg-tmp*"))


def test_safetensors_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    """A safetensors header length may start with 'PK' or 0x80; the JSON at byte 8 decides."""
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    header += b" " * (0x4B50 - len(header))  # length bytes 'PK'
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    assert path.read_bytes()[:2] == b"PK"
    assert not pickled.is_pickle(path)


def test_a_ckpt_without_tensors_is_one_line(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {"note": "nothing here"}}, path)
    with pytest.raises(PipelineError, match="holds no tensors") as err:
        pickled.as_safetensors(path, sha256_file(path))
    assert "\n" not in str(err.value)


def test_a_ckpt_saved_without_crcs_converts_as_torch_loads_it(tmp_path: Path) -> None:
    """``set_crc32_options(False)`` (there to save large checkpoints faster) makes torch write 0
    for every CRC; torch's reader checks none, so neither may the rewrite (the same rule as
    :mod:`tireg.converters.torch_file`)."""
    import torch
    from safetensors.torch import load_file

    tensors = {"w": torch.randn(40, 30), "row": torch.arange(300.0).reshape(10, 30)[3]}
    path = tmp_path / "no-crc.ckpt"
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"state_dict": tensors}, path)
    finally:
        torch.serialization.set_crc32_options(before)
    expected = torch.load(path, weights_only=True)["state_dict"]
    loaded = load_file(str(pickled.as_safetensors(path, sha256_file(path))))
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
