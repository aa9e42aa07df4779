"""The parts of a loaded pipeline that training uses, frozen, on one device, in one dtype.

Built from any diffusers Stable Diffusion or SDXL pipeline (the one
:func:`tireg.pipelines.loading.load_model` returns, or one built in a test). Everything is frozen
with ``requires_grad_(False)``: no weight of the UNet, the VAE or the text encoders ever gets a
gradient, so the backward pass only carries activations' gradients back to the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

SD1, SD2, SDXL = "sd1", "sd2", "sdxl"


@dataclass
class TrainModel:
    """A pipeline's components, ready to train vectors against."""

    family: str
    unet: Any
    vae: Any
    noise_scheduler: Any  # a DDPMScheduler with the pipeline's training betas
    encoders: list[tuple[str, Any, Any]]  # (encoder key, tokenizer, text encoder)
    prediction_type: str  # epsilon | v_prediction
    name: str = "model"
    hashes: dict[str, str | None] = field(default_factory=dict)  # sha256, autov2, old_hash

    @property
    def latent_scale(self) -> int:
        """Pixels per latent cell (8 for every real SD VAE)."""
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def from_pipeline(
    pipe: Any,
    *,
    prediction_type: str | None = None,
    name: str = "model",
    hashes: dict[str, str | None] | None = None,
) -> TrainModel:
    """Take a pipeline's components for training; nothing is copied.

    The training noise scheduler is a ``DDPMScheduler`` from the pipeline's scheduler config,
    as the diffusers recipe loads one from the model folder; ``prediction_type`` overrides the
    config's (SD 2.x 768 checkpoints are v-prediction, which a single file does not always say).
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    kind = prediction_type or scheduler.config.get("prediction_type", "epsilon")
    encoder_2 = getattr(pipe, "text_encoder_2", None)
    if encoder_2 is not None:
        encoders = [
            ("clip_l", pipe.tokenizer, pipe.text_encoder),
            ("clip_g", pipe.tokenizer_2, encoder_2),
        ]
        family = SDXL
    else:
        width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
        family = SD2 if width == 1024 else SD1
        encoders = [("clip_h" if family == SD2 else "clip_l", pipe.tokenizer, pipe.text_encoder)]
    for module in (pipe.unet, pipe.vae, *(e for _, _, e in encoders)):
        module.requires_grad_(False)
        module.eval()
    return TrainModel(
        family=family,
        unet=pipe.unet,
        vae=pipe.vae,
        noise_scheduler=scheduler,
        encoders=encoders,
        prediction_type=kind,
        name=name,
        hashes=dict(hashes or {}),
    )
