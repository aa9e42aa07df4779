"""tireg's internal format: one safetensors file per embedding.

Spec (schema version 1):

* tensors: one float32 ``[n, width]`` tensor per encoder, keyed by encoder (``clip_l``, ``clip_g``,
  ``clip_h`` or ``emb``);
* ``__metadata__`` (strings only): ``tireg.schema`` = ``"1"``, ``tireg.name``, and when known
  ``tireg.step`` (decimal), ``tireg.trained_on.hash``, ``tireg.trained_on.name``,
  ``tireg.source.format``, ``tireg.source.sha256``, plus ``tireg.extra.<key>`` for free-form extras;
* ``tireg.vector_rank`` = ``"1"`` when the source held its one vector as a 1-D ``[width]`` tensor
  (:attr:`Embedding.flat`; the tensor here is ``[1, width]`` all the same). Added within schema 1:
  a reader that does not know the key reads the same vectors and only loses the rank, which is
  why it needs no schema bump, and files without it keep their exact bytes;
* bytes laid out by :func:`tireg.converters.safetensors_file.dumps`, which is deterministic, so the
  same embedding always gives the same file and its sha256 is a content identity.

A file with a ``tireg.schema`` newer than this module understands is refused, not misread.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tireg.converters import limits, safetensors_file
from tireg.converters.embedding import Embedding
from tireg.converters.errors import EmbeddingFileError

SCHEMA_VERSION = 1
FORMAT_NAME = "tireg"
_PREFIX = "tireg."
_EXTRA = "tireg.extra."
_RANK = "tireg.vector_rank"


def dumps(embedding: Embedding) -> bytes:
    """The internal-format bytes of ``embedding``."""
    meta: dict[str, str] = {"tireg.schema": str(SCHEMA_VERSION), "tireg.name": embedding.name}
    optional = {
        "tireg.step": None if embedding.step is None else str(embedding.step),
        "tireg.trained_on.hash": embedding.trained_on_hash,
        "tireg.trained_on.name": embedding.trained_on_name,
        "tireg.source.format": embedding.source_format,
        "tireg.source.sha256": embedding.source_sha256,
    }
    meta.update({k: v for k, v in optional.items() if v is not None})
    meta.update({_EXTRA + k: v for k, v in embedding.extras.items()})
    if embedding.flat:
        meta[_RANK] = "1"
    return safetensors_file.dumps(embedding.vectors, meta)


def is_internal(metadata: dict[str, str]) -> bool:
    """Whether a safetensors file's metadata marks it as tireg's internal format."""
    return "tireg.schema" in metadata


def from_parts(tensors: Mapping[str, np.ndarray], metadata: dict[str, str]) -> Embedding:
    """Build the embedding from a parsed internal-format file."""
    text = metadata["tireg.schema"]
    # plain ASCII digits only: int() would also take " 1", "+1", "1_0" and non-Latin digits
    if not (text.isascii() and text.isdigit()):
        raise EmbeddingFileError(f"tireg.schema is not a number ({text!r})")
    schema = int(text)
    if schema > SCHEMA_VERSION:
        raise EmbeddingFileError(
            f"written by a newer tireg (schema {schema}, this one reads {SCHEMA_VERSION})",
            hint="upgrade tireg",
        )
    step = metadata.get("tireg.step")
    rank = metadata.get(_RANK, "2")
    if rank not in ("1", "2"):
        raise EmbeddingFileError(f"{_RANK} is not 1 or 2 ({rank!r})")
    # checked before Embedding widens them to float32: a 15,000,000-wide clip_l is refused unread
    vectors = {key: limits.matrix(arr, f"tensor {key!r}") for key, arr in tensors.items()}
    try:
        return Embedding(
            name=metadata.get("tireg.name", ""),
            vectors=vectors,
            step=None if step is None else limits.step_from_text(step, "tireg.step"),
            trained_on_hash=metadata.get("tireg.trained_on.hash"),
            trained_on_name=metadata.get("tireg.trained_on.name"),
            source_format=metadata.get("tireg.source.format"),
            source_sha256=metadata.get("tireg.source.sha256"),
            extras={k[len(_EXTRA) :]: v for k, v in metadata.items() if k.startswith(_EXTRA)},
            flat=rank == "1",
        )
    except ValueError as exc:
        raise EmbeddingFileError(f"invalid internal-format file: {exc}") from exc


def loads(data: bytes) -> Embedding:
    """Read internal-format bytes."""
    tensors, metadata = safetensors_file.loads(data)
    if not is_internal(metadata):
        raise EmbeddingFileError("not a tireg internal-format file (no tireg.schema metadata)")
    return from_parts(tensors, metadata)
