"""Tiny, offline diffusers pipelines for tests that need a real consumer of embedding files.

Nothing is downloaded: the CLIP BPE tokenizer is synthesised (byte-level vocabulary plus a few
merges) and written to a directory, and every model is built from a config with random weights.
Only the text encoders keep their real widths (768 for CLIP-L, 1024 for OpenCLIP-H, 768 + 1280 for
SDXL), because the width is what an embedding file must match; depth, heads and the MLP are cut
to the minimum so a whole pipeline builds in about a second on a CPU.

Usage (other test areas may reuse these builders)::

    pipe = build_sd_pipeline(tmp_dir, width=768)        # SD 1.x shape
    pipe = build_sd_pipeline(tmp_dir, width=1024)       # SD 2.x width
    pipe = build_sdxl_pipeline(tmp_dir)                 # text_encoder 768 + text_encoder_2 1280
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: a handful of merges so the tokenizer really does BPE (words outside them split into bytes)
_MERGES = ("a t", "c a", "ca t</w>", "d o", "do g</w>", "p h", "ph o", "pho t", "phot o</w>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def write_clip_tokenizer(directory: Path) -> Path:
    """Write a small but genuine CLIP BPE tokenizer (vocab.json + merges.txt) to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8"
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8"
    )
    return directory


def load_clip_tokenizer(directory: Path) -> Any:
    """A fresh CLIPTokenizer from a directory written by :func:`write_clip_tokenizer`."""
    from transformers import CLIPTokenizer

    if not (directory / "vocab.json").exists():
        write_clip_tokenizer(directory)
    return CLIPTokenizer.from_pretrained(str(directory))


def _text_config(width: int, vocab_size: int, projection_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )


def _scheduler() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=10, steps_offset=1, clip_sample=False)


def build_sd_pipeline(directory: Path, *, width: int = 768) -> Any:
    """A tiny StableDiffusionPipeline whose text encoder has token width ``width``."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tokenizer = load_clip_tokenizer(directory / "tokenizer")
    text_encoder = CLIPTextModel(_text_config(width, len(tokenizer)))
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl_pipeline(directory: Path) -> Any:
    """A tiny SDXL pipeline: text_encoder (768) + text_encoder_2 with projection (1280)."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tokenizer = load_clip_tokenizer(directory / "tokenizer")
    tokenizer_2 = load_clip_tokenizer(directory / "tokenizer_2")
    projection_dim = 32
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=768 + 1280,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * time_embed_dim + projection_dim,
        norm_num_groups=8,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(768, len(tokenizer))),
        text_encoder_2=CLIPTextModelWithProjection(
            _text_config(1280, len(tokenizer_2), projection_dim)
        ),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
    )


def token_rows(tokenizer: Any, text_encoder: Any, token: str, count: int) -> Any:
    """The embedding-table rows diffusers installed for ``token`` (``token``, ``token_1``, ...)."""
    names = [token] + [f"{token}_{i}" for i in range(1, count)]
    ids = tokenizer.convert_tokens_to_ids(names)
    weight = text_encoder.get_input_embeddings().weight.detach()
    return weight[ids].cpu().numpy()
