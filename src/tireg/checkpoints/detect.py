"""Which model family a checkpoint belongs to, from its tensor names and shapes alone.

Why names and shapes suffice: a textual-inversion embedding is a row of the text encoder's
token-embedding table, so what decides compatibility is that table's *width*. Each family keeps
it under a fixed key in the original (LDM / SGM) single-file layout:

======================================================================  ==============  ========
key                                                                     width           family
======================================================================  ==============  ========
``cond_stage_model.transformer.text_model.embeddings.token_embedding``  768 (CLIP-L)    SD 1.x
``cond_stage_model.model.token_embedding``                              1024 (OpenCLIP  SD 2.x
                                                                        ViT-H)
``conditioner.embedders.0.transformer.text_model.embeddings...``        768 + 1280      SDXL
``conditioner.embedders.1.model.token_embedding``                       (CLIP-L + G)
``conditioner.embedders.0.model.token_embedding`` alone                 1280            SDXL
                                                                                        refiner
======================================================================  ==============  ========

(all ``.weight``; early SD 1.x files lack ``text_model.``). A file without a text encoder falls
back to the UNet's cross-attention width (``attn2.to_k`` input: 768 / 1024 / 2048 / 1280).
Families built on other backbones are named so the user learns *why* tireg cannot serve them:
SD3 (MMDiT ``joint_blocks``), Flux (``double_blocks`` with q/k norms), Stable Cascade, AuraFlow,
Hunyuan-DiT. Diffusers folders are recognised from ``model_index.json`` and the text encoders'
``config.json`` (``hidden_size``).

Only the safetensors header is read (never the tensors); ``.ckpt`` pickles go through the
restricted loader in :mod:`tireg.converters.torch_file`, which reads the pickle stream only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tireg.checkpoints.errors import CheckpointError
from tireg.files import open_regular, read_capped

SD1, SD2, SDXL, SDXL_REFINER = "sd1", "sd2", "sdxl", "sdxl_refiner"
SD3, FLUX, CASCADE, AURAFLOW, HUNYUAN_DIT, UNKNOWN = (
    "sd3",
    "flux",
    "cascade",
    "auraflow",
    "hunyuan_dit",
    "unknown",
)

#: a diffusers ``config.json`` or ``model_index.json`` is a few KB
MAX_CONFIG_BYTES = 1024 * 1024

#: families whose text encoders take SD textual-inversion embeddings (what tireg serves)
SUPPORTED_FAMILIES = frozenset({SD1, SD2, SDXL})

FAMILY_LABELS = {
    SD1: "SD 1.x",
    SD2: "SD 2.x",
    SDXL: "SDXL",
    SDXL_REFINER: "SDXL refiner",
    SD3: "SD3",
    FLUX: "Flux",
    CASCADE: "Stable Cascade",
    AURAFLOW: "AuraFlow",
    HUNYUAN_DIT: "Hunyuan-DiT",
    UNKNOWN: "unknown",
}

#: token-embedding keys: (key, encoder, expected width)
_SD1_KEYS = (
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    "cond_stage_model.transformer.embeddings.token_embedding.weight",  # early SD 1.x files
)
_SD2_KEY = "cond_stage_model.model.token_embedding.weight"
_SDXL_L_KEY = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
_SDXL_G_KEY = "conditioner.embedders.1.model.token_embedding.weight"
_REFINER_G_KEY = "conditioner.embedders.0.model.token_embedding.weight"

#: a key ending in one of these (after any prefix) marks a non-UNet backbone
_BACKBONE_MARKERS = (
    ("joint_blocks.0.context_block.attn.qkv.weight", SD3, "MMDiT joint_blocks"),
    ("double_blocks.0.img_attn.norm.key_norm.scale", FLUX, "Flux double_blocks"),
    ("clf.1.weight", CASCADE, "Stable Cascade classifier head"),
    ("double_layers.0.attn.w1q.weight", AURAFLOW, "AuraFlow double_layers"),
    ("mlp_t5.0.weight", HUNYUAN_DIT, "Hunyuan-DiT T5 projection"),
)

#: cross-attention context width of the UNet -> family (for files without a text encoder)
_CONTEXT_WIDTHS = {768: SD1, 1024: SD2, 2048: SDXL, 1280: SDXL_REFINER}

#: diffusers pipeline class name prefix -> family, for backbones tireg does not serve
_PIPELINE_FAMILIES = (
    ("StableDiffusion3", SD3),
    ("Flux", FLUX),
    ("StableCascade", CASCADE),
    ("AuraFlow", AURAFLOW),
    ("HunyuanDiT", HUNYUAN_DIT),
)


@dataclass(frozen=True)
class Detection:
    """A checkpoint's family and the fact that decided it."""

    family: str
    evidence: str
    widths: dict[str, int] = field(default_factory=dict)  # encoder -> token-embedding width
    layout: str = "single_file"  # single_file | diffusers

    @property
    def supported(self) -> bool:
        """True when SD textual-inversion embeddings apply to this family."""
        return self.family in SUPPORTED_FAMILIES

    @property
    def label(self) -> str:
        return FAMILY_LABELS.get(self.family, self.family)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "label": self.label,
            "supported": self.supported,
            "evidence": self.evidence,
            "widths": self.widths,
            "layout": self.layout,
        }


