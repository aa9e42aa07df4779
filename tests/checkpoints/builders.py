"""Small single-file checkpoints with the real key names of each family, for detection tests.

Every tensor is tiny except where a test asks for padding: detection reads the token-embedding
*width* (the last dimension), so 16 rows of the real width stand in for the 49,408-row table.
``padding`` adds an incompressible tensor so the file passes 1 MiB and gets a meaningful
A1111 old hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tireg.converters.safetensors_file import dumps

ROWS = 16

SD1_TOKEN = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2_TOKEN = "cond_stage_model.model.token_embedding.weight"
SDXL_L_TOKEN = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
SDXL_G_TOKEN = "conditioner.embedders.1.model.token_embedding.weight"
REFINER_G_TOKEN = "conditioner.embedders.0.model.token_embedding.weight"
UNET_TO_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


def _w(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float16)


def family_tensors(family: str) -> dict[str, np.ndarray]:
    """Tensors named as the original release of ``family`` names them."""
    common = {
        "first_stage_model.decoder.conv_in.weight": _w(4, 4, 3, 3),
        "model.diffusion_model.input_blocks.0.0.weight": _w(8, 4, 3, 3),
    }
    if family == "sd1":
        return {
            **common,
            SD1_TOKEN: _w(ROWS, 768),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": _w(768),
            UNET_TO_K: _w(8, 768),
        }
    if family == "sd1_early":  # keys without "text_model." (early SD 1.x files)
        return {
            **common,
            "cond_stage_model.transformer.embeddings.token_embedding.weight": _w(ROWS, 768),
        }
    if family == "sd2":
        return {
            **common,
            SD2_TOKEN: _w(ROWS, 1024),
            "cond_stage_model.model.ln_final.weight": _w(1024),
            UNET_TO_K: _w(8, 1024),
        }
    if family == "sdxl":
        return {
            **common,
            SDXL_L_TOKEN: _w(ROWS, 768),
            SDXL_G_TOKEN: _w(ROWS, 1280),
            "conditioner.embedders.1.model.text_projection": _w(1280, 1280),
            "model.diffusion_model.label_emb.0.0.weight": _w(8, 2816),
        }
    if family == "sdxl_refiner":
        return {**common, REFINER_G_TOKEN: _w(ROWS, 1280)}
    if family == "sdxl_unet_only":
        return {
            **common,
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": _w(
                8, 2048
            ),
        }
    if family == "sd3":
        return {
            "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": _w(12, 4),
            "model.diffusion_model.x_embedder.proj.weight": _w(4, 16, 2, 2),
            "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight": _w(
                ROWS, 768
            ),
            "text_encoders.clip_g.transformer.text_model.embeddings.token_embedding.weight": _w(
                ROWS, 1280
            ),
        }
    if family == "flux":  # the BFL release has no prefix
        return {
            "double_blocks.0.img_attn.norm.key_norm.scale": _w(128),
            "single_blocks.0.linear1.weight": _w(4, 4),
        }
    if family == "lora":
        return {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": _w(4, 8)}
    raise ValueError(family)


def write_checkpoint(path: Path, family: str, *, padding: int = 0, seed: int = 0) -> Path:
    """Write a safetensors checkpoint of ``family``; ``padding`` random bytes make it big."""
    tensors = family_tensors(family)
    if padding:
        rng = np.random.default_rng(seed)
        tensors["zz_padding"] = rng.integers(0, 256, size=padding, dtype=np.uint8)
    path.write_bytes(dumps(tensors, {"format": "pt"}))
    return path


def write_ckpt(path: Path, family: str, *, padding: int = 0, seed: int = 0) -> Path:
    """The same tensors as a torch ``.ckpt`` (``{"state_dict": ...}``, as SD releases are)."""
    import torch

    state = {k: torch.from_numpy(v.copy()) for k, v in family_tensors(family).items()}
    if padding:
        gen = torch.Generator().manual_seed(seed)
        state["zz_padding"] = torch.randint(0, 256, (padding,), dtype=torch.uint8, generator=gen)
    torch.save({"state_dict": state, "global_step": 470000}, path)
    return path
