"""A strict, dependency-free reader and a deterministic writer for the safetensors format.

The format (huggingface/safetensors README): an 8-byte little-endian header length ``N``, ``N``
bytes of UTF-8 JSON (starting with ``{``, optionally right-padded with spaces), then one byte
buffer. Each tensor entry is ``{"dtype", "shape", "data_offsets": [begin, end]}`` relative to the
buffer; ``__metadata__`` is a string-to-string map. We apply every check the reference
implementation applies, because an embedding file is untrusted input:

* ``N`` below 100,000,000 and inside the file; the header is a JSON object without duplicate keys;
* dtypes are known; ``prod(shape) * itemsize == end - begin``;
* offsets are sorted, contiguous and cover the buffer exactly (no holes: no polyglot files);
* ``__metadata__`` values are all strings;
* shapes have at most :data:`~tireg.converters.limits.MAX_DIMS` dimensions, and no dimension
  (nor the product of the non-zero ones) is beyond what numpy can index, so a shape like
  ``[0, 2**70]`` (zero bytes, yet no array numpy can make) is refused here, not by numpy;
* JSON nested too deeply for the parser is refused, not a ``RecursionError``.

The writer is deterministic: tensors sorted by name, compact JSON with sorted keys, the header
padded with spaces to a multiple of 8. The same tensors and metadata always give the same bytes.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from tireg.converters.errors import EmbeddingFileError
from tireg.converters.limits import MAX_DIMS
from tireg.errors import ends_early

MAX_HEADER_SIZE = 100_000_000
#: the header length, the file's first 8 bytes
_LENGTH = struct.Struct("<Q")
#: the largest element count numpy can index (intp), for any one tensor or dimension
_MAX_ELEMENTS = 2**62

#: safetensors dtype name -> (numpy dtype it is stored as, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),  # no numpy bfloat16: kept as raw bits, widened to float32 on read
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("?", 1),
    "F8_E4M3": ("u1", 1),
    "F8_E5M2": ("u1", 1),
}
#: safetensors dtype name -> the torch name the rest of tireg reports it under
_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
#: the JSON writer of every header: compact, sorted keys, UTF-8 as is (one instance, built once,
#: where ``json.dumps`` with these options builds an encoder per call)
_HEADER_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)
_NUMPY_TO_DTYPE = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}

#: the same, keyed by the native (little-endian) numpy dtype itself: ``dtype.name`` runs Python
_DTYPE_OF = {np.dtype(DTYPES[code][0]): code for code in _NUMPY_TO_DTYPE.values()}


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: where a tensor's bytes are, without reading them."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed and validated header. ``data_start`` is the absolute offset of the buffer."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def dtype_name(dtype: str) -> str:
    """The torch name of a safetensors dtype (``BF16`` -> ``bfloat16``), as tireg reports it."""
    return _DTYPE_NAMES.get(dtype, dtype)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # a repeated key leaves fewer entries than pairs (looked for only then)
    if len(out) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        key = next(key for key, count in counts.items() if count > 1)
        raise EmbeddingFileError(f"safetensors header repeats the key {key!r}")
    return out


#: the JSON reader of every header (what ``json.loads(text, object_pairs_hook=...)`` builds
#: anew on each call, built once)
_HEADER_READER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def parse_header(head: bytes, file_size: int) -> Header:
    """Validate the header bytes (from offset 8) against a file of ``file_size`` bytes."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EmbeddingFileError("safetensors header is not UTF-8") from exc
    if not text.startswith("{"):
        raise EmbeddingFileError("safetensors header does not start with '{'")
    try:
        raw = _HEADER_READER.decode(text)
    except RecursionError:
        raise EmbeddingFileError("safetensors header nests JSON too deeply") from None
    except ValueError as exc:
        if isinstance(exc, EmbeddingFileError):
            raise
        raise EmbeddingFileError(f"safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise EmbeddingFileError("safetensors header is not a JSON object")

    metadata_raw = raw.pop("__metadata__", {})
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_raw.items()
    ):
        raise EmbeddingFileError("safetensors __metadata__ must map strings to strings")

    data_start = 8 + len(head)
    buffer_size = file_size - data_start
    tensors: dict[str, TensorInfo] = {}
    for name, entry in raw.items():
        tensors[name] = _parse_entry(name, entry)

    expected = 0
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != expected:
            kind = "overlap" if info.begin < expected else "a gap"
            raise EmbeddingFileError(f"safetensors offsets of {name!r} leave {kind} in the buffer")
        expected = info.end
    if expected > buffer_size:
        raise EmbeddingFileError(ends_early(file_size, data_start + expected))
    if expected != buffer_size:
        raise EmbeddingFileError(
            f"safetensors tensors cover {expected} bytes but the buffer holds {buffer_size}"
        )
    return Header(tensors=tensors, metadata=dict(metadata_raw), data_start=data_start)


