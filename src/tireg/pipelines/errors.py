"""Errors raised while loading a checkpoint into a diffusers pipeline."""

from __future__ import annotations

from tireg.errors import TiregError


class PipelineError(TiregError):
    """A checkpoint could not be loaded into a pipeline: missing, unreadable or inconsistent."""


class UnsupportedModelError(PipelineError):
    """The checkpoint is not a model tireg renders with: a LoRA, SD3, Flux, a refiner, ..."""


class TokenizerVocabularyError(PipelineError):
    """No installed package ships the CLIP BPE vocabulary (or its copy is not the known file)."""
