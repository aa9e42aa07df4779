"""read(write(e)) keeps exactly what each format carries (writing.CARRIES), for every writer.

For the formats that carry all of an embedding's own data (tireg, a1111-pt, png) that is
``read(write(e)) == e`` up to provenance (the file a value was read from) and, for A1111's
formats, the free-form extras A1111 has no place for; tireg keeps even those.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from tireg.converters import (
    CARRIES,
    WRITE_FORMATS,
    Embedding,
    NonFiniteVectorsWarning,
    OutputExistsError,
    UnsupportedConversionError,
    encode,
    kept_by,
    read_bytes,
    read_file,
    read_sdxl_pair,
    write_file,
)
from tireg.converters.writing import EXTENSIONS

from .strategies import embeddings

EXAMPLES = {"png": 15}  # cards take ~50 ms each; everything else is fast
DEFAULT_EXAMPLES = 40

EXPECTED_SOURCE = {
    "a1111-pt": ("a1111-pt", "sdxl-pt"),
    "png": ("a1111-png", None),
    "diffusers-bin": ("diffusers-bin", "diffusers-sdxl-pair"),
    "diffusers-safetensors": ("diffusers-safetensors", "diffusers-sdxl-pair"),
    "safetensors": ("kohya-safetensors", "sdxl-safetensors"),
}


def write_and_read(emb: Embedding, fmt: str) -> tuple[Embedding, list[bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_file(emb, Path(tmp) / f"out{EXTENSIONS[fmt]}", fmt)
        blobs = [p.read_bytes() for p in paths]
        back = read_file(paths[0]) if len(paths) == 1 else read_sdxl_pair(*paths)
    return back, blobs


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_round_trip_keeps_what_the_format_carries(fmt: str) -> None:
    @settings(
        max_examples=EXAMPLES.get(fmt, DEFAULT_EXAMPLES),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(embeddings(sdxl=False if fmt == "png" else None))
    def check(emb: Embedding) -> None:
        back, blobs = write_and_read(emb, fmt)
        if fmt == "tireg":
            assert back == emb
            return
        assert kept_by(back, fmt) == kept_by(emb, fmt)
        assert back.same_vectors(emb)  # bit-exact, NaN payloads, subnormals and -0.0 included
        single, pair = EXPECTED_SOURCE[fmt]
        assert back.source_format == (pair if len(emb.vectors) == 2 else single)
        assert back.source_sha256 == hashlib.sha256(blobs[0]).hexdigest()

    check()


def test_carries_is_documented_for_every_format() -> None:
    assert set(CARRIES) == set(WRITE_FORMATS)
    assert all({"vectors", "name"} <= kept for kept in CARRIES.values())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([torch.float16, torch.bfloat16]),
    st.sampled_from(["safetensors", "pt"]),
    st.integers(1, 16),
    st.sampled_from([768, 1024, 5]),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(-(2**15), 2**15 - 1), max_size=16),
)
def test_half_precision_inputs_widen_exactly_and_survive_every_writer(
    dtype: torch.dtype, container: str, n: int, width: int, seed: int, specials: list[int]
) -> None:
    """Any 16-bit pattern (subnormals, inf, nan too) reads as torch's exact float32 widening."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(-(2**15), 2**15, size=n * width, dtype=np.int16)
    bits[rng.integers(0, n * width, size=len(specials))] = specials  # edge patterns, anywhere
    tensor = torch.from_numpy(bits.reshape(n, width)).view(dtype)
    tensors = {"emb_params": tensor}
    if container == "safetensors":
        data = st_save(tensors)
    else:
        buf = io.BytesIO()
        torch.save(tensors, buf)
        data = buf.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteVectorsWarning)
        emb = read_bytes(data, name_hint="half")
        (matrix,) = emb.vectors.values()
        expected = tensor.float().numpy()
        nan = np.isnan(expected)
        assert (np.isnan(matrix) == nan).all()  # NaN payloads may differ in the quiet bit
        assert matrix[~nan].tobytes() == expected[~nan].tobytes()
        for fmt in ("tireg", "a1111-pt", "diffusers-safetensors", "safetensors"):
            back, _ = write_and_read(emb, fmt)
            assert back.same_vectors(emb)


