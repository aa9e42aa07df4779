"""InvokeAI's rules for registering and loading an embedding file, reproduced from its source.

Upstream (invoke-ai/InvokeAI):

* ``invokeai/backend/model_manager/configs/textual_inversion.py`` ``TI_Config_Base``:
  ``_file_looks_like_embedding`` (named ``learned_embeds.*``, or a key ``string_to_param``,
  ``emb_params`` or ``clip_g``, or fewer than 10 entries all tensors) and ``_get_base_or_raise``
  (the token width: ``string_to_param``'s first value ``shape[-1]`` when ``string_to_token`` is
  there, ``emb_params``/``clip_g`` ``shape[-1]``, else the first value's ``shape[0]``; 768 is
  SD 1, 1024 SD 2, 1280 SDXL, anything else is no match);
* ``invokeai/backend/model_manager/model_on_disk.py`` ``ModelOnDisk``: the model's name is the
  file stem; ``load_state_dict`` reads safetensors with ``load_file`` and pickles with
  ``torch.load`` (``weights_only`` by default on torch >= 2.6; picklescan runs first, which the
  weights-only loader here makes moot), then takes ``state_dict`` if the dict has one;
* ``invokeai/backend/textual_inversion.py`` ``TextualInversionModelRaw.from_checkpoint``: the
  layouts, SDXL as ``embedding = clip_g``, ``embedding_2 = clip_l``, a 1-D diffusers tensor
  unsqueezed;
* ``invokeai/app/util/ti_utils.py`` ``extract_ti_triggers_from_prompt``: the triggers in a
  prompt are ``<[a-zA-Z0-9., _-]+>``, each looked up by model name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

TRIGGER = re.compile(r"<[a-zA-Z0-9., _-]+>")
BASES = {768: "sd-1", 1024: "sd-2", 1280: "sdxl"}


class NotAMatch(Exception):
    """InvokeAI's probe would not register the file as an embedding of any base."""


def load_state_dict(path: Path) -> dict[str, Any]:
    """``ModelOnDisk.load_state_dict``."""
    if path.suffix == ".safetensors":
        checkpoint = safetensors.torch.load_file(path)
    elif path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(checkpoint, dict)
    else:
        raise NotAMatch(f"Unrecognized model extension: {path.suffix}")
    return dict(checkpoint.get("state_dict", checkpoint))


def probe(path: Path) -> tuple[str, str]:
    """The ``(name, base)`` InvokeAI registers the file under, or :class:`NotAMatch`."""
    state = load_state_dict(path)
    looks = (
        path.name in (f"learned_embeds.{s}" for s in ("safetensors", "bin", "pt", "ckpt"))
        or any(k in {"string_to_param", "emb_params", "clip_g"} for k in state)
        or (len(state) < 10 and all(isinstance(v, torch.Tensor) for v in state.values()))
    )
    if not looks:
        raise NotAMatch("model does not look like a textual inversion embedding file")
    if "string_to_token" in state:
        width = next(iter(state["string_to_param"].values())).shape[-1]
    elif "emb_params" in state:
        width = state["emb_params"].shape[-1]
    elif "clip_g" in state:
        width = state["clip_g"].shape[-1]
    else:
        width = next(iter(state.values())).shape[0]
    if width not in BASES:
        raise NotAMatch(f"unrecognized token dimension {width}")
    return path.stem, BASES[width]


def from_checkpoint(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``TextualInversionModelRaw.from_checkpoint``: ``(embedding, embedding_2)``."""
    if path.suffix == ".safetensors":
        state: Any = safetensors.torch.load_file(path.absolute().as_posix(), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if "string_to_param" in state:
        return next(iter(state["string_to_param"].values())), None
    if "emb_params" in state:
        return state["emb_params"], None
    if "clip_g" in state and "clip_l" in state:
        return state["clip_g"], state["clip_l"]
    embedding = next(iter(state.values()))
    if len(embedding.shape) == 1:
        embedding = embedding.unsqueeze(0)
    return embedding, None


def vectors_for(path: Path, width: int) -> torch.Tensor:
    """The ``[n, width]`` rows a text encoder of ``width`` gets: ``ModelPatcher.apply_ti``
    (``invokeai/backend/model_patcher.py``, ``_get_ti_embedding``) takes ``embedding_2`` when its
    width is the encoder's, else ``embedding``, and refuses a row of another width."""
    embedding, embedding_2 = from_checkpoint(path)
    chosen = embedding_2 if embedding_2 is not None and embedding_2.shape[1] == width else embedding
    if chosen.shape[-1] != width:
        raise NotAMatch(f"trained on a model with token dimension {chosen.shape[-1]}, not {width}")
    return chosen


def triggers(prompt: str) -> list[str]:
    """``extract_ti_triggers_from_prompt``: the model names a prompt asks for."""
    return [found[1:-1] for found in TRIGGER.findall(prompt)]
