"""torch_file: reading what torch and real tools wrote, and writing what torch reads back.

torch is used here only to *create* files and as the real consumer of files we write
(``torch.load(..., weights_only=True)``); the code under test never imports it.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tireg.converters import torch_file
from tireg.converters.errors import EmbeddingFileError
from tireg.converters.torch_file import TensorRef

torch = pytest.importorskip("torch")

LEGACY = {"_use_new_zipfile_serialization": False}


def torch_save(obj: Any, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def torch_load(data: bytes) -> Any:
    """The real consumer: torch's own safe loader."""
    return torch.load(io.BytesIO(data), weights_only=True)


def as_numpy(t: Any) -> np.ndarray:
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()


def rezip(data: bytes, replace: dict[str, bytes | None]) -> bytes:
    """Copy a zip, replacing (or, with None, dropping) members; stored, valid CRCs."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            blob = replace.get(info.filename, src.read(info))
            if blob is not None:
                dst.writestr(info.filename, blob)
        for name, blob in replace.items():
            if name not in src.namelist() and blob is not None:
                dst.writestr(name, blob)
    return out.getvalue()


# ------------------------------------------------------------------------------ the real corpus


def test_corpus_diffusers_concept(corpus: Path) -> None:
    path = corpus / "sd-concepts-birb-style.bin"
    obj = torch_file.load(path.read_bytes())
    assert list(obj) == ["<birb-style>"]
    vec = obj["<birb-style>"]
    assert vec.shape == (768,) and vec.dtype == np.float32
    assert float(np.linalg.norm(vec)) == pytest.approx(3.0136, abs=1e-4)
    assert torch_file.load_path(path, tensors="shape") == {
        "<birb-style>": TensorRef((768,), "float32")
    }


@pytest.mark.parametrize(
    ("name", "step", "checkpoint", "checkpoint_name", "norm"),
    [
        ("a1111-gasai-yuno-1000.pt", 1000, None, None, 8.1353),
        ("a1111-gasai-yuno-16600.pt", 16600, "e6e8e1fc", "model", 37.6245),
    ],
)
def test_corpus_a1111_saved_on_cuda(
    corpus: Path, name: str, step: int, checkpoint: str | None, checkpoint_name: str | None,
    norm: float,
) -> None:  # fmt: skip
    data = (corpus / name).read_bytes()
    assert b"cuda:0" in zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    obj = torch_file.load(data)
    assert obj["string_to_token"] == {"*": 265}
    assert obj["name"] == "gasai yuno"
    assert obj["step"] == step
    assert obj["sd_checkpoint"] == checkpoint
    assert obj["sd_checkpoint_name"] == checkpoint_name
    vec = obj["string_to_param"]["*"]
    assert vec.shape == (8, 768) and vec.dtype == np.float32
    assert float(np.linalg.norm(vec)) == pytest.approx(norm, abs=1e-3)
    shapes = torch_file.load_path(corpus / name, tensors="shape")
    assert shapes["string_to_param"] == {"*": TensorRef((8, 768), "float32")}


# --------------------------------------------------------------------- files torch writes today


def _views() -> dict[str, Any]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "f32": base,
        "row_view": base[2],  # storage offset 12
        "column_view": base[:, 3],  # stride 6, offset 3
        "transposed": base.t(),
        "strided": base[1:, ::2],
        "f16": base.half()[1:3],
        "bf16": (base / 7).bfloat16(),
        "f64": base.double(),
        "i64": torch.arange(5),
        "i32": torch.arange(5, dtype=torch.int32),
        "u8": torch.arange(5, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "zero_d": torch.tensor(265),
        "one_d": torch.linspace(-1, 1, 768),
        "empty": torch.zeros(0, 768),
        "expanded": torch.ones(1, 3).expand(4, 3),  # stride 0
    }


@pytest.mark.parametrize("kwargs", [{}, LEGACY], ids=["zip", "legacy"])
def test_tensors_of_every_layout_and_dtype(kwargs: dict[str, Any]) -> None:
    tensors = _views()
    obj = torch_file.load(torch_save(tensors, **kwargs))
    assert list(obj) == list(tensors)
    for key, tensor in tensors.items():
        expected = as_numpy(tensor)
        got = obj[key]
        assert isinstance(got, np.ndarray), key
        assert got.shape == expected.shape and got.dtype == expected.dtype, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
        assert got.flags.writeable, key
    shapes = torch_file.load(torch_save(tensors, **kwargs), tensors="shape")
    assert shapes["bf16"] == TensorRef((4, 6), "bfloat16")
    assert shapes["zero_d"] == TensorRef((), "int64")
    assert shapes["column_view"] == TensorRef((4,), "float32")


@pytest.mark.parametrize("kwargs", [{}, LEGACY], ids=["zip", "legacy"])
def test_a1111_dict(kwargs: dict[str, Any]) -> None:
    vec = torch.randn(3, 768)
    data = torch_save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vec},
            "name": "my-emb",
            "step": 1500,
            "sd_checkpoint": "a9263745",
            "sd_checkpoint_name": "v1-5-pruned",
        },
        **kwargs,
    )
    obj = torch_file.load(data)
    assert obj["string_to_token"] == {"*": 265}
    np.testing.assert_array_equal(obj["string_to_param"]["*"], vec.numpy())
    assert (obj["name"], obj["step"], obj["sd_checkpoint"], obj["sd_checkpoint_name"]) == (
        "my-emb", 1500, "a9263745", "v1-5-pruned",
    )  # fmt: skip


@pytest.mark.parametrize("kwargs", [{}, LEGACY], ids=["zip", "legacy"])
def test_original_rinongal_format(kwargs: dict[str, Any]) -> None:
    """torch.nn.ParameterDict of Parameters plus 0-d token ids, as EmbeddingManager.save writes."""
    param = torch.nn.Parameter(torch.randn(2, 768))
    data = torch_save(
        {
            "string_to_token": {"*": torch.tensor(265)},
            "string_to_param": torch.nn.ParameterDict({"*": param}),
        },
        **kwargs,
    )
    obj = torch_file.load(data)
    token = obj["string_to_token"]["*"]
    assert isinstance(token, np.ndarray) and token.shape == () and int(token) == 265
    assert list(obj["string_to_param"]) == ["*"]
    np.testing.assert_array_equal(obj["string_to_param"]["*"], param.detach().numpy())


def test_parameter_alone_and_ordered_dict() -> None:
    state = OrderedDict(weight=torch.nn.Parameter(torch.ones(2, 2)), bias=torch.zeros(2))
    obj = torch_file.load(torch_save({"state_dict": state, "epoch": 3}))
    assert type(obj["state_dict"]) is dict and list(obj["state_dict"]) == ["weight", "bias"]
    np.testing.assert_array_equal(obj["state_dict"]["weight"], np.ones((2, 2), np.float32))


def test_plain_values_round_trip_through_torch() -> None:
    value = {"s": "ünïcode", "i": -(2**40), "f": 0.1, "b": True, "n": None, "l": [1, (2, "x")]}
    value["bytes"] = b"\x00\xff raw"  # type: ignore[assignment]
    assert torch_file.load(torch_save(value)) == value


def test_shared_storage_is_read_once_and_views_stay_independent() -> None:
    base = torch.arange(10, dtype=torch.float32)
    obj = torch_file.load(torch_save({"a": base[:5], "b": base[5:]}))
    obj["a"][0] = 99  # arrays are owned copies
    np.testing.assert_array_equal(obj["b"], np.arange(5, 10, dtype=np.float32))


def test_archive_prefix_and_extra_members_do_not_matter() -> None:
    data = torch_save({"x": torch.ones(3)})
    src = zipfile.ZipFile(io.BytesIO(data))
    renamed = io.BytesIO()
    with zipfile.ZipFile(renamed, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename.replace("archive/", "learned_embeds/"), src.read(info))
        dst.writestr("learned_embeds/extra-tool-notes.txt", b"ignored")
    np.testing.assert_array_equal(torch_file.load(renamed.getvalue())["x"], np.ones(3, np.float32))


def test_shape_mode_reads_no_storage(tmp_path: Path) -> None:
    """Checkpoint family detection must not read blobs: a corrupt blob only fails full loads."""
    data = torch_save({"w": torch.ones(1000)})
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("archive/data/0")
    corrupt = bytearray(data)
    corrupt[info.header_offset : info.header_offset + 4] = b"PK\x00\x00"  # its local header
    path = tmp_path / "big.ckpt"
    path.write_bytes(bytes(corrupt))
    assert torch_file.load_path(path, tensors="shape") == {"w": TensorRef((1000,), "float32")}
    with pytest.raises(EmbeddingFileError):
        torch_file.load_path(path)


@pytest.mark.parametrize(
    "obj",
    [
        {"<concept>": torch.randn(2, 768)},
        {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(4, 1024)}},
    ],
    ids=["diffusers", "a1111"],
)
def test_a_file_saved_without_crcs_reads_as_torch_reads_it(obj: Any, tmp_path: Path) -> None:
    """``torch.serialization.set_crc32_options(False)`` makes ``torch.save`` write 0 for every
    CRC, and torch's reader checks none (pytorch ``cmake/Dependencies.cmake``:
    ``MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS``), so every UI loads such a file: so must we, from
    bytes and from disk (the second goes through :mod:`zipfile`), with torch's vectors."""
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        data = torch_save(obj)
    finally:
        torch.serialization.set_crc32_options(before)
    assert {info.CRC for info in zipfile.ZipFile(io.BytesIO(data)).infolist()} == {0}
    path = tmp_path / "no-crc.pt"
    path.write_bytes(data)
    expected, ours = torch_load(data), torch_file.load(data)
    params = ("string_to_param", "*") if "string_to_param" in obj else ("<concept>",)
    for got in (ours, torch_file.load_path(path)):
        want, value = expected, got
        for key in params:
            want, value = want[key], value[key]
        np.testing.assert_array_equal(value, as_numpy(want))
    shapes = torch_file.load_path(path, tensors="shape")
    for key in params:
        shapes = shapes[key]
    assert shapes == TensorRef(tuple(want.shape), "float32")


