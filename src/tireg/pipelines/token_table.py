"""A checkpoint's token-embedding tables, read alone: one tensor per text encoder, never the model.

What ``tireg tokens`` and ``tireg from-text`` need is the ``[49408, width]`` table that maps token
ids to vectors. A checkpoint holds it among a thousand other tensors (2 to 7 GB), so only that
tensor's bytes are read:

* ``.safetensors``: the header gives the tensor's offsets; one seek and one read;
* ``.ckpt`` / ``.bin`` (torch zip files): ``data.pkl`` through tireg's allow-list unpickler, which
  names the storage member holding the table; only that member's bytes are read;
* a diffusers folder: the same from ``text_encoder[_2]/model.safetensors`` (or its ``.bin``).

Key names are the LDM layout's (baselines.md §2; diffusers ``single_file_utils``) and the
diffusers/transformers ones, with and without transformers 5.6's dropped ``text_model.`` prefix.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from tireg.converters import CLIP_G, CLIP_H, CLIP_L
from tireg.converters.errors import EmbeddingFileError
from tireg.converters.safetensors_file import read_header, tensor_from_bytes
from tireg.pipelines import pickled
from tireg.pipelines.errors import PipelineError

#: encoder key -> the names its token table has in single-file checkpoints
SINGLE_FILE_KEYS = {
    CLIP_L: (
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
    ),
    CLIP_H: ("cond_stage_model.model.token_embedding.weight",),
    CLIP_G: ("conditioner.embedders.1.model.token_embedding.weight",),
}
#: the table's name inside a diffusers ``text_encoder`` folder's weights
FOLDER_KEYS = ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight")
_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_FLOAT_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64}


def token_tables(path: Path) -> dict[str, np.ndarray]:
    """Every token table of the checkpoint at ``path``, by encoder key, as float32."""
    if path.is_dir():
        return _folder_tables(path)
    found = _read(path, {name: key for key, names in SINGLE_FILE_KEYS.items() for name in names})
    if not found:
        raise PipelineError(
            "no text-encoder token table in this checkpoint (a UNet-only file, a LoRA?)",
            path=path,
        )
    return found


def _folder_tables(folder: Path) -> dict[str, np.ndarray]:
    """``text_encoder`` gives CLIP-L (768) or OpenCLIP-H (1024); ``text_encoder_2`` CLIP-G."""
    tables: dict[str, np.ndarray] = {}
    for sub in ("text_encoder", "text_encoder_2"):
        weights = next(
            (folder / sub / w for w in _FOLDER_WEIGHTS if (folder / sub / w).is_file()), None
        )
        if weights is None:
            continue
        found = _read(weights, dict.fromkeys(FOLDER_KEYS, sub))
        for table in found.values():
            width = table.shape[1]
            key = CLIP_G if sub == "text_encoder_2" else (CLIP_H if width == 1024 else CLIP_L)
            tables[key] = table
    if not tables:
        raise PipelineError("no text encoder weights in this diffusers folder", path=folder)
    return tables


def _read(path: Path, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    """The tensors of ``wanted`` (name -> result key) present in the file, by result key."""
    try:
        with path.open("rb") as stream:
            head = stream.read(9)
            stream.seek(0)
            if head[8:9] == b"{":
                return _read_safetensors(stream, path.stat().st_size, wanted)
        if not pickled.is_pickle(path):
            raise PipelineError("not a safetensors or torch checkpoint", path=path)
        with zipfile.ZipFile(path) as archive:
            return _read_torch_zip(archive, wanted)
    except (EmbeddingFileError, zipfile.BadZipFile) as exc:
        raise PipelineError(f"unreadable checkpoint: {exc}", path=path) from exc
    except OSError as exc:
        raise PipelineError(f"cannot read the checkpoint: {exc.strerror}", path=path) from exc


def _read_safetensors(
    stream: io.BufferedReader, size: int, wanted: dict[str, str]
) -> dict[str, np.ndarray]:
    header = read_header(stream, size)
    found: dict[str, np.ndarray] = {}
    for name, key in wanted.items():
        info = header.tensors.get(name)
        if info is None or key in found:
            continue
        stream.seek(header.data_start + info.begin)
        data = stream.read(info.end - info.begin)
        found[key] = np.asarray(tensor_from_bytes(info, data), dtype=np.float32)
    return found


def _read_torch_zip(archive: zipfile.ZipFile, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    prefix, stubs = pickled.state_dict(archive)
    found: dict[str, np.ndarray] = {}
    for name, key in wanted.items():
        stub = stubs.get(name)
        if stub is None or key in found:
            continue
        buffer = io.BytesIO()
        pickled.copy_tensor(archive, prefix, stub, buffer)
        dtype = {"float32": np.float32, "float16": np.float16, "float64": np.float64}.get(
            stub.dtype
        )
        raw = buffer.getvalue()
        if stub.dtype == "bfloat16":
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype is not None:
            array = np.frombuffer(raw, dtype)
        else:
            raise EmbeddingFileError(f"token table {name!r} has dtype {stub.dtype}")
        found[key] = array.reshape(stub.shape).astype(np.float32)
    return found
