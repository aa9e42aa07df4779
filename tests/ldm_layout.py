"""Write a diffusers pipeline as the single-file checkpoint people download (original LDM layout).

Why: every single-file loading test needs a realistic ``.safetensors``/``.ckpt`` without a
download. This helper inverts diffusers' documented name mapping (baselines.md §2; the direction
diffusers -> LDM is diffusers' ``scripts/convert_diffusers_to_original_stable_diffusion.py``,
``convert_unet_state_dict``/``convert_vae_state_dict``/``convert_text_enc_state_dict_v20``, and
``scripts/convert_diffusers_to_original_sdxl.py``; the reverse is ``loaders/single_file_utils.py``,
``convert_ldm_unet_checkpoint``/``convert_ldm_vae_checkpoint``/``convert_open_clip_checkpoint``).
It is written from those facts for any block count, so tiny test UNets and the full-size ones go
through the same code:

* UNet under ``model.diffusion_model.``: with ``L`` = ``layers_per_block``, down block ``i`` layer
  ``j`` is ``input_blocks.{1 + i(L+1) + j}`` (``.0`` resnet, ``.1`` attention), its downsampler
  ``input_blocks.{(i+1)(L+1)}.0.op``; up block ``i`` layer ``j`` (``L+1`` of them) is
  ``output_blocks.{i(L+1) + j}``, its upsampler ``output_blocks.{i(L+1) + L}.{2 if the block has
  attention else 1}``; ``middle_block.0/1/2``; resnet parts ``in_layers.0/2``, ``emb_layers.1``,
  ``out_layers.0/3``, ``skip_connection``; ``time_embed.0/2``, SDXL ``label_emb.0.0/2``,
  ``input_blocks.0.0`` (conv_in), ``out.0/2``. Transformer blocks keep their names.
* VAE under ``first_stage_model.``: ``down.i.block.j``/``downsample``, decoder ``up.{n-1-i}``
  (reversed), ``mid.block_1/2``, ``mid.attn_1`` with ``norm``/``q``/``k``/``v``/``proj_out`` as
  1x1 convolutions, ``nin_shortcut``, ``norm_out``.
* CLIP-L (SD 1.x, SDXL's first encoder): Hugging Face names with the ``text_model.`` prefix
  (transformers >= 5.6 saves ``CLIPTextModel`` without it; real files have it).
* OpenCLIP (SD 2.x, SDXL's second encoder): ``token_embedding``, ``positional_embedding``,
  ``transformer.resblocks.N`` with ``ln_1``/``ln_2``, ``attn.in_proj_*`` (q, k, v stacked),
  ``attn.out_proj``, ``mlp.c_fc``/``c_proj``, ``ln_final`` and ``text_projection`` (transposed).
* What else SD 1.x/2.x files carry and loaders must skip: the LDM ``LatentDiffusion`` noise
  schedule buffers (``betas``, ``alphas_cumprod``, ... from ldm ``DDPM.register_schedule``, 1000
  ``scaled_linear`` steps) and SD 1.x's ``embeddings.position_ids``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
SDXL_TEXT_L = "conditioner.embedders.0.transformer."
SDXL_TEXT_G = "conditioner.embedders.1.model."

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_head(rest: str, table: dict[str, str]) -> str:
    """Replace the leading module name of ``rest`` (``conv1.weight``) through ``table``."""
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def unet_to_ldm(unet: Any) -> dict[str, Any]:
    """The UNet's tensors under their LDM names (without the ``model.diffusion_model.`` prefix)."""
    cfg = unet.config
    per = cfg.layers_per_block + 1
    up_attn = ["CrossAttn" in t for t in cfg.up_block_types]
    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (
            r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda m: (
                f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.0." + _rename_head(m[3], _RESNET)
            ),
        ),
        (
            r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
            lambda m: f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}",
        ),
        (
            r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)",
            lambda m: f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}",
        ),
        (
            r"mid_block\.resnets\.(\d+)\.(.*)",
            lambda m: f"middle_block.{2 * int(m[1])}." + _rename_head(m[2], _RESNET),
        ),
        (r"mid_block\.attentions\.0\.(.*)", lambda m: f"middle_block.1.{m[1]}"),
        (
            r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda m: (
                f"output_blocks.{int(m[1]) * per + int(m[2])}.0." + _rename_head(m[3], _RESNET)
            ),
        ),
        (
            r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
            lambda m: f"output_blocks.{int(m[1]) * per + int(m[2])}.1.{m[3]}",
        ),
        (
            r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)",
            lambda m: (
                f"output_blocks.{int(m[1]) * per + per - 1}.{2 if up_attn[int(m[1])] else 1}.{m[2]}"
            ),
        ),
    ]
    out = {}
    for key, tensor in unet.state_dict().items():
        for pattern, rename in rules:
            match = re.fullmatch(pattern, key)
            if match:
                out[rename(match)] = tensor
                break
        else:
            renamed = _rename_head(key, _UNET_FIXED)
            assert renamed != key, f"no LDM name for UNet tensor {key}"
            out[renamed] = tensor
    return out


