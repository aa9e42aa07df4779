"""The A1111 image-embedding card: both carriers, A1111's algorithm, and hostile pictures."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tireg.converters import (
    Embedding,
    EmbeddingFileError,
    NotAnEmbeddingError,
    a1111_png,
    read_bytes,
    read_bytes_detailed,
)

from .strategies import DAMAGES, damaged, embeddings

FUZZ_EXAMPLES = 300 * int(os.environ.get("TIREG_FUZZ_SCALE", "1"))


def strip_text_chunks(png: bytes) -> bytes:
    """Rewrite a PNG without its tEXt/zTXt/iTXt chunks (what metadata-stripping sites do)."""
    out = [png[:8]]
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            out.append(png[pos:end])
        pos = end
    return b"".join(out)


def _sd1(n: int = 3, seed: int = 0) -> Embedding:
    rng = np.random.default_rng(seed)
    return Embedding(
        name="card test",
        vectors={"clip_l": rng.standard_normal((n, 768)).astype(np.float32)},
        step=1234,
        trained_on_hash="e6e8e1fc",
        trained_on_name="model",
    )


def test_lcg_matches_a1111_self_test() -> None:
    assert a1111_png.lcg_mask(4).tolist() == [253, 242, 127, 44]
    state, expected = 0, []
    for _ in range(5000):
        state = (1664525 * state + 1013904223) % 2**32
        expected.append(state % 255)
    assert a1111_png.lcg_mask(5000).tolist() == expected


def test_card_carries_both_payloads_independently() -> None:
    emb = _sd1()
    card = a1111_png.dumps(emb)
    text, pixels = a1111_png.loads_both(card)
    assert text is not None and pixels is not None
    for payload in (text, pixels):
        assert payload["name"] == "card test" and payload["step"] == 1234
        assert payload["string_to_token"] == {"*": 265}
        assert payload["sd_checkpoint"] == "e6e8e1fc" and payload["sd_checkpoint_name"] == "model"
        matrix = payload["string_to_param"]["*"].astype(np.float32)
        assert matrix.tobytes() == emb.vectors["clip_l"].tobytes()

    stripped = strip_text_chunks(card)
    assert b"sd-ti-embedding" not in stripped
    with_text = read_bytes_detailed(card, name_hint="x")
    without = read_bytes_detailed(stripped, name_hint="x")
    assert (with_text.carrier, without.carrier) == ("text", "pixels")
    assert with_text.embedding.same_vectors(without.embedding)
    assert with_text.embedding.with_meta(source_sha256=None) == without.embedding.with_meta(
        source_sha256=None
    )


def test_pixel_payload_survives_lossless_webp() -> None:
    card = a1111_png.dumps(_sd1(seed=3))
    buf = io.BytesIO()
    Image.open(io.BytesIO(card)).save(buf, format="WEBP", lossless=True)
    result = read_bytes_detailed(buf.getvalue(), name_hint="x")
    assert result.container == "webp" and result.carrier == "pixels"
    assert result.embedding.source_format == "a1111-webp"
    assert result.embedding.same_vectors(_sd1(seed=3))


def test_lossy_jpeg_of_a_card_is_not_an_embedding() -> None:
    buf = io.BytesIO()
    Image.open(io.BytesIO(a1111_png.dumps(_sd1()))).save(buf, format="JPEG", quality=80)
    with pytest.raises(NotAnEmbeddingError, match="not an embedding"):
        read_bytes(buf.getvalue(), name_hint="x")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_plain_pictures_are_not_embeddings(fmt: str) -> None:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(buf, format=fmt)
    with pytest.raises(NotAnEmbeddingError, match="not an embedding"):
        read_bytes(buf.getvalue(), name_hint="x")


def test_text_chunk_decodes_like_a1111_writes_it() -> None:
    """A card with only A1111's text chunk (JSON floats of a float32 tensor, as A1111 encodes)."""
    vec = np.linspace(-1, 1, 2 * 768, dtype=np.float32).reshape(2, 768)
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": {"TORCHTENSOR": vec.tolist()}},
        "name": "from text",
        "step": 7,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }
    info = PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(buf, format="PNG", pnginfo=info)
    emb = read_bytes(buf.getvalue(), name_hint="stem")
    assert emb.name == "from text" and emb.step == 7 and emb.source_format == "a1111-png"
    assert emb.vectors["clip_l"].tobytes() == vec.tobytes()


