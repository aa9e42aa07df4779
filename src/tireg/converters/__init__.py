"""Every textual-inversion file format in and out, without ever executing a pickle.

The public API (everything else in this package is an implementation detail):

* :class:`Embedding` — the one internal value; :class:`Family` — SD 1.x / SD 2.x / SDXL / unknown.
* :func:`read_file` — read any supported file, choosing the reader by content, not extension.
* :func:`read_sdxl_pair` — the diffusers SDXL pair (``learned_embeds`` + ``learned_embeds_2``).
* :func:`write_file` — write an embedding in one of :data:`WRITE_FORMATS`, atomically;
  :func:`encode` gives the bytes instead, :data:`CARRIES` says what each format keeps.
* :func:`convert` — files to a format (``tireg convert``); :func:`describe` — ``tireg inspect``.
* :func:`read_file_detailed` / :func:`read_bytes_detailed` — also report container, layout,
  stored dtypes and the safety verdict; :class:`NonFiniteVectorsWarning` flags NaN/Inf vectors.
* :data:`MAX_READ_MEMORY` — the most memory reading one file can take.

This package imports nothing of tireg's but :mod:`tireg.errors` and :mod:`tireg.files`, and never
imports torch.
"""

from tireg.converters.embedding import CLIP_G, CLIP_H, CLIP_L, UNKNOWN_ENCODER, Embedding, Family
from tireg.converters.errors import (
    EmbeddingFileError,
    NotAnEmbeddingError,
    UnsafePickleError,
    UnsupportedConversionError,
)
from tireg.converters.inspection import describe
from tireg.converters.reading import (
    MAX_READ_MEMORY,
    NonFiniteVectorsWarning,
    ReadResult,
    read_bytes,
    read_bytes_detailed,
    read_file,
    read_file_detailed,
    read_sdxl_pair,
)
from tireg.converters.writing import (
    CARRIES,
    WRITE_FORMATS,
    ConvertReport,
    OutputExistsError,
    OutputWriteError,
    convert,
    encode,
    kept_by,
    write_file,
)

__all__ = [
    "CARRIES",
    "CLIP_G",
    "CLIP_H",
    "CLIP_L",
    "MAX_READ_MEMORY",
    "UNKNOWN_ENCODER",
    "WRITE_FORMATS",
    "ConvertReport",
    "Embedding",
    "EmbeddingFileError",
    "Family",
    "NonFiniteVectorsWarning",
    "NotAnEmbeddingError",
    "OutputExistsError",
    "OutputWriteError",
    "ReadResult",
    "UnsafePickleError",
    "UnsupportedConversionError",
    "convert",
    "describe",
    "encode",
    "kept_by",
    "read_bytes",
    "read_bytes_detailed",
    "read_file",
    "read_file_detailed",
    "read_sdxl_pair",
    "write_file",
]
