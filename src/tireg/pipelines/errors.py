"""Errors raised while loading a checkpoint, applying embeddings, parsing prompts, choosing
samplers and rendering."""

from __future__ import annotations

from tireg.errors import TiregError


class PipelineError(TiregError):
    """A checkpoint could not be loaded into a pipeline: missing, unreadable or inconsistent."""


class UnsupportedModelError(PipelineError):
    """The checkpoint is not a model tireg renders with: a LoRA, SD3, Flux, a refiner, ..."""


class TokenizerVocabularyError(PipelineError):
    """No installed package ships the CLIP BPE vocabulary (or its copy is not the known file)."""


class EmbeddingMismatchError(TiregError):
    """An embedding's vectors have no text encoder of their width on this pipeline."""


class SamplerError(TiregError):
    """An unknown or unsupported A1111 sampler name or schedule type."""


class RenderError(TiregError):
    """Settings a render cannot run with (size, seeds, memory)."""


class PromptError(TiregError):
    """A prompt or prompt setting A1111's syntax cannot read."""
