"""Cards read from their chunks (``a1111_png.plain_png_text``) decode to exactly what a full
Pillow decode gives (``a1111_png.loads_decoded``, the path every card took before), byte for
byte; and the JSON number guard counts only where a payload could hold too many numbers."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tireg.converters import Embedding, EmbeddingFileError, a1111_png

from .strategies import DAMAGES, damaged, embeddings
from .test_png_card import _CARD, _sd1

KEY = a1111_png.TEXT_KEY


# -- helpers -----------------------------------------------------------------------------------


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The (kind, data) of each chunk of a well-formed PNG."""
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def chunk(kind: bytes, data: bytes) -> bytes:
    """One chunk with its length and a right CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    return a1111_png.PNG_MAGIC + b"".join(chunk(kind, data) for kind, data in parts)


def outcome(read: Any, data: bytes) -> tuple[Any, ...]:
    """What a reader made of ``data``, comparable exactly: arrays by dtype, shape and bytes."""
    try:
        payload, carrier = read(data)
    except EmbeddingFileError as exc:
        return ("error", type(exc).__name__, exc.message)
    return ("read", carrier, canonical(payload))


def canonical(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return tuple((k, canonical(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(canonical(v) for v in value)
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))  # -0.0 and NaN told apart, by their bits
    return (type(value).__name__, value)


def assert_same_as_full_decode(data: bytes, *, plain: bool) -> None:
    """``loads`` agrees with the full decode, and took the chunk path exactly when ``plain``."""
    assert (a1111_png.plain_png_text(data) is not None) is plain
    assert outcome(a1111_png.loads, data) == outcome(a1111_png.loads_decoded, data)


def text_card(text: str, *, mode: str = "RGB", zip_text: bool = False, **save: Any) -> bytes:
    info = PngInfo()
    info.add_text(KEY, text, zip=zip_text)
    out = io.BytesIO()
    Image.new(mode, (24, 16), 7 if mode in ("L", "P", "I;16") else (7,) * len(mode)).save(
        out, format="PNG", pnginfo=info, **save
    )
    return out.getvalue()


def payload_text(embedding: Embedding) -> str:
    raw = a1111_png._encode_payload(a1111_png.a1111_payload(embedding))
    return base64.b64encode(raw).decode("ascii")


# -- the shared corpus and the cards tests build -----------------------------------------------


def test_corpus_cards_read_from_chunks_as_pillow_reads_them(corpus: Path) -> None:
    cards = sorted(corpus.glob("*.png"))
    assert cards
    for path in cards:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            pillow_text = image.text.get(KEY)  # loads the whole picture first
        assert a1111_png.plain_png_text(data) == pillow_text
        assert outcome(a1111_png.loads, data) == outcome(a1111_png.loads_decoded, data)
    card = (corpus / "a1111-gasai-yuno-10000.png").read_bytes()
    assert a1111_png.plain_png_text(card) is not None
    assert a1111_png.loads(card)[1] == "text"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_CARD, id="tireg-card"),
        pytest.param(a1111_png.dumps(_sd1(n=5, seed=2)), id="tireg-card-5-vectors"),
        pytest.param(text_card(payload_text(_sd1(seed=4))), id="a1111-text-only"),
        pytest.param(text_card(payload_text(_sd1(seed=4)), mode="RGBA"), id="rgba"),
        pytest.param(text_card(payload_text(_sd1(seed=4)), mode="L"), id="grey"),
        pytest.param(text_card(payload_text(_sd1(seed=4)), mode="LA"), id="grey-alpha"),
        pytest.param(text_card("!!!not base64!!!"), id="bad-base64"),
        pytest.param(text_card("\xe9" + payload_text(_sd1())), id="latin-1-text"),
        pytest.param(text_card(""), id="empty-text"),
        pytest.param(text_card(base64.b64encode(b"[1, 2]").decode()), id="not-an-object"),
    ],
)
def test_plain_cards_read_as_the_full_decode_reads_them(data: bytes) -> None:
    assert_same_as_full_decode(data, plain=True)


def test_text_after_the_pixels_and_the_last_of_two_chunks_count_as_for_pillow() -> None:
    first, second = payload_text(_sd1(seed=5)), payload_text(_sd1(seed=6))
    parts = chunks(a1111_png.dumps(_sd1(seed=7)))
    header, text, idat, end = parts[0], parts[1], parts[2:-1], parts[-1]
    moved = assemble([header, *idat, text, end])
    assert_same_as_full_decode(moved, plain=True)
    twice = assemble([header, (b"tEXt", KEY.encode() + b"\0" + first.encode()), *idat])
    twice += chunk(b"tEXt", KEY.encode() + b"\0" + second.encode()) + chunk(b"IEND", b"")
    assert_same_as_full_decode(twice, plain=True)
    payload, _ = a1111_png.loads(twice)
    assert payload["string_to_param"]["*"].astype(np.float32).tobytes() == (
        _sd1(seed=6).vectors["clip_l"].tobytes()
    )
    no_separator = assemble([header, (b"tEXt", KEY.encode()), *idat, end])  # Pillow: value ""
    assert_same_as_full_decode(no_separator, plain=True)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(text_card(payload_text(_sd1()), zip_text=True), id="ztxt"),
        pytest.param(text_card(payload_text(_sd1()), dpi=(72, 72)), id="extra-chunk-phys"),
        pytest.param(text_card(payload_text(_sd1()), mode="P"), id="palette"),
        pytest.param(text_card(payload_text(_sd1()), mode="I;16"), id="16-bit"),
    ],
)
def test_other_pngs_go_to_pillow_and_read_as_before(data: bytes) -> None:
    assert_same_as_full_decode(data, plain=False)
    assert a1111_png.loads(data)[1] == "text"


def test_a_card_without_its_text_is_decoded_and_read_from_its_pixels() -> None:
    parts = chunks(a1111_png.dumps(_sd1(seed=8)))
    stripped = assemble([part for part in parts if part[0] != b"tEXt"])
    assert_same_as_full_decode(stripped, plain=False)
    assert a1111_png.loads(stripped)[1] == "pixels"


def test_structure_a_plain_card_may_not_have() -> None:
    """Each departure from plain leaves the card to Pillow, which reads it as it always did."""
    parts = chunks(a1111_png.dumps(_sd1(seed=9)))
    header, text, idat, end = parts[0], parts[1], parts[2:-1], parts[-1]
    good = assemble(parts)
    bad_crc = bytearray(good)
    bad_crc[8 + 12 + 13 + 8 + 20] ^= 1  # a byte inside the tEXt chunk
    width, height = struct.unpack(">II", header[1][:8])

    def with_header(fields: bytes) -> bytes:
        return assemble([(b"IHDR", fields), text, *idat, end])

    variants = {
        "bad-text-crc": bytes(bad_crc),
        "no-iend": good[:-12],
        "truncated": good[: len(good) // 2],
        "text-before-header": assemble([text, header, *idat, end]),
        "two-headers": assemble([header, header, text, *idat, end]),
        "no-pixels": assemble([header, text, end]),
        "split-pixels": assemble([header, idat[0], text, idat[0], end]),
        "huge": with_header(struct.pack(">II", 5000, 5000) + header[1][8:]),
        "16-bit": with_header(header[1][:8] + b"\x10" + header[1][9:]),
        "palette": with_header(header[1][:9] + b"\x03" + header[1][10:]),
        "filter-method": with_header(header[1][:11] + b"\x01\x00"),
        "interlace-method": with_header(header[1][:12] + b"\x02"),
        "zero-width": with_header(struct.pack(">II", 0, height) + header[1][8:]),
        "short-header": with_header(header[1][:12]),
    }
    assert width * height <= a1111_png.MAX_PIXELS
    for name, data in variants.items():
        assert a1111_png.plain_png_text(data) is None, name
        assert outcome(a1111_png.loads, data) == outcome(a1111_png.loads_decoded, data), name


def test_a_million_empty_chunks_are_left_to_pillow_after_a_bounded_walk() -> None:
    parts = chunks(_CARD)
    many = [(b"IDAT", b"")] * (a1111_png._PLAIN_MAX_CHUNKS + 1)
    data = assemble([parts[0], parts[1], *many, *parts[2:]])
    assert a1111_png.plain_png_text(data) is None


def test_plain_card_with_broken_pixels_is_read_from_its_text() -> None:
    """The one thing the chunk path does not check: pixel data whose CRCs are right but which
    does not inflate (no damage in transit or storage makes one). The card is read from its
    text, which is whole and checked; the full decode refused it as corrupt."""
    broken = [(k, b"\x78\x9c" + bytes(40) if k == b"IDAT" else v) for k, v in chunks(_CARD)]
    data = assemble(broken)
    assert outcome(a1111_png.loads, data) == outcome(a1111_png.loads, _CARD)
    with pytest.raises(EmbeddingFileError, match="truncated or corrupt"):
        a1111_png.loads_decoded(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_cards_read_the_same_either_way(data: st.DataObject) -> None:
    """Bytes flipped, cut or spliced; or the chunks around the pixel data dropped, repeated,
    moved or added to, with right CRCs: the chunk path and the full decode make the same of
    each (a payload, or the same error)."""
    how = data.draw(st.sampled_from([*DAMAGES, "chunks"]))
    if how in DAMAGES:
        blob = damaged(data, _CARD, how, flips=4, spliced=32, first=8)
    else:
        parts = chunks(_CARD)
        pixels = [part for part in parts if part[0] == b"IDAT"]
        others = [part for part in parts if part[0] != b"IDAT"]
        text = data.draw(st.text(max_size=40)).encode("latin-1", "replace")
        others += [(b"tEXt", KEY.encode() + b"\0" + text), (b"tIME", bytes(7))]
        order = data.draw(st.lists(st.integers(0, len(others) - 1), max_size=8))
        picked = [others[i] for i in order]
        if data.draw(st.booleans()):  # the pixel data, whole, once (or not at all)
            at = data.draw(st.integers(0, len(picked)))
            picked[at:at] = pixels
        blob = assemble(picked)
    assert outcome(a1111_png.loads, blob) == outcome(a1111_png.loads_decoded, blob)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(embeddings(sdxl=False))
def test_cards_of_any_embedding_read_as_the_full_decode_reads_them(emb: Embedding) -> None:
    assert_same_as_full_decode(a1111_png.dumps(emb), plain=True)


# -- the JSON number guard ---------------------------------------------------------------------


def _counted(raw: bytes) -> dict[str, Any]:
    """The payload parsed with every number counted (what every payload went through before)."""
    hooks = a1111_png._NumberCount().hooks()
    value: dict[str, Any] = json.loads(
        raw.decode("utf-8"), object_hook=a1111_png._tensor_hook, **hooks
    )
    return value


@pytest.mark.parametrize(
    "raw",
    [
        a1111_png._encode_payload(a1111_png.a1111_payload(_sd1(n=4, seed=11))),
        b'{"step": 12345678901234567890, "x": [-0.0, 1e-320, 1.7976931348623157e308, 5E3, 0]}',
        b'{"string_to_param": {"*": {"TORCHTENSOR": [[1, 2.5, -3e-7]]}}, "name": "a,b:[c"}',
    ],
)
def test_numbers_parse_the_same_without_counting(raw: bytes) -> None:
    assert canonical(a1111_png._parse_payload(raw)) == canonical(_counted(raw))


def test_the_number_guard_still_trips_where_a_payload_could_hold_too_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(a1111_png, "MAX_NUMBERS", 10)
    eleven = b'{"x": [' + b",".join(b"1" for _ in range(11)) + b"]}"
    with pytest.raises(EmbeddingFileError, match="more than 10 numbers"):
        a1111_png._parse_payload(eleven)
    ten = b'{"x": [' + b",".join(b"1" for _ in range(10)) + b"]}"
    assert a1111_png._parse_payload(ten) == {"x": [1] * 10}
    # a payload short enough that it cannot hold more than ten numbers is not counted at all
    short = b'{"x":[1,2,3]}'
    assert (len(short) + 1) // 2 <= 10
    assert a1111_png._parse_payload(short) == {"x": [1, 2, 3]}