def _parse_entry(name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise EmbeddingFileError(f"safetensors entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise EmbeddingFileError(f"safetensors entry {name!r} has unknown dtype {dtype!r}")
    # JSON gives a number as int (never bool) or float, so ``type(d) is int`` is the test of
    # ``isinstance(d, int) and not isinstance(d, bool)``; plain loops, not a generator per entry
    if type(shape) is not list:
        raise EmbeddingFileError(f"safetensors entry {name!r} has an invalid shape")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise EmbeddingFileError(f"safetensors entry {name!r} has an invalid shape")
    if len(shape) > MAX_DIMS:
        raise EmbeddingFileError(
            f"safetensors entry {name!r} has {len(shape)} dimensions (at most {MAX_DIMS})"
        )
    extent = 1
    count = 1  # Python ints cannot overflow; absurd shapes fail the size check below
    for dim in shape:
        count *= dim
        extent *= dim or 1
        if extent > _MAX_ELEMENTS:
            raise EmbeddingFileError(f"safetensors entry {name!r} has an impossibly large shape")
    if (
        type(offsets) is not list
        or len(offsets) != 2
        or type(offsets[0]) is not int
        or type(offsets[1]) is not int
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise EmbeddingFileError(f"safetensors entry {name!r} has invalid data_offsets")
    if count * DTYPES[dtype][1] != offsets[1] - offsets[0]:
        raise EmbeddingFileError(
            f"safetensors entry {name!r}: shape {shape} x {dtype} does not match its byte range"
        )
    return TensorInfo(dtype=dtype, shape=tuple(shape), begin=offsets[0], end=offsets[1])


def read_header(stream: BinaryIO, file_size: int) -> Header:
    """Read and validate only the header of an open file (never the tensor data)."""
    length = _header_length(stream.read(8), file_size)
    head = stream.read(length)
    if len(head) != length:
        raise EmbeddingFileError("safetensors header is truncated")
    return parse_header(head, file_size)


def header_of(data: bytes) -> Header:
    """:func:`read_header` of a whole file held in memory: the header sliced out of the bytes,
    with the same checks, and no stream made to read them through."""
    length = _header_length(data[:8], len(data))
    return parse_header(data[8 : 8 + length], len(data))


def _header_length(prefix: bytes, file_size: int) -> int:
    """The header length the first 8 bytes give, checked against the cap and the file size."""
    if len(prefix) < 8:
        raise EmbeddingFileError("file too short for a safetensors header")
    (length,) = _LENGTH.unpack(prefix)
    if length > MAX_HEADER_SIZE:
        raise EmbeddingFileError(
            f"safetensors header claims {length} bytes (limit {MAX_HEADER_SIZE})"
        )
    if length > file_size - 8:
        raise EmbeddingFileError(ends_early(file_size) + f", inside its {length:,}-byte header")
    return int(length)


def tensor_from_bytes(info: TensorInfo, data: bytes | memoryview) -> np.ndarray:
    """Decode one tensor's bytes. BF16 is widened to float32 exactly (it is float32's top half)."""
    np_dtype, _ = DTYPES[info.dtype]
    arr = np.frombuffer(data, dtype=np_dtype).reshape(info.shape)
    if info.dtype == "BF16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def loads(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a whole safetensors file held in memory: (tensors, metadata)."""
    header = header_of(data)
    view = memoryview(data)
    tensors = {
        name: tensor_from_bytes(
            info, view[header.data_start + info.begin : header.data_start + info.end]
        )
        for name, info in header.tensors.items()
    }
    return tensors, header.metadata


def dumps(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise tensors (little-endian, C order) deterministically."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    arrays: list[np.ndarray] = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dtype = _DTYPE_OF.get(arr.dtype) or _NUMPY_TO_DTYPE.get(arr.dtype.name)
        if dtype is None:
            raise EmbeddingFileError(f"cannot store dtype {arr.dtype} in safetensors")
        stored = np.ascontiguousarray(arr, dtype=DTYPES[dtype][0])
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + stored.nbytes],
        }
        arrays.append(stored)
        offset += stored.nbytes
    head = _HEADER_JSON.encode(header).encode()
    head += b" " * (-len(head) % 8)
    # one copy of each tensor's bytes, straight into the result
    return b"".join([struct.pack("<Q", len(head)), head, *(a.data for a in arrays)])