@pytest.mark.parametrize(
    "text, problem",
    [
        ("!!!not base64!!!", "not valid JSON|not base64"),
        (base64.b64encode(b"[1, 2]").decode(), "not a JSON object"),
        (
            base64.b64encode(
                b'{"string_to_param": {"*": {"TORCHTENSOR": [[1], [1, 2]]}}}'
            ).decode(),
            "malformed tensor",
        ),
        (
            base64.b64encode(b'{"string_to_param": {"*": {"TORCHTENSOR": "x"}}}').decode(),
            "tensor|floats",
        ),
        (base64.b64encode(b"[" * 100000 + b"]" * 100000).decode(), "not valid JSON"),
    ],
)
def test_bad_text_chunks_are_clear_errors(text: str, problem: str) -> None:
    info = PngInfo()
    info.add_text("sd-ti-embedding", text)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    with pytest.raises(EmbeddingFileError, match=problem):
        read_bytes(buf.getvalue(), name_hint="x")


def test_zlib_bomb_in_pixels_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(a1111_png, "MAX_PAYLOAD", 1000)
    with pytest.raises(EmbeddingFileError, match="over"):
        a1111_png._inflate(zlib.compress(b"0" * 5000))
    assert a1111_png._inflate(zlib.compress(b"0" * 500)[:-3]) is None  # truncated: no payload


def test_truncated_pngs_fail_cleanly() -> None:
    card = a1111_png.dumps(_sd1())
    for cut in (0, 7, 8, 33, 100, len(card) // 2, len(card) - 400):
        with pytest.raises(EmbeddingFileError):
            read_bytes(card[:cut], name_hint="x")


def test_huge_dimensions_are_refused_before_decoding() -> None:
    """A PNG header claiming 100000 x 100000 pixels is refused from its header alone."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(EmbeddingFileError, match=r"too large|truncated or corrupt"):
        read_bytes(a1111_png.PNG_MAGIC + chunk, name_hint="x")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(embeddings(sdxl=False))
def test_card_round_trip_through_each_carrier(emb: Embedding) -> None:
    card = a1111_png.dumps(emb)
    for data in (card, strip_text_chunks(card)):
        back = read_bytes(data, name_hint="ignored")
        assert back.same_vectors(emb)
        assert (back.name, back.step, back.trained_on_hash, back.trained_on_name) == (
            emb.name,
            emb.step,
            emb.trained_on_hash,
            emb.trained_on_name,
        )


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_card_decoder_only_raises_tireg_errors(data: st.DataObject) -> None:
    """Flip, cut or splice bytes of a real card: only EmbeddingFileError may come out."""
    base = _CARD
    how = data.draw(st.sampled_from([*DAMAGES, "pixels"]))
    if how in DAMAGES:
        blob = damaged(data, base, how, flips=8, spliced=64)
    else:
        h, w = data.draw(st.integers(1, 24)), data.draw(st.integers(1, 24))
        raw = data.draw(st.binary(min_size=h * w * 3, max_size=h * w * 3))
        buf2 = io.BytesIO()
        Image.frombytes("RGB", (w, h), raw).save(buf2, format="PNG")
        blob = buf2.getvalue()
    with contextlib.suppress(EmbeddingFileError):
        read_bytes(blob, name_hint="fuzz")


_CARD = a1111_png.dumps(_sd1(n=1, seed=9))
