"""AUTOMATIC1111's rules for loading an embedding file, reproduced from its source.

Upstream (AUTOMATIC1111/stable-diffusion-webui):

* ``modules/safe.py`` @0593384: ``torch.load`` is replaced by ``safe.load``, which runs
  ``check_pt`` on every ``.pt``/``.bin`` first: ``check_zip_filenames`` allows only the members
  ``<dir>/data.pkl``, ``<dir>/data/<N>`` and ``<dir>/version`` (later releases also
  ``byteorder`` and ``.data/serialization_id``, after issue #10179); exactly one ``data.pkl``;
  and ``RestrictedUnpickler.find_class`` allows only the globals in :data:`ALLOWED_GLOBALS`.
  Any failure is reported as "The file may be malicious" and the file is skipped.
* ``modules/textual_inversion/textual_inversion.py`` @22ecb78: ``EmbeddingDatabase.
  load_from_file`` (later split out as ``create_embedding_from_data``): the prompt word is the
  file stem (for image cards the ``name`` inside); the layout branches; ``.detach()`` on the
  tensors (on *every* value of an SDXL dict); the width (``shape``) the model must match.
* ``modules/textual_inversion/image_embedding.py``: ``embedding_from_b64`` (the
  ``sd-ti-embedding`` text chunk) and ``extract_image_data_embed`` (the pixel payload, with
  ``crop_black`` and ``xor_block``).

The restricted unpickler is checked without running the pickle: every ``GLOBAL`` opcode of
``data.pkl`` must name an allowed global (opcodes that would need the pickle's stack to know what
they import are refused outright; tireg writes protocol 2, which has none). The values are then
loaded with ``torch.load(weights_only=True)``, which gives what A1111's plain ``torch.load`` gives
for a file that passed the check, and executes nothing.
"""

from __future__ import annotations

import base64
import json
import os
import pickletools
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from PIL import Image

ZIP_NAMES = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")
DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")
TORCH_NAMES = (
    "FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "DoubleStorage", "ByteStorage",
    "float32", "BFloat16Storage",
)  # fmt: skip
ALLOWED_GLOBALS = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        *(("torch", name) for name in TORCH_NAMES),
        ("torch.nn.modules.container", "ParameterDict"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("_codecs", "encode"),
        ("pytorch_lightning.callbacks", "model_checkpoint"),
        ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
        ("__builtin__", "set"),
    }
)
#: image types whose embedded payload A1111 looks for
IMAGE_EXTENSIONS = (".PNG", ".WEBP", ".JXL", ".AVIF")


class Refused(Exception):
    """A1111 would not load the file; the message is what it reports."""


@dataclass
class A1111Embedding:
    """What ``load_from_file`` registers: the prompt word, vectors and the metadata it keeps."""

    name: str
    vec: torch.Tensor | dict[str, torch.Tensor]
    step: Any
    sd_checkpoint: Any
    sd_checkpoint_name: Any
    vectors: int
    shape: int