def vae_to_ldm(vae: Any) -> dict[str, Any]:
    """The VAE's tensors under their LDM names (without the ``first_stage_model.`` prefix)."""
    last = len(vae.config.block_out_channels) - 1
    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (
            r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda m: f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}",
        ),
        (
            r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)",
            lambda m: f"encoder.down.{m[1]}.downsample.{m[2]}",
        ),
        (
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda m: f"decoder.up.{last - int(m[1])}.block.{m[2]}.{m[3]}",
        ),
        (
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)",
            lambda m: f"decoder.up.{last - int(m[1])}.upsample.{m[2]}",
        ),
        (
            r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)",
            lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}",
        ),
        (
            r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)",
            lambda m: f"{m[1]}.mid.attn_1." + _rename_head(m[2], _VAE_ATTN),
        ),
        (r"(encoder|decoder)\.conv_norm_out\.(.*)", lambda m: f"{m[1]}.norm_out.{m[2]}"),
    ]
    out = {}
    for key, tensor in vae.state_dict().items():
        name = key
        for pattern, rename in rules:
            match = re.fullmatch(pattern, key)
            if match:
                name = rename(match).replace(".conv_shortcut.", ".nin_shortcut.")
                break
        if ".mid.attn_1." in name and name.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # linear -> 1x1 convolution
        out[name] = tensor
    return out


def _hf_text(encoder: Any) -> dict[str, Any]:
    """A CLIP text model's tensors with the ``text_model.`` prefix real files carry."""
    out = {}
    for key, tensor in encoder.state_dict().items():
        if key.startswith("text_model.") or key == "text_projection.weight":
            out[key] = tensor
        else:
            out["text_model." + key] = tensor
    return out


def clip_to_ldm(encoder: Any) -> dict[str, Any]:
    """OpenAI CLIP-L in the LDM file: Hugging Face names (``text_model.`` prefix included)."""
    return {k: v for k, v in _hf_text(encoder).items() if k != "text_projection.weight"}


def open_clip_to_ldm(encoder: Any) -> dict[str, Any]:
    """A CLIP text model under OpenCLIP's names (SD 2.x, SDXL's bigG)."""
    import torch

    parts = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "self_attn.out_proj": "attn.out_proj",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    top = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    source = _hf_text(encoder)
    out: dict[str, Any] = {}
    qkv: dict[str, dict[str, Any]] = {}
    for key, tensor in source.items():
        if key in top:
            out[top[key]] = tensor
        elif key == "text_projection.weight":
            out["text_projection"] = tensor.T.contiguous()
        elif match := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key):
            block, rest = f"transformer.resblocks.{match[1]}.", match[2]
            if qkv_match := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                qkv.setdefault(f"{block}attn.in_proj_{qkv_match[2]}", {})[qkv_match[1]] = tensor
            elif not key.endswith("position_ids"):
                out[block + _rename_head(rest, parts)] = tensor
    for name, pieces in qkv.items():
        out[name] = torch.cat([pieces["q"], pieces["k"], pieces["v"]])
    return out


def _prefixed(prefix: str, tensors: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in tensors.items()}


def schedule_buffers(steps: int = 1000) -> dict[str, Any]:
    """The noise-schedule buffers an SD 1.x/2.x ``LatentDiffusion`` checkpoint stores (float32)."""
    import torch

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, steps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    variance = betas * (1.0 - prev) / (1.0 - cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cumprod),
    }
    return {name: value.float() for name, value in buffers.items()}


def ldm_state_dict(pipe: Any, family: str) -> dict[str, Any]:
    """The whole pipeline as one LDM/SGM state dict (``family``: sd1, sd2 or sdxl)."""
    import torch

    state = _prefixed("model.diffusion_model.", unet_to_ldm(pipe.unet))
    state.update(_prefixed("first_stage_model.", vae_to_ldm(pipe.vae)))
    if family in ("sd1", "sd2"):
        state.update(schedule_buffers())
    if family == "sd1":
        state.update(_prefixed(SD1_TEXT, clip_to_ldm(pipe.text_encoder)))
        positions = pipe.text_encoder.config.max_position_embeddings
        state[SD1_TEXT + "text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    elif family == "sd2":
        state.update(_prefixed(SD2_TEXT, open_clip_to_ldm(pipe.text_encoder)))
    else:
        state.update(_prefixed(SDXL_TEXT_L, clip_to_ldm(pipe.text_encoder)))
        state.update(_prefixed(SDXL_TEXT_G, open_clip_to_ldm(pipe.text_encoder_2)))
    return state


def write_single_file(pipe: Any, family: str, path: Path, *, dtype: Any = None) -> Path:
    """Write ``pipe`` as a single file: ``.safetensors``, or a ``.ckpt`` as ``torch.save`` writes
    Lightning checkpoints (``{"state_dict": ..., "global_step": ...}``). ``dtype`` casts floats."""
    import torch
    from safetensors.torch import save_file

    state = {}
    for key, tensor in ldm_state_dict(pipe, family).items():
        cast = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        state[key] = cast.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 0, "epoch": 0}, path)
    return path


def write_config_folder(pipe: Any, folder: Path, class_name: str) -> Path:
    """A diffusers-layout config folder for ``pipe`` (the JSON only, as tireg ships them), so a
    tiny test pipeline can be loaded from a single file the way a full-size one is."""
    components = {"unet": pipe.unet, "vae": pipe.vae, "scheduler": pipe.scheduler}
    index: dict[str, Any] = {"_class_name": class_name}
    for name in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is not None:
            encoder.config.save_pretrained(str(folder / name))
            index[name] = ["transformers", type(encoder).__name__]
            tokenizer = "tokenizer" + name.removeprefix("text_encoder")
            index[tokenizer] = ["transformers", "CLIPTokenizer"]
    for name, component in components.items():
        component.save_config(str(folder / name))
        index[name] = ["diffusers", type(component).__name__]
    if class_name == "StableDiffusionPipeline":
        index.update(
            safety_checker=[None, None],
            feature_extractor=[None, None],
            requires_safety_checker=False,
        )
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder
