"""A1111 "image embeddings": an embedding hidden in a PNG/WebP card, in and out.

A card carries the A1111 embedding dict twice, and either copy is enough:

* **text chunk** — tEXt ``sd-ti-embedding`` = base64 of the JSON dict, tensors written as
  ``{"TORCHTENSOR": nested lists}``. Lost when a site strips metadata.
* **pixel payload** — ``zlib(JSON)`` split into nibbles. The card is laid out as
  ``[low nibbles][black column][picture][black column][high nibbles]`` on black. Both nibble
  blocks have their low nibbles XORed with an LCG stream (m=2^32, a=1664525, c=1013904223, seed 0,
  ``state % 255``) and their high nibbles decorated with a grid of dots shaded by the first
  vector, which decoding masks away. Survives metadata stripping, not lossy re-encoding.

Decoding follows A1111 step by step (crop the outer black, mask the low nibbles, split at the
outermost all-zero columns, un-XOR, recombine), so any card A1111 can read, this reads too; the
writer emits both carriers so A1111 and tireg read our cards with or without their text chunk.
Everything here is plain numpy + Pillow: no pickle is involved, a card is data only.

Bounds, so a hostile card costs seconds and little memory, and we write nothing A1111 could not
read back:

* only PNG and WebP are decoded (a JPEG, GIF or AVIF cannot carry the lossless payload, and a
  progressive JPEG with thousands of scans decodes for minutes), and only when their header says
  at most :data:`MAX_PIXELS` pixels;
* a payload, from either carrier, holds at most :data:`MAX_PAYLOAD` bytes of JSON and
  :data:`MAX_NUMBERS` numbers, counted while it is parsed, and a ``TORCHTENSOR`` holds numbers
  only;
* the writer refuses embeddings A1111 could not carry (see :func:`check_writable`).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from tireg.converters.embedding import Embedding
from tireg.converters.errors import (
    EmbeddingFileError,
    NotAnEmbeddingError,
    UnsupportedConversionError,
)

TEXT_KEY = "sd-ti-embedding"
TENSOR_KEY = "TORCHTENSOR"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: the picture formats that can carry a card (lossless, with text chunks)
CARD_KINDS = ("png", "webp")
#: Pillow, which A1111 reads cards with, keeps at most 64 MiB of text chunks
#: (``PngImagePlugin.MAX_TEXT_MEMORY``); the base64 text carrier holds 3/4 of that in JSON
MAX_PAYLOAD = 48 * 1024 * 1024
#: a float64 written by JSON takes at most 26 characters with its separator, so no card A1111 can
#: read holds more numbers than this
MAX_NUMBERS = MAX_PAYLOAD // 26
#: pictures larger than this are refused before decoding their pixels (a card is ~600x512; the
#: largest one :func:`dumps` writes is under a million pixels)
MAX_PIXELS = 16_000_000
#: A1111 trains at most 75 vectors per token (the "Number of vectors per token" slider of its
#: modules/ui.py, minimum=1, maximum=75), the most one prompt chunk holds
CARD_MAX_VECTORS = 75
#: the widest text encoder A1111 loads an embedding for (SDXL's OpenCLIP bigG); A1111 skips an
#: embedding of any other width than its model's (textual_inversion.py, ``expected_shape``)
CARD_MAX_WIDTH = 1280

_TEXT_KEY_BYTES = TEXT_KEY.encode("latin-1")
#: the only chunks a plain PNG holds (see :func:`plain_png_text`); any other kind goes to Pillow
_PLAIN_CHUNKS = frozenset({b"IHDR", b"tEXt", b"IDAT", b"IEND"})
#: more chunks than any encoder writes for a card (64 MiB in 8 KiB IDATs is 8,192): a file of
#: millions of empty chunks is left to Pillow before walking it costs more than a moment
_PLAIN_MAX_CHUNKS = 1 << 16
_CHUNK_HEAD = struct.Struct(">I4s")
_CRC = struct.Struct(">I")
_IHDR = struct.Struct(">IIBBBBB")

_LCG_A = 1664525
_LCG_C = 1013904223
_LCG_MASK = (1 << 32) - 1
_lcg_cache = np.zeros(0, dtype=np.uint8)

_CARD_HEIGHT = 512
_PICTURE_WIDTH = 384


def image_kind(data: bytes) -> str | None:
    """``"png"``, ``"webp"``, another picture type's name, or None if ``data`` is no picture."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "avif"
    return None


# -- the LCG mask ------------------------------------------------------------------------------


def lcg_mask(count: int) -> np.ndarray:
    """The first ``count`` values of A1111's LCG stream (``state % 255``), as uint8.

    Computed by doubling (state[i+L] = A_L*state[i] + C_L mod 2^32) so a large card costs a few
    numpy passes instead of millions of Python iterations; the result is cached and extended.
    """
    global _lcg_cache
    if count <= _lcg_cache.size:
        return _lcg_cache[:count]
    states = np.empty(1, dtype=np.uint64)
    states[0] = _LCG_C  # the state after one step from seed 0
    mul, add = _LCG_A, _LCG_C  # the affine map that advances by len(states) steps
    while states.size < count:
        nxt = (states * np.uint64(mul) + np.uint64(add)) & np.uint64(_LCG_MASK)
        states = np.concatenate([states, nxt])
        mul, add = (mul * mul) & _LCG_MASK, (mul * add + add) & _LCG_MASK
    _lcg_cache = (states % np.uint64(255)).astype(np.uint8)
    return _lcg_cache[:count]


def _xor_low_nibbles(block: np.ndarray) -> np.ndarray:
    mask = (lcg_mask(block.size) & 0x0F).reshape(block.shape)
    return np.bitwise_xor(block, mask)


# -- the JSON payload --------------------------------------------------------------------------


def _tensor_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and TENSOR_KEY in obj:
        try:
            # no dtype given: numpy would turn strings into floats; numbers only are a tensor
            arr = np.array(obj[TENSOR_KEY])
        except (ValueError, TypeError) as exc:
            raise EmbeddingFileError(f"image embedding holds a malformed tensor ({exc})") from exc
        if arr.dtype.kind not in "fiu":
            raise EmbeddingFileError(f"image embedding holds a tensor of {arr.dtype}, not numbers")
        return arr.astype(np.float64)
    return obj


