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


#: what torch's allocators say when they fail without raising ``torch.OutOfMemoryError``: the
#: CPU allocator (``c10/core/impl/alloc_cpu.cpp``: a plain RuntimeError) and Apple's MPS
_OUT_OF_MEMORY_MESSAGES = (
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",  # the same allocator on Windows
    "MPS backend out of memory",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for every form running out of memory takes under torch 2.x, in one place.

    CUDA raises ``torch.OutOfMemoryError``; the CPU allocator a plain ``RuntimeError``
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"), so the
    type alone cannot tell it from a bug; numpy and Python a ``MemoryError``. Call it only
    where torch is already imported."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OUT_OF_MEMORY_MESSAGES)
