"""Checkpoints (models): their hashes, their family, and the table of well-known ones.

The public API:

* :func:`hash_file` — every hash (SHA-256, AutoV2, A1111 old hash, CRC32, BLAKE3, addnet) from
  one read of the file; :class:`FileHashes` holds them.
* :func:`file_hashes` / :class:`HashCache` — the same, cached by path, size, mtime and inode.
* :func:`detect_family` — SD 1.x / SD 2.x / SDXL (or a family tireg cannot serve) from a
  safetensors header, a ``.ckpt`` pickle (never executed) or a diffusers folder.
* :func:`lookup_hash` / :func:`lookup_name` / :func:`hash_match` — the shipped table of known
  checkpoints and the rule for matching an A1111 or Civitai hash to a model.
* :func:`describe_embedding` — what ``tireg inspect`` shows: an embedding file's facts, with the
  known model its trained-on hash names.

This package imports nothing of tireg's but the converters (for the safetensors header and the
restricted pickle loader), config and errors; it never touches the catalogue.
"""

from tireg.checkpoints.detect import (
    FAMILY_LABELS,
    SUPPORTED_FAMILIES,
    Detection,
    detect_family,
    family_from_shapes,
)
from tireg.checkpoints.errors import CheckpointError
from tireg.checkpoints.hash_cache import HashCache, HashResult, file_hashes
from tireg.checkpoints.hashing import FileHashes, hash_file
from tireg.checkpoints.known_models import (
    KnownModel,
    ModelMatch,
    describe_embedding,
    hash_match,
    known_models,
    lookup_hash,
    lookup_name,
    normalise_hash,
)

__all__ = [
    "FAMILY_LABELS",
    "SUPPORTED_FAMILIES",
    "CheckpointError",
    "Detection",
    "FileHashes",
    "HashCache",
    "HashResult",
    "KnownModel",
    "ModelMatch",
    "describe_embedding",
    "detect_family",
    "family_from_shapes",
    "file_hashes",
    "hash_file",
    "hash_match",
    "known_models",
    "lookup_hash",
    "lookup_name",
    "normalise_hash",
]