def test_shape_mode_on_legacy_file_ignores_storages(tmp_path: Path) -> None:
    data = torch_save({"w": torch.ones(10)}, **LEGACY)
    path = tmp_path / "legacy.pt"
    path.write_bytes(data[:-8])  # storage record truncated
    assert torch_file.load_path(path, tensors="shape") == {"w": TensorRef((10,), "float32")}
    with pytest.raises(EmbeddingFileError, match="truncated"):
        torch_file.load_path(path)


def test_big_endian_byteorder_member() -> None:
    data = torch_save({"x": torch.arange(4, dtype=torch.float32)})
    src = zipfile.ZipFile(io.BytesIO(data))
    swapped = np.arange(4, dtype=">f4").tobytes()
    data = rezip(data, {"archive/byteorder": b"big", "archive/data/0": swapped})
    assert src.read("archive/data/0") != swapped
    np.testing.assert_array_equal(torch_file.load(data)["x"], np.arange(4, dtype=np.float32))


# ----------------------------------------------------------------------------- refused inputs


def _pkl(data: bytes) -> bytes:
    return zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: b"", "not a torch file"),
        (lambda d: b"GIF89a" + d, "not a torch file"),
        (lambda d: d[:100], "truncated: ends after 100 bytes"),
        (lambda d: rezip(d, {"archive/data.pkl": None}), "no data.pkl"),
        (lambda d: rezip(d, {"other/data.pkl": _pkl(d)}), "several data.pkl"),
        (lambda d: rezip(d, {"archive/data/0": None}), "no member"),
        (lambda d: rezip(d, {"archive/data/0": b"\0" * 8}), "holds 8 bytes, expected 40"),
        (lambda d: rezip(d, {"archive/data.pkl": _pkl(d)[:-1]}), "corrupt pickle"),
        (lambda d: rezip(d, {"archive/byteorder": b"middle"}), "byteorder"),
    ],
    ids=[
        "empty", "not-torch", "truncated-zip", "no-data-pkl", "two-data-pkl", "missing-blob",
        "short-blob", "truncated-pickle", "bad-byteorder",
    ],
)  # fmt: skip
def test_broken_zip_files_are_refused(make: Any, message: str) -> None:
    data = torch_save({"x": torch.ones(10)})
    with pytest.raises(EmbeddingFileError, match=message):
        torch_file.load(make(data))