class _NumberCount:
    """``parse_int``/``parse_float`` for :func:`json.loads` that refuse past :data:`MAX_NUMBERS`
    while parsing, before a payload of zeros has become millions of Python objects."""

    def __init__(self) -> None:
        self.left = MAX_NUMBERS

    def _count(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise EmbeddingFileError(f"image embedding holds more than {MAX_NUMBERS:,} numbers")

    def int(self, text: str) -> int:
        self._count()
        return int(text)

    def float(self, text: str) -> float:
        self._count()
        return float(text)

    def hooks(self) -> dict[str, Any]:
        """The keyword arguments that make :func:`json.loads` count through this object."""
        return {"parse_int": self.int, "parse_float": self.float}


def _parse_payload(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_PAYLOAD:
        raise EmbeddingFileError(f"image embedding payload is over {MAX_PAYLOAD:,} bytes")
    # Two JSON numbers are always apart by at least one character, so a payload of n bytes holds
    # at most (n + 1) // 2 of them: below 2 * MAX_NUMBERS bytes (every card A1111 can write) the
    # count cannot trip, and Python's own number parsing is used, since a hook per number cost
    # more than the rest of reading a card. Longer payloads have every number counted as parsed.
    counted = {} if (len(raw) + 1) // 2 <= MAX_NUMBERS else _NumberCount().hooks()
    try:
        value = json.loads(raw.decode("utf-8"), object_hook=_tensor_hook, **counted)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, EmbeddingFileError):
            raise
        raise EmbeddingFileError(f"image embedding payload is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise EmbeddingFileError("image embedding payload is not a JSON object")
    return value


def _encode_payload(data: Mapping[str, Any]) -> bytes:
    """JSON of the A1111 dict; float32 values go through float64 repr, so they survive exactly."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return {TENSOR_KEY: obj.astype(np.float64).tolist()}
        raise TypeError(f"cannot encode {type(obj).__name__}")

    return json.dumps(data, default=default, ensure_ascii=False).encode("utf-8")


def _inflate(blob: bytes) -> bytes | None:
    """zlib-decompress with a ceiling (a small card must not expand into gigabytes); None when
    the bytes are no complete zlib stream (black columns by chance in an ordinary picture)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(blob, MAX_PAYLOAD + 1)
    except zlib.error:
        return None
    if len(out) > MAX_PAYLOAD:
        raise EmbeddingFileError(
            f"image embedding pixel payload decompresses to over {MAX_PAYLOAD:,} bytes"
        )
    return out if inflater.eof else None


# -- decoding ----------------------------------------------------------------------------------


def _open(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    kind = image_kind(data)
    if kind not in CARD_KINDS:
        raise NotAnEmbeddingError(
            f"a {(kind or 'unknown').upper()} picture, not an embedding",
            hint="only PNG and WebP pictures can carry an A1111 image embedding",
        )
    try:
        image = Image.open(io.BytesIO(data), formats=[kind.upper()])
        if image.width * image.height > MAX_PIXELS:
            raise EmbeddingFileError(
                f"picture of {image.width}x{image.height} pixels is too large for an embedding card"
            )
        image.load()
    except EmbeddingFileError:
        raise
    except UnidentifiedImageError as exc:
        raise EmbeddingFileError("the picture is truncated or corrupt (unreadable header)") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        problem = f"{type(exc).__name__}: {exc}"
        raise EmbeddingFileError(f"the picture is truncated or corrupt ({problem})") from exc
    return image


def decode_text(image: Any) -> dict[str, Any] | None:
    """The payload from the ``sd-ti-embedding`` text chunk, or None when there is none."""
    text = getattr(image, "text", None) or {}
    value = text.get(TEXT_KEY) if isinstance(text, dict) else None
    return None if value is None else _payload_from_text(value)


def _payload_from_text(value: str) -> dict[str, Any]:
    """The payload of an ``sd-ti-embedding`` text: base64 of the JSON dict."""
    try:
        raw = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise EmbeddingFileError(f"the {TEXT_KEY} text chunk is not base64") from exc
    return _parse_payload(raw)


def plain_png_text(data: bytes) -> str | None:
    """The ``sd-ti-embedding`` text of a plain PNG, read from its chunks without decoding a
    pixel; None when it has none, or is anything but plain (Pillow then decides, as before).

    Why: A1111 takes a card's text chunk when there is one and only otherwise looks at the
    pixels (modules/textual_inversion/textual_inversion.py, ``EmbeddingDatabase.load_from_file``:
    ``embedding_from_b64(embed_image.text['sd-ti-embedding'])``, else image_embedding.py's
    ``extract_image_data_embed``), and so does :func:`loads`; inflating and unfiltering the
    pixels to find that text cost more than the rest of reading a card.

    Plain is what A1111 and :func:`dumps` write, its structure checked as strictly as Pillow
    checks it or more: every chunk whole with its CRC right (Pillow skips the CRCs of IDAT and
    of what follows it); IHDR first, then only tEXt, IDAT in one run, and IEND, at most
    :data:`_PLAIN_MAX_CHUNKS` in all; 8-bit grey, RGB or either with alpha, standard compression
    and filtering, at most :data:`MAX_PIXELS` pixels; text within Pillow's ``MAX_TEXT_MEMORY``.
    The text is then what Pillow's ``text`` gives for the key (its tEXt rule: the key ends at
    the first NUL, the value is latin-1, the last chunk of a key wins). What is not checked is
    whether the pixel data inflates: a card whose every CRC is right but whose IDAT stream is
    broken (which damage in transit or storage does not make) is read from its text, as a
    reader that never needs its pixels may.
    """
    from PIL.PngImagePlugin import MAX_TEXT_MEMORY

    # 1. the signature, then the chunks in order, each whole, known and with its CRC right
    if not data.startswith(PNG_MAGIC):
        return None
    view = memoryview(data)
    pos, size = len(PNG_MAGIC), len(data)
    kinds: list[bytes] = []
    header = b""
    value: bytes | None = None
    text_memory = 0
    while kinds[-1:] != [b"IEND"]:
        if pos + 12 > size or len(kinds) >= _PLAIN_MAX_CHUNKS:
            return None
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        end = pos + 8 + length
        if kind not in _PLAIN_CHUNKS or end + 4 > size:
            return None
        if zlib.crc32(view[pos + 4 : end]) != _CRC.unpack_from(data, end)[0]:
            return None
        # 2. the header, and every text chunk (Pillow's tEXt rule)
        if kind == b"IHDR":
            header = data[pos + 8 : end]
        elif kind == b"tEXt":
            key, _, text = data[pos + 8 : end].partition(b"\0")
            if key:
                text_memory += len(text)
                if key == _TEXT_KEY_BYTES:
                    value = text
        kinds.append(kind)
        pos = end + 4
    # 3. IHDR once and first, IDAT in one run; a header A1111's cards and Pillow both read
    idat_runs = sum(k == b"IDAT" and (i == 0 or kinds[i - 1] != k) for i, k in enumerate(kinds))
    if kinds[0] != b"IHDR" or kinds.count(b"IHDR") != 1 or idat_runs != 1:
        return None
    if len(header) != 13 or text_memory > MAX_TEXT_MEMORY:
        return None
    width, height, depth, colour, compression, filtering, interlace = _IHDR.unpack(header)
    if not (0 < width * height <= MAX_PIXELS and depth == 8 and colour in (0, 2, 4, 6)):
        return None
    if compression or filtering or interlace not in (0, 1):
        return None
    return None if value is None else value.decode("latin-1")


def crop_black(pixels: np.ndarray) -> np.ndarray:
    """Trim outer rows/columns in which no pixel has all three channels above zero."""
    lit: np.ndarray = np.all(pixels > 0, axis=2)
    cols = np.flatnonzero(np.any(lit, axis=0))
    rows = np.flatnonzero(np.any(lit, axis=1))
    if cols.size == 0:
        return pixels
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def decode_pixels(image: Any) -> dict[str, Any] | None:
    """The payload hidden in the pixels, or None when the picture carries no nibble blocks."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    low = crop_black(pixels) & 0x0F
    black = np.flatnonzero(low.sum(axis=(0, 2), dtype=np.int64) == 0)
    if black.size < 2:
        return None
    left = np.ascontiguousarray(low[:, : black[0], :])
    right = np.ascontiguousarray(low[:, black[-1] + 1 :, :])
    if left.shape != right.shape or left.size == 0:
        return None
    combined = (_xor_low_nibbles(right) << 4) | _xor_low_nibbles(left)
    raw = _inflate(combined.tobytes())
    return None if raw is None else _parse_payload(raw)


def loads(data: bytes) -> tuple[dict[str, Any], str]:
    """Decode a card: (A1111 payload dict, carrier). Carrier is ``"text"`` or ``"pixels"``.

    A picture with neither carrier raises :class:`NotAnEmbeddingError`. A plain PNG's text chunk
    is read without decoding its pixels (:func:`plain_png_text`); any other picture goes
    through :func:`loads_decoded`.
    """
    text = plain_png_text(data)
    if text is not None:
        return _payload_from_text(text), "text"
    return loads_decoded(data)


def loads_decoded(data: bytes) -> tuple[dict[str, Any], str]:
    """:func:`loads` by opening and decoding the whole picture with Pillow: its text chunks
    (tEXt, zTXt or iTXt, anywhere in the file) win over its pixels."""
    kind = image_kind(data) or "picture"
    image = _open(data)
    payload = decode_text(image)
    if payload is not None:
        return payload, "text"
    payload = decode_pixels(image)
    if payload is not None:
        return payload, "pixels"
    raise NotAnEmbeddingError(
        f"a {image.width}x{image.height} {kind.upper()} picture with no embedding in its text "
        "chunks or pixels, not an embedding",
        hint="preview pictures are best named NAME.preview.png",
    )


def loads_both(data: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Decode each carrier on its own: (text payload, pixel payload); None where absent."""
    image = _open(data)
    return decode_text(image), decode_pixels(image)


# -- encoding ----------------------------------------------------------------------------------


def _dot_grid(height: int, width: int, shades: np.ndarray) -> np.ndarray:
    """High-nibble decoration: 6 px dots on an 8 px pitch, odd rows shifted 4 px, one shade each."""
    out = np.zeros((height, width), dtype=np.uint8)
    if shades.size == 0:
        return out
    yy, xx = np.mgrid[0:8, 0:8]
    disc = ((yy - 3.5) ** 2 + (xx - 3.5) ** 2) <= 9.0  # radius 3: 6 px across
    k = 0
    for row, top in enumerate(range(0, height, 8)):
        for left in range(4 * (row % 2), width, 8):
            patch = out[top : top + 8, left : left + 8]
            patch[disc[: patch.shape[0], : patch.shape[1]]] = shades[k % shades.size]
            k += 1
    return out


def _nibble_blocks(payload: bytes, height: int, first_vector: np.ndarray) -> tuple[np.ndarray, ...]:
    raw = np.frombuffer(zlib.compress(payload, 9), dtype=np.uint8)
    size = raw.size + (height - raw.size % height)
    size += 3 * height - size % (3 * height)
    padded = np.resize(raw, size)  # cyclic repetition; zlib ignores what follows its stream
    lo = (padded & 0x0F).reshape(height, -1, 3)
    hi = (padded >> 4).reshape(height, -1, 3)
    magnitude = np.abs(first_vector[:1024].astype(np.float64))
    peak = float(magnitude.max()) if magnitude.size and np.isfinite(magnitude).all() else 0.0
    shades = (magnitude / peak * 255).astype(np.uint8) if peak > 0 else np.zeros(0, np.uint8)
    dots = (_dot_grid(height, lo.shape[1], shades) & 0xF0)[:, :, None]
    return _xor_low_nibbles(lo) ^ dots, _xor_low_nibbles(hi) ^ dots


def _picture(embedding: Embedding, height: int) -> np.ndarray:
    """The visible middle: the vectors as a heat map, with A1111's caption underneath."""
    from PIL import Image, ImageDraw

    vectors = next(iter(embedding.vectors.values())).astype(np.float64)
    finite = np.where(np.isfinite(vectors), vectors, 0.0)
    scale = float(np.abs(finite).max()) or 1.0
    heat = np.clip(finite / scale * 127 + 128, 0, 255).astype(np.uint8)
    rgb = np.stack([heat, 255 - heat, np.full_like(heat, 96)], axis=2)
    map_height = height - 96
    picture = Image.fromarray(rgb).resize((_PICTURE_WIDTH, map_height), Image.Resampling.NEAREST)
    card = Image.new("RGB", (_PICTURE_WIDTH, height), (40, 40, 48))
    card.paste(picture, (0, 0))
    draw = ImageDraw.Draw(card)
    steps = "?" if embedding.step is None else str(embedding.step)
    lines = [
        f"<{embedding.name}>",
        embedding.trained_on_name or "",
        f"[{embedding.trained_on_hash}]" if embedding.trained_on_hash else "",
        f"{embedding.num_vectors}v {steps}s",
    ]
    for i, line in enumerate(lines):
        draw.text((8, map_height + 6 + 22 * i), line, fill=(235, 235, 235))
    pixels = np.asarray(card, dtype=np.uint8).copy()
    pixels[[0, -1], :, :] = np.maximum(pixels[[0, -1], :, :], 1)  # lit edges: crop_black keeps rows
    return pixels


def a1111_payload(embedding: Embedding) -> dict[str, Any]:
    """The dict A1111 saves for a single-encoder embedding (tensor as a float32 array)."""
    (matrix,) = embedding.vectors.values()
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": matrix},
        "name": embedding.name,
        "step": embedding.step,
        "sd_checkpoint": embedding.trained_on_hash,
        "sd_checkpoint_name": embedding.trained_on_name,
    }


def check_writable(embedding: Embedding) -> None:
    """Refuse, in one line, an embedding no A1111 card could carry: more than
    :data:`CARD_MAX_VECTORS` vectors or wider than :data:`CARD_MAX_WIDTH` (A1111 could neither
    train nor load it, and writing a card of a maximal one took minutes and gigabytes)."""
    n, width = next(iter(embedding.vectors.values())).shape
    if n > CARD_MAX_VECTORS or width > CARD_MAX_WIDTH:
        raise UnsupportedConversionError(
            f"an A1111 image embedding holds at most {CARD_MAX_VECTORS} vectors of width up to "
            f"{CARD_MAX_WIDTH}; this one has {n} of width {width}",
            hint="convert to safetensors or a1111-pt instead",
        )


def dumps(embedding: Embedding) -> bytes:
    """A PNG card carrying ``embedding`` in its text chunk and in its pixels.

    Only single-encoder embeddings fit: A1111's card holds ``string_to_param``; callers refuse
    SDXL before getting here.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if len(embedding.vectors) != 1:
        raise ValueError("an A1111 card holds one encoder's vectors")
    check_writable(embedding)
    payload = _encode_payload(a1111_payload(embedding))
    first = next(iter(embedding.vectors.values()))[0]
    lo, hi = _nibble_blocks(payload, _CARD_HEIGHT, first)
    gap = np.zeros((_CARD_HEIGHT, 1, 3), dtype=np.uint8)
    card = np.concatenate([lo, gap, _picture(embedding, _CARD_HEIGHT), gap, hi], axis=1)
    info = PngInfo()
    info.add_text(TEXT_KEY, base64.b64encode(payload).decode("ascii"))
    out = io.BytesIO()
    Image.fromarray(card, "RGB").save(out, format="PNG", pnginfo=info, optimize=False)
    return out.getvalue()