def _width(shape: Sequence[int] | None) -> int | None:
    return int(shape[-1]) if shape else None


def _ends_with(keys: Iterable[str], marker: str) -> bool:
    dotted = "." + marker
    return any(k == marker or k.endswith(dotted) for k in keys)


def family_from_shapes(shapes: Mapping[str, Sequence[int]]) -> Detection:
    """Decide the family of a single-file checkpoint from ``{tensor name: shape}``."""
    g = _width(shapes.get(_SDXL_G_KEY))
    l_xl = _width(shapes.get(_SDXL_L_KEY))
    if g is not None and l_xl is not None:
        widths = {"clip_l": l_xl, "clip_g": g}
        family = SDXL if (l_xl, g) == (768, 1280) else UNKNOWN
        return Detection(family, f"SDXL text encoders, widths {l_xl} + {g}", widths)
    refiner = _width(shapes.get(_REFINER_G_KEY))
    if refiner is not None:
        family = SDXL_REFINER if refiner == 1280 else UNKNOWN
        return Detection(
            family, f"single OpenCLIP-G text encoder, width {refiner}", {"clip_g": refiner}
        )
    h = _width(shapes.get(_SD2_KEY))
    if h is not None:
        family = SD2 if h == 1024 else UNKNOWN
        return Detection(family, f"OpenCLIP text encoder, width {h}", {"clip_h": h})
    for key in _SD1_KEYS:
        w = _width(shapes.get(key))
        if w is not None:
            family = SD1 if w == 768 else UNKNOWN
            return Detection(family, f"CLIP text encoder, width {w}", {"clip_l": w})
    for marker, family, what in _BACKBONE_MARKERS:
        if _ends_with(shapes, marker):
            return Detection(family, f"{what} ({FAMILY_LABELS[family]} backbone)")
    for key, shape in shapes.items():
        if key.endswith(".attn2.to_k.weight") and "diffusion_model" in key and len(shape) == 2:
            width = int(shape[1])
            family = _CONTEXT_WIDTHS.get(width, UNKNOWN)
            return Detection(family, f"no text encoder; UNet cross-attention width {width}")
    if any(k.startswith(("lora_unet_", "lora_te", "lora_")) for k in shapes):
        return Detection(UNKNOWN, "a LoRA, not a checkpoint")
    return Detection(UNKNOWN, "no text encoder or UNet tensors recognised")