def check_pt(path: Path) -> None:
    """``safe.check_pt`` for a zip file (tireg writes no legacy torch files)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise Refused(f"{path}: not a zip; tireg writes no legacy torch files") from exc
    with archive:
        names = archive.namelist()
        for name in names:
            if not ZIP_NAMES.match(name):
                raise Refused(f"bad file inside {path}: {name}")
        pickles = [name for name in names if DATA_PKL.match(name)]
        if len(pickles) != 1:
            raise Refused(f"{len(pickles)} data.pkl found in {path}")
        check_globals(archive.read(pickles[0]))


def check_globals(data: bytes) -> None:
    """``RestrictedUnpickler.find_class``, applied to each global the pickle imports."""
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, name = str(arg).split(" ", 1)
            if (module, name) not in ALLOWED_GLOBALS:
                raise Refused(f"global '{module}/{name}' is forbidden")
        elif opcode.name in ("STACK_GLOBAL", "INST", "OBJ"):
            raise Refused(f"{opcode.name} imports a global this check cannot name statically")


def load_from_file(path: Path) -> A1111Embedding | None:
    """``EmbeddingDatabase.load_from_file``: None where A1111 skips the file silently."""
    name, ext = os.path.splitext(path.name)
    ext = ext.upper()
    data: Any
    if ext in IMAGE_EXTENSIONS:
        if os.path.splitext(name)[1].upper() == ".PREVIEW":
            return None
        with Image.open(path) as image:
            text = getattr(image, "text", {})
            if "sd-ti-embedding" in text:
                data = embedding_from_b64(text["sd-ti-embedding"])
            else:
                data = extract_image_data_embed(image)
                if not data:
                    return None
        name = data.get("name", name)
    elif ext in (".BIN", ".PT"):
        check_pt(path)
        data = torch.load(path, map_location="cpu", weights_only=True)
    elif ext == ".SAFETENSORS":
        data = safetensors.torch.load_file(path, device="cpu")
    else:
        return None
    return create_embedding_from_data(data, name)


def create_embedding_from_data(data: Any, name: str) -> A1111Embedding:
    """The layout branches, in A1111's order."""
    vec: torch.Tensor | dict[str, torch.Tensor]
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if len(params) != 1:
            raise Refused("embedding file has multiple terms in it")
        vec = next(iter(params.values())).detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    elif type(data) is dict and "clip_g" in data and "clip_l" in data:
        # every value is detached: a str or int beside the tensors raises AttributeError
        vec = {k: v.detach().to(dtype=torch.float32) for k, v in data.items()}
        shape = data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
        vectors = data["clip_g"].shape[0]
    elif type(data) is dict and type(next(iter(data.values()))) is torch.Tensor:
        if len(data) != 1:
            raise Refused("embedding file has multiple terms in it")
        emb = next(iter(data.values()))
        if len(emb.shape) == 1:
            emb = emb.unsqueeze(0)
        vec = emb.detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    else:
        raise Refused(f"Couldn't identify {name} as textual inversion embedding or concept")
    return A1111Embedding(
        name=name,
        vec=vec,
        step=data.get("step", None),
        sd_checkpoint=data.get("sd_checkpoint", None),
        sd_checkpoint_name=data.get("sd_checkpoint_name", None),
        vectors=vectors,
        shape=shape,
    )


def _decode_tensors(obj: dict[str, Any]) -> Any:
    """``EmbeddingDecoder.object_hook``: ``{"TORCHTENSOR": nested lists}`` is a float64 tensor."""
    if "TORCHTENSOR" in obj:
        return torch.from_numpy(np.array(obj["TORCHTENSOR"]))
    return obj


def embedding_from_b64(text: str) -> Any:
    """``embedding_from_b64``: base64 of the JSON dict."""
    return json.loads(base64.b64decode(text), object_hook=_decode_tensors)


def _xor_block(block: np.ndarray) -> np.ndarray:
    """``xor_block``: XOR with the low nibble of A1111's LCG stream (seed 0, values mod 255)."""
    seed, stream = 0, np.empty(block.size, np.uint8)
    for i in range(block.size):
        seed = (1664525 * seed + 1013904223) % 2**32
        stream[i] = seed % 255
    return np.bitwise_xor(block.astype(np.uint8), stream.reshape(block.shape) & 0x0F)


def _crop_black(img: np.ndarray) -> np.ndarray:
    """``crop_black`` (tolerance 0): cut the all-black border rows and columns."""
    mask = (img > 0).all(2)
    cols, rows = mask.any(0), mask.any(1)
    col_end = mask.shape[1] - cols[::-1].argmax()
    row_end = mask.shape[0] - rows[::-1].argmax()
    return img[rows.argmax() : row_end, cols.argmax() : col_end]


def extract_image_data_embed(image: Image.Image) -> Any:
    """``extract_image_data_embed``: the payload in the low nibbles of the two side blocks."""
    pixels = np.array(image.convert("RGB")).astype(np.uint8)
    out = _crop_black(pixels) & 0x0F
    black_cols = np.where(np.sum(out, axis=(0, 2)) == 0)[0]
    if black_cols.shape[0] < 2:
        return None
    lower = _xor_block(out[:, : black_cols.min(), :])
    upper = _xor_block(out[:, black_cols.max() + 1 :, :])
    payload = ((upper << 4) | lower).flatten().tobytes()
    return json.loads(zlib.decompress(payload), object_hook=_decode_tensors)