def test_tensor_pointing_outside_its_storage_is_refused() -> None:
    data = torch_save({"x": torch.ones(10)})
    pkl = _pkl(data)
    # the shape tuple (10,) is "K\x0a\x85"; claim 11 elements over a 10-element storage
    assert pkl.count(b"K\x0a\x85") == 1
    forged = rezip(data, {"archive/data.pkl": pkl.replace(b"K\x0a\x85", b"K\x0b\x85")})
    with pytest.raises(EmbeddingFileError, match="outside its storage"):
        torch_file.load(forged)
    with pytest.raises(EmbeddingFileError, match="outside its storage"):
        torch_file.load(forged, tensors="shape")


def test_duplicate_member_is_refused() -> None:
    data = torch_save({"x": torch.ones(2)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        src = zipfile.ZipFile(io.BytesIO(data))
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr("archive/data/0", b"\0" * 8)
    with pytest.raises(EmbeddingFileError, match="twice"):
        torch_file.load(out.getvalue())


def test_zip_bomb_by_ratio_is_refused() -> None:
    """2 MiB of zeros deflate to ~2 KB (ratio ~1000): no torch writer produces that."""
    data = torch_save({"x": torch.zeros(2, 256 * 1024)})
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(EmbeddingFileError, match="compression ratio"):
        torch_file.load(out.getvalue())


def test_declared_size_over_the_cap_is_refused() -> None:
    data = torch_save({"x": torch.ones(2)})
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("archive/data/0")
    central = data.index(b"PK\x01\x02")
    entry = data.index(b"archive/data/0", central) - 46
    size_at = entry + 24  # uncompressed size field of the central directory entry
    assert struct.unpack_from("<I", data, size_at)[0] == info.file_size
    forged = bytearray(data)
    struct.pack_into("<I", forged, size_at, 0xFFFFFFF0)
    with pytest.raises(EmbeddingFileError, match="over the limit"):
        torch_file.load(bytes(forged))


def test_lying_sizes_are_caught_by_bounded_reads() -> None:
    data = torch_save({"x": torch.ones(2)})
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("archive/data/0")
    central = data.index(b"PK\x01\x02")
    entry = data.index(b"archive/data/0", central) - 46
    forged = bytearray(data)
    struct.pack_into("<II", forged, entry + 20, info.file_size - 4, info.file_size - 4)
    with pytest.raises(EmbeddingFileError):
        torch_file.load(bytes(forged))


def test_legacy_trailing_bytes_are_refused() -> None:
    data = torch_save({"x": torch.ones(2)}, **LEGACY)
    with pytest.raises(EmbeddingFileError, match="after the last"):
        torch_file.load(data + b"junk")


def test_load_path_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(EmbeddingFileError) as info:
        torch_file.load_path(path)
    assert info.value.path == str(path)
    with pytest.raises(EmbeddingFileError, match="cannot read"):
        torch_file.load_path(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------- writing


def a1111_value(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": rng.standard_normal((4, 768)).astype(np.float32)},
        "name": "my-emb",
        "step": 3000,
        "sd_checkpoint": "e6e8e1fc",
        "sd_checkpoint_name": "model",
    }


def as_torch(value: Any) -> Any:
    """The same value with arrays turned into tensors (what torch.save would be given)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, OrderedDict):
        return OrderedDict((k, as_torch(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {k: as_torch(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_torch(v) for v in value]
    if isinstance(value, tuple):
        return tuple(as_torch(v) for v in value)
    return value


def assert_same(torch_value: Any, value: Any) -> None:
    if isinstance(value, np.ndarray):
        assert isinstance(torch_value, torch.Tensor)
        assert tuple(torch_value.shape) == value.shape
        assert torch_value.numpy().dtype == value.dtype
        np.testing.assert_array_equal(torch_value.numpy(), value)
    elif isinstance(value, dict):
        assert type(torch_value) is type(value) and list(torch_value) == list(value)
        for key in value:
            assert_same(torch_value[key], value[key])
    elif isinstance(value, list | tuple):
        assert type(torch_value) is type(value) and len(torch_value) == len(value)
        for a, b in zip(torch_value, value, strict=True):
            assert_same(a, b)
    else:
        assert type(torch_value) is type(value) and torch_value == value


#: the members torch < 2.1 wrote and A1111's modules/safe.py (check_zip_filenames) allows
A1111_MEMBERS = ("data.pkl", "data/", "version")


def members(data: bytes) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    return {name: archive.read(name) for name in archive.namelist()}


def test_dumps_writes_torch_saves_members_that_a1111_allows_byte_for_byte() -> None:
    """Every member we write is torch.save's member of that name, byte for byte and in torch's
    order; we leave out the members torch >= 2.1 adds, which A1111 refuses (and torch.load
    does not need: it still reads the file, with weights_only=True)."""
    value = a1111_value(np.random.default_rng(0))
    value["fp16"] = np.linspace(0, 1, 7, dtype=np.float16)
    value["ordered"] = OrderedDict(b=1, a=[1.5, None, True, (1, 2, 3, 4)])
    ours, theirs = members(torch_file.dumps(value)), members(torch_save(as_torch(value)))
    kept = [n for n in theirs if n.removeprefix("archive/").startswith(A1111_MEMBERS)]
    assert list(ours) == kept == [
        "archive/data.pkl", "archive/data/0", "archive/data/1", "archive/version"
    ]  # fmt: skip
    assert all(ours[name] == theirs[name] for name in kept)
    assert set(theirs) - set(ours) == {
        "archive/.format_version",
        "archive/.storage_alignment",
        "archive/byteorder",
        "archive/.data/serialization_id",
    }
    assert_same(torch_load(torch_file.dumps(value)), value)


def test_zip_archive_lays_members_out_as_torch_does() -> None:
    """Given torch.save's own members, the container comes back as torch.save's exact bytes."""
    theirs = torch_save(as_torch(a1111_value(np.random.default_rng(0))))
    assert torch_file.zip_archive(members(theirs).items()) == theirs


def test_dumps_of_a_real_concept_file_is_that_file(corpus: Path) -> None:
    """sd-concepts-library's learned_embeds.bin (torch < 2.1), read and written again, is the
    same file byte for byte: the members, their layout and the pickle all match."""
    data = (corpus / "sd-concepts-birb-style.bin").read_bytes()
    assert torch_file.dumps(torch_file.load(data)) == data


def test_dumps_is_deterministic() -> None:
    first = torch_file.dumps(a1111_value(np.random.default_rng(1)))
    assert torch_file.dumps(a1111_value(np.random.default_rng(1))) == first
    assert torch_file.dumps(a1111_value(np.random.default_rng(2))) != first


def test_dumps_zip_layout() -> None:
    """Stored members in torch's order, each data record on a 64-byte boundary."""
    data = torch_file.dumps({"a": np.ones(3, np.float32), "b": np.zeros(2, np.float16)})
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == [
        "archive/data.pkl",
        "archive/data/0",
        "archive/data/1",
        "archive/version",
    ]
    assert archive.read("archive/version") == b"3\n"
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_STORED and info.flag_bits == 0x0808
        start = info.header_offset + 30 + len(info.filename)
        (extra_len,) = struct.unpack_from("<H", data, info.header_offset + 28)
        assert data[start : start + 2] == b"FB"
        assert (start + extra_len) % 64 == 0
    assert data[:4] == b"PK\x03\x04" and data[-22:-18] == b"PK\x05\x06"


def test_data_pkl_opcode_stream_of_a_tiny_dict() -> None:
    """The module docstring's layout, spelled out for ``{"a": float32 [1, 2]}``."""
    expected = b"".join(
        [
            b"\x80\x02",  # PROTO 2
            b"}q\x00",  # EMPTY_DICT, BINPUT 0
            b"X\x01\x00\x00\x00aq\x01",  # BINUNICODE 'a', BINPUT 1
            b"ctorch._utils\n_rebuild_tensor_v2\nq\x02",  # GLOBAL, BINPUT 2
            b"((",  # MARK (rebuild args), MARK (persistent id)
            b"X\x07\x00\x00\x00storageq\x03",
            b"ctorch\nFloatStorage\nq\x04",
            b"X\x01\x00\x00\x000q\x05",  # storage key '0'
            b"X\x03\x00\x00\x00cpuq\x06",  # location
            b"K\x02",  # numel 2
            b"tq\x07Q",  # TUPLE, BINPUT 7, BINPERSID
            b"K\x00",  # storage offset 0
            b"K\x02\x85q\x08",  # size (2,)
            b"K\x01\x85q\x09",  # stride (1,)
            b"\x89",  # requires_grad False
            b"ccollections\nOrderedDict\nq\x0a)Rq\x0b",  # backward hooks OrderedDict()
            b"tq\x0cRq\x0d",  # TUPLE, BINPUT, REDUCE, BINPUT
            b"s.",  # SETITEM, STOP
        ]
    )
    value = {"a": np.array([1.0, 2.0], np.float32)}
    assert _pkl(torch_file.dumps(value)) == expected
    assert _pkl(torch_save(as_torch(value))) == expected


def test_dumps_read_by_torch_and_by_us() -> None:
    value: dict[str, Any] = a1111_value(np.random.default_rng(3))
    value.update(
        zero_d=np.array(265, np.int64),
        clip_g=np.ones((2, 1280), np.float16),
        fortran=np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        sliced=np.arange(10, dtype=np.float32)[::3],
        big_endian=np.arange(3, dtype=">f4"),
        shared=[],
        big_int=2**70,
    )
    value["shared"] = [value["zero_d"], value["zero_d"]]
    data = torch_file.dumps(value)
    theirs = torch_load(data)
    assert_same(theirs, {**value, "big_endian": np.arange(3, dtype=np.float32)})
    assert theirs["shared"][0] is theirs["shared"][1]  # one tensor, written once
    back = torch_file.load(data)
    for key in ("fortran", "sliced", "clip_g", "zero_d"):
        np.testing.assert_array_equal(back[key], value[key])
        assert back[key].dtype == value[key].dtype
    assert back["step"] == 3000 and back["big_int"] == 2**70


def test_dumps_refuses_what_torch_cannot_hold() -> None:
    with pytest.raises(TypeError):
        torch_file.dumps({"x": object()})
    with pytest.raises(TypeError):
        torch_file.dumps({"x": np.array(["text"])})
    with pytest.raises(TypeError):
        torch_file.dumps({"x": b"bytes"})


keys = st.text(max_size=8)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.builds(
        lambda n, seed, dtype: np.random.default_rng(seed).standard_normal(n).astype(dtype),
        st.integers(0, 20),
        st.integers(0, 2**32 - 1),
        st.sampled_from([np.float32, np.float16]),
    ),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


@settings(max_examples=150, deadline=None)
@given(value=st.dictionaries(keys, values, max_size=5))
def test_dumps_load_round_trip(value: dict[str, Any]) -> None:
    data = torch_file.dumps(value)
    assert _plain(torch_file.load(data)) == _plain(value)
    assert torch_file.dumps(value) == data


@settings(max_examples=40, deadline=None)
@given(value=st.dictionaries(keys, values, max_size=5))
def test_dumps_torch_round_trip(value: dict[str, Any]) -> None:
    assert_same(torch_load(torch_file.dumps(value)), value)


# ----------------------------------------------- numpy values, as in Lightning-trained .ckpt files


NUMPY_VALUES: dict[str, Any] = {
    "float64": np.float64(0.3141592653589793),
    "float32": np.float32(-2.5),
    "float16": np.float16(1.5),
    "int64": np.int64(-(2**40)),
    "uint8": np.uint8(200),
    "bool": np.bool_(True),
    "complex128": np.complex128(1 - 2j),
    "dtype": np.dtype("float32"),
    "dtype-big-endian": np.dtype(">i2"),
    "floats": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
    "ints-big-endian": np.arange(6, dtype=">i4").reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    "bools": np.array([[True, False, True]]),
    "empty": np.zeros((0, 7), np.int16),
    "0-d": np.array(7.25),
}


def assert_numpy_equal(loaded: Any, expected: Any) -> None:
    """Same value and type; arrays come back owned and in native byte order."""
    if isinstance(expected, np.ndarray):
        assert type(loaded) is np.ndarray and loaded.flags.owndata and loaded.flags.writeable
        assert loaded.dtype == expected.dtype.newbyteorder("=")
        np.testing.assert_array_equal(loaded, expected)
    else:
        assert type(loaded) is type(expected) and loaded == expected


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("name", list(NUMPY_VALUES))
def test_numpy_values_pickled_by_numpy_load_to_equal_values(name: str, protocol: int) -> None:
    """``pickle.dumps`` of each numpy value (numpy 2 spells its module ``numpy._core``) as the
    data.pkl of a torch zip: every pickle protocol numpy values reach us in."""
    value = NUMPY_VALUES[name]
    pkl = pickle.dumps({"v": value, "again": value}, protocol=protocol)
    loaded = torch_file.load(rezip(torch_save({}), {"archive/data.pkl": pkl}))
    assert_numpy_equal(loaded["v"], value)
    assert loaded["again"] is loaded["v"]  # one object in the pickle, one value out


def test_numpy_1_spelling_of_the_module() -> None:
    """numpy < 2 (which trained SD 1.x) wrote ``numpy.core.multiarray``; both spellings load."""
    value = {"score": np.float64(0.5), "a": np.arange(3, dtype=np.int64)}
    pkl = pickle.dumps(value, protocol=2)
    assert b"numpy._core.multiarray\n" in pkl
    old = pkl.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    loaded = torch_file.load(rezip(torch_save({}), {"archive/data.pkl": old}))
    assert_numpy_equal(loaded["score"], value["score"])
    assert_numpy_equal(loaded["a"], value["a"])


def _lightning_checkpoint_class(monkeypatch: pytest.MonkeyPatch) -> type:
    """A class that pickles as Lightning's ``ModelCheckpoint``, the key of a .ckpt's callbacks.

    pytorch_lightning is not a dependency; pickle only needs the module importable by that name
    to write the same ``GLOBAL`` the real class produces.
    """
    name = "pytorch_lightning.callbacks.model_checkpoint"
    for depth in range(1, 4):  # the import pickle does needs the parent packages too
        package = ".".join(name.split(".")[:depth])
        monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    cls = type("ModelCheckpoint", (), {"__module__": name})
    sys.modules[name].ModelCheckpoint = cls  # type: ignore[attr-defined]
    return cls


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_sd_ckpt_like_file_loads_in_both_modes(
    legacy: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout of sd-v1-4.ckpt: a state dict of tensors beside Lightning's training state,
    which carries numpy scalars and small arrays."""
    checkpoint_cls = _lightning_checkpoint_class(monkeypatch)
    gen = torch.Generator().manual_seed(1)
    state_dict = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3, generator=gen),
        "model.diffusion_model.input_blocks.0.0.bias": torch.randn(8, generator=gen),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.randn(
            16, 12, generator=gen
        ).half(),
    }
    callback_state = {
        "monitor": None,
        "best_model_score": np.float64(0.1234),
        "best_model_path": "/logs/checkpoints/last.ckpt",
        "current_score": np.float32(0.5),
        "dirpath": "/logs/checkpoints",
        "history": np.array([0.9, 0.5, 0.1234]),
    }
    ckpt = {
        "epoch": 5,
        "global_step": 470000,
        "pytorch-lightning_version": "1.4.2",
        "state_dict": state_dict,
        "callbacks": {checkpoint_cls: callback_state},
    }
    path = tmp_path / "sd-like.ckpt"
    path.write_bytes(torch_save(ckpt, **(LEGACY if legacy else {})))
    key = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"

    for mode in ("load", "shape"):
        obj = torch_file.load_path(path, tensors=mode)  # type: ignore[arg-type]
        assert obj["global_step"] == 470000 and obj["epoch"] == 5
        assert list(obj["callbacks"]) == [key]
        loaded = obj["callbacks"][key]
        assert loaded.keys() == callback_state.keys()
        for name, value in callback_state.items():
            if isinstance(value, np.generic | np.ndarray):
                assert_numpy_equal(loaded[name], value)
            else:
                assert loaded[name] == value
        assert obj["state_dict"].keys() == state_dict.keys()
        for name, tensor in state_dict.items():
            if mode == "shape":
                assert obj["state_dict"][name] == TensorRef(
                    tuple(tensor.shape), str(tensor.dtype)[6:]
                )
            else:
                np.testing.assert_array_equal(obj["state_dict"][name], as_numpy(tensor))