def _safetensors_shapes(stream: BinaryIO) -> dict[str, Sequence[int]]:
    # imported here, like the pickle loader below: the converters bring numpy, which the
    # commands that only need this package's hashing or family names (tireg hash) never load
    from tireg.converters.safetensors_file import read_header

    stream.seek(0)
    header = read_header(stream, os.fstat(stream.fileno()).st_size)
    return {name: info.shape for name, info in header.tensors.items()}


def _flatten_shapes(obj: Any, prefix: str = "") -> dict[str, Sequence[int]]:
    """Tensor names and shapes from an unpickled state dict (tensors carry ``.shape``)."""
    out: dict[str, Sequence[int]] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            shape = getattr(value, "shape", None)
            if shape is not None and not isinstance(value, Mapping):
                out[name] = tuple(shape)
            elif isinstance(value, Mapping):
                out.update(_flatten_shapes(value, f"{name}."))
    return out


def _pickle_shapes(path: Path) -> dict[str, Sequence[int]]:
    from tireg.converters import torch_file  # the restricted loader; reads the pickle only

    loaded = torch_file.load_path(path, tensors="shape")
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    return _flatten_shapes(loaded)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(read_capped(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path.name} nests JSON too deeply", path=path) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path.name} ({exc})", path=path) from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path.name} is not a JSON object", path=path)
    return value


def _hidden_size(folder: Path, sub: str) -> int | None:
    config = folder / sub / "config.json"
    if not config.is_file():
        return None
    size = _read_json(config).get("hidden_size")
    return size if isinstance(size, int) else None


def detect_diffusers(folder: Path) -> Detection:
    """Family of a diffusers pipeline folder (``model_index.json`` + text encoder configs)."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise CheckpointError(
            "folder is not a diffusers pipeline (no model_index.json)",
            path=folder,
            hint="give a single-file checkpoint or a diffusers model folder",
        )
    pipeline = str(_read_json(index_file).get("_class_name", ""))
    for prefix, family in _PIPELINE_FAMILIES:
        if pipeline.startswith(prefix):
            return Detection(family, f"diffusers pipeline {pipeline}", layout="diffusers")
    te, te2 = _hidden_size(folder, "text_encoder"), _hidden_size(folder, "text_encoder_2")
    widths = {k: v for k, v in (("text_encoder", te), ("text_encoder_2", te2)) if v is not None}
    what = f"diffusers {pipeline or 'pipeline'}, text encoder widths {widths or 'missing'}"
    if te == 768 and te2 == 1280:
        family = SDXL
    elif te is None and te2 == 1280:
        family = SDXL_REFINER
    elif te2 is None and te in (768, 1024):
        family = SD1 if te == 768 else SD2
    else:
        family = UNKNOWN
    return Detection(family, what, widths, layout="diffusers")


def detect_family(path: str | os.PathLike[str]) -> Detection:
    """Family of a checkpoint: a ``.safetensors`` file (header only), a pickled ``.ckpt``
    (restricted loader, pickle stream only) or a diffusers folder.

    Example: ``detect_family("v1-5-pruned-emaonly.safetensors").family == "sd1"``."""
    from tireg.converters.errors import EmbeddingFileError

    target = Path(path)
    if target.is_dir():
        return detect_diffusers(target)
    if not target.is_file():
        raise CheckpointError("no such file or folder", path=target)
    try:
        with open_regular(target) as stream:
            magic = stream.read(9)
            if len(magic) == 9 and magic[8:9] == b"{":
                return family_from_shapes(_safetensors_shapes(stream))
        if magic[:2] == b"PK" or magic[:1] == b"\x80":
            shapes = _pickle_shapes(target)
        else:
            raise CheckpointError(
                "neither safetensors nor a torch pickle",
                path=target,
                hint="tireg reads .safetensors, .ckpt/.pt and diffusers folders",
            )
    except EmbeddingFileError as exc:
        raise CheckpointError(f"unreadable checkpoint: {exc.message}", path=target) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read ({exc.strerror or exc})", path=target) from exc
    return family_from_shapes(shapes)