def test_png_refuses_sdxl_with_a_hint() -> None:
    emb = Embedding(
        name="xl",
        vectors={
            "clip_l": np.zeros((1, 768), np.float32),
            "clip_g": np.zeros((1, 1280), np.float32),
        },
    )
    with pytest.raises(UnsupportedConversionError, match="SDXL") as info:
        encode(emb, "png")
    assert info.value.hint and "safetensors" in info.value.hint


def test_only_tireg_holds_odd_encoder_combinations() -> None:
    emb = Embedding(
        name="odd",
        vectors={"clip_h": np.zeros((1, 1024), np.float32), "emb": np.zeros((1, 5), np.float32)},
    )
    assert encode(emb, "tireg")
    for fmt in WRITE_FORMATS[1:]:
        with pytest.raises(UnsupportedConversionError, match="tireg"):
            encode(emb, fmt)


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    emb = Embedding(name="x", vectors={"clip_l": np.ones((1, 768), np.float32)})
    target = tmp_path / "x.pt"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_file(emb, target, "a1111-pt")
    assert target.read_bytes() == b"precious"
    write_file(emb, target, "a1111-pt", force=True)
    assert read_file(target).same_vectors(emb)


def test_sdxl_pair_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    emb = Embedding(
        name="<xl>",
        vectors={"clip_l": np.ones((2, 768), np.float32), "clip_g": np.ones((2, 1280), np.float32)},
    )
    (tmp_path / "e_2.safetensors").write_bytes(b"existing second file")
    with pytest.raises(OutputExistsError):
        write_file(emb, tmp_path / "e.safetensors", "diffusers-safetensors")
    assert not (tmp_path / "e.safetensors").exists()
    written = write_file(emb, tmp_path / "e.safetensors", "diffusers-safetensors", force=True)
    assert [p.name for p in written] == ["e.safetensors", "e_2.safetensors"]


def test_writers_are_deterministic() -> None:
    emb = Embedding(
        name="d", vectors={"clip_l": np.arange(768, dtype=np.float32).reshape(1, 768)}, step=3
    )
    for fmt in WRITE_FORMATS:
        assert encode(emb, fmt) == encode(emb, fmt)


def test_unknown_format() -> None:
    emb = Embedding(name="d", vectors={"clip_l": np.zeros((1, 768), np.float32)})
    with pytest.raises(UnsupportedConversionError, match="unknown output format"):
        encode(emb, "ckpt")


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_nan_and_inf_survive_every_format(fmt: str) -> None:
    matrix = np.ones((2, 768), np.float32)
    matrix[0, 0], matrix[0, 1], matrix[1, 2] = np.nan, np.inf, -np.inf
    emb = Embedding(name="bad", vectors={"clip_l": matrix})
    with pytest.warns(NonFiniteVectorsWarning):
        back, _ = write_and_read(emb, fmt)
    (got,) = back.vectors.values()
    assert np.isnan(got[0, 0]) and got[0, 1] == np.inf and got[1, 2] == -np.inf
    assert np.array_equal(np.nan_to_num(got), np.nan_to_num(matrix))


@pytest.mark.parametrize("via", ["diffusers-bin", "diffusers-safetensors", "tireg"])
def test_a_single_flat_vector_keeps_its_rank(corpus: Path, tmp_path: Path, via: str) -> None:
    """sd-concepts-library's ``[768]`` tensor comes back ``[768]``, not ``[1, 768]`` (which
    InvokeAI's probe reads as width 1), through the diffusers writers and tireg's own format."""
    emb = read_file(corpus / "sd-concepts-birb-style.bin")
    assert emb.flat and emb.num_vectors == 1
    (first,) = write_file(emb, tmp_path / f"a{EXTENSIONS[via]}", via)
    (second,) = write_file(read_file(first), tmp_path / "b.bin", "diffusers-bin")
    state = torch.load(second, weights_only=True)
    assert state["<birb-style>"].shape == (768,)
    assert state["<birb-style>"].numpy().tobytes() == emb.vectors["clip_l"].tobytes()
    (kohya,) = write_file(emb, tmp_path / "k.safetensors", "safetensors")
    assert not read_file(kohya).flat  # kohya always writes [n, D]
