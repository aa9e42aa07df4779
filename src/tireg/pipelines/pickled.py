"""A pickled ``.ckpt`` checkpoint rewritten once as safetensors, without executing its pickle.

Why: diffusers reads ``.ckpt`` files with ``torch.load``; tireg never lets a pickle run. And a
pipeline's ``from_single_file`` takes only a path (``load_single_file_checkpoint`` opens it or
treats it as a Hub link), never a state dict, so the safe reading has to land in a file. The
file's ``data.pkl`` goes through tireg's allow-list unpickler
(:func:`tireg.converters.pickle_safe.unpickle`), which yields inert records: a
:class:`~tireg.converters.pickle_safe.TensorStub` per tensor (dtype, shape, strides, offset) naming
its storage, the zip member ``data/<key>``. Lightning's ``state_dict`` nesting is unwrapped.
Each tensor's bytes are then copied from its member into a safetensors file, one tensor at a
time, so a 4 GB checkpoint never sits in memory. The result lives in tireg's cache under the
checkpoint's SHA-256 (so a renamed or copied file is converted once), written atomically; the
cache may be deleted at any time.

Only the zip container (every ``torch.save`` since torch 1.6, so every SD checkpoint) is
streamed; the legacy container is refused with a hint. Members are read without a CRC check,
as torch reads them (:func:`tireg.converters.torch_file.without_crc`).
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from tireg import config
from tireg.converters import pickle_safe
from tireg.converters.errors import EmbeddingFileError
from tireg.converters.pickle_safe import TensorStub
from tireg.converters.torch_file import MAX_PICKLE_BYTES, without_crc
from tireg.files import atomic_writer
from tireg.pipelines.errors import PipelineError

#: torch dtype name -> safetensors dtype
_ST_DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_CHUNK = 16 << 20


def is_pickle(path: Path) -> bool:
    """True for a torch pickle (zip or legacy container), judged by its first bytes.

    A safetensors file is recognised first (its JSON header opens at byte 8, as in
    :func:`tireg.checkpoints.detect.detect_family`): its little-endian header length may itself
    begin with ``PK`` or ``0x80``."""
    with path.open("rb") as fh:
        head = fh.read(9)
    if head[8:9] == b"{":
        return False
    return head[:2] == b"PK" or head[:1] == b"\x80"


def cached_path(sha256: str) -> Path:
    """Where the safetensors copy of the checkpoint with this SHA-256 lives."""
    return config.cache_dir() / "checkpoints" / f"{sha256}.safetensors"


def as_safetensors(path: Path, sha256: str | None) -> Path:
    """The safetensors copy of ``path`` (converted on first use; ``sha256`` keys the cache)."""
    if sha256 is None:
        raise PipelineError("a .ckpt needs its SHA-256 to be cached", path=path)
    target = cached_path(sha256)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(path) as archive:
            _convert(archive, target)
    except zipfile.BadZipFile as exc:
        raise PipelineError(
            "not a torch zip archive (legacy torch container or damaged file)",
            path=path,
            hint="re-save it with a current torch, or convert it to .safetensors",
        ) from exc
    except EmbeddingFileError as exc:
        raise PipelineError(f"unreadable checkpoint: {exc.message}", path=path) from exc
    return target


def state_dict(archive: zipfile.ZipFile) -> tuple[str, dict[str, TensorStub]]:
    """The archive's directory prefix and its tensors by name (``state_dict`` unwrapped)."""
    pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise EmbeddingFileError("the archive has no single data.pkl: not a torch file")
    info = archive.getinfo(pickles[0])
    if info.file_size > MAX_PICKLE_BYTES:
        raise EmbeddingFileError(f"data.pkl declares {info.file_size} bytes, over the limit")
    obj, _ = pickle_safe.unpickle(archive.read(without_crc(info)))
    while isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise EmbeddingFileError("the pickle holds no state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, TensorStub)}
    if not tensors:
        raise EmbeddingFileError("the state dict holds no tensors")
    return pickles[0][: -len("data.pkl")], tensors


def _contiguous(stub: TensorStub) -> bool:
    expected, step = [], 1
    for size in reversed(stub.shape):
        expected.append(step)
        step *= size
    return all(
        size == 1 or s == e
        for size, s, e in zip(stub.shape, stub.stride, reversed(expected), strict=True)
    )


def _header(tensors: dict[str, TensorStub]) -> bytes:
    """The safetensors header for ``tensors`` in name order, padded to 8 bytes."""
    entries: dict[str, Any] = {}
    at = 0
    for name in sorted(tensors):
        stub = tensors[name]
        dtype = _ST_DTYPES.get(stub.dtype)
        if dtype is None:
            raise EmbeddingFileError(f"tensor {name!r} has dtype {stub.dtype}, not supported")
        size = math.prod(stub.shape) * stub.itemsize
        entries[name] = {"dtype": dtype, "shape": list(stub.shape), "data_offsets": [at, at + size]}
        at += size
    text = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def copy_tensor(archive: zipfile.ZipFile, prefix: str, stub: TensorStub, out: BinaryIO) -> None:
    """Append one tensor's bytes: streamed when it is its storage's leading contiguous run,
    else gathered through numpy from the whole storage (views are rare in checkpoints)."""
    import numpy as np

    member = archive.getinfo(prefix + "data/" + stub.storage.key)
    size = math.prod(stub.shape) * stub.itemsize
    start = (stub.storage.start + stub.offset) * stub.itemsize
    if member.file_size < stub.storage.numel * stub.storage.itemsize:
        raise EmbeddingFileError(f"storage {stub.storage.key!r} is truncated")
    with archive.open(without_crc(member)) as src:
        if _contiguous(stub):
            # read up to the tensor rather than seek: a member opened without its CRC cannot
            # seek (zipfile's forward seek reads and drops the bytes all the same)
            skip, remaining = start, size
            while remaining:
                block = src.read(min(_CHUNK, skip or remaining))
                if not block:
                    raise EmbeddingFileError(f"storage {stub.storage.key!r} is truncated")
                if skip:
                    skip -= len(block)
                    continue
                out.write(block)
                remaining -= len(block)
            return
        blob = src.read()
    # pickle_safe checked that every element of the view lies inside the storage
    items = np.frombuffer(blob, dtype=f"V{stub.itemsize}")[stub.storage.start + stub.offset :]
    view = np.lib.stride_tricks.as_strided(
        items,
        shape=stub.shape,
        strides=tuple(s * stub.itemsize for s in stub.stride),
        writeable=False,
    )
    out.write(np.ascontiguousarray(view).tobytes())


def _convert(archive: zipfile.ZipFile, target: Path) -> None:
    prefix, tensors = state_dict(archive)
    if (
        prefix + "byteorder" in archive.namelist()
        and archive.read(without_crc(archive.getinfo(prefix + "byteorder"))) != b"little"
    ):
        raise EmbeddingFileError("big-endian torch files are not supported")
    with atomic_writer(target) as out:
        out.write(_header(tensors))
        for name in sorted(tensors):
            copy_tensor(archive, prefix, tensors[name], out)
