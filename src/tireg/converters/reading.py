"""Read any embedding file, choosing the reader by content (magic bytes), never by extension.

Files arrive renamed (``.pt`` that is really safetensors, ``.bin`` pickles, cards saved as
``.webp``), so the first bytes decide:

==================================  =============================================================
first bytes                         reader
==================================  =============================================================
8-byte length, then ``{``           safetensors (tireg's internal format, or a layout of
                                    :mod:`tireg.converters.layouts`)
``PK\\x03\\x04``                      torch zip file, through the allow-list unpickler
``\\x80`` (pickle protocol)          legacy torch pickle, through the same unpickler
PNG / WebP / other picture magic    A1111 image embedding (:mod:`tireg.converters.a1111_png`)
==================================  =============================================================

Every failure is an :class:`EmbeddingFileError` that says what the file turned out to be.
Vectors holding NaN or Inf still load (the user may want to inspect or delete them), with a
:class:`NonFiniteVectorsWarning`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tireg.converters import a1111_png, internal, layouts, limits, pickle_safe, safetensors_file
from tireg.converters.embedding import CLIP_G, CLIP_L, Embedding
from tireg.converters.errors import EmbeddingFileError, NotAnEmbeddingError
from tireg.files import MAX_FILE_BYTES, FileTooLargeError, open_regular, read_capped

#: the most memory reading one file can take: a small hostile file (a pickle, a card) can decode
#: to this much before it is refused, so callers reading many files at once budget for it
MAX_READ_MEMORY = pickle_safe.MAX_DECODED_BYTES

SAFE_SAFETENSORS = "safetensors: no code"
SAFE_PICKLE = "pickle: allow-listed globals only"
SAFE_IMAGE = "image: no code"


class NonFiniteVectorsWarning(UserWarning):
    """An embedding was read whose vectors hold NaN or Inf (it loads; it will not work)."""


class ReadResult(NamedTuple):
    """An embedding plus what was learned while reading its file (for ``tireg inspect``).

    A named tuple, not a frozen dataclass: one is made per file read, and a frozen dataclass's
    ``__init__`` sets each of its eight fields through ``object.__setattr__``."""

    embedding: Embedding
    #: ``safetensors``, ``torch-zip``, ``torch-pickle``, ``png``, ``webp``, ...
    container: str
    #: ``tireg``, ``a1111``, ``original``, ``diffusers``, ``kohya``, ``sdxl``
    layout: str
    #: encoder -> dtype the file stored the vectors in
    dtypes: dict[str, str]
    #: why reading it ran no code
    safety: str
    #: for image embeddings: ``text`` or ``pixels``, the carrier that was decoded
    carrier: str | None = None
    #: sha256 of the file's bytes (for ``tireg`` files this can differ from the provenance)
    sha256: str = ""
    #: vectors holding NaN or Inf (the embedding loads, and will not work)
    nonfinite: int = 0


def container_of(data: bytes) -> str:
    """Name the container by magic bytes: safetensors, torch-zip, torch-pickle, png, webp, ..."""
    if len(data) >= 9 and data[8:9] == b"{":
        return "safetensors"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "torch-zip"
    if data[:1] == b"\x80":
        return "torch-pickle"
    kind = a1111_png.image_kind(data)
    if kind is not None:
        return kind
    return "unknown"


def _unknown(data: bytes, reveal: bool = True) -> EmbeddingFileError:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml")):  # not `<head`: a `<headX>` trigger
        return NotAnEmbeddingError(
            "an HTML page, not an embedding", hint="the download link served a web page"
        )
    if head.startswith((b"{", b"[")):
        return NotAnEmbeddingError("a JSON text file, not an embedding")
    try:
        text = data[:512].decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return NotAnEmbeddingError("a text file, not an embedding")
    # a file reached through a symlink may be anybody's (a key, a password file): its bytes
    # are not repeated to whoever asked tireg to read the link
    start = f"starts with bytes {data[:8].hex()}; " if reveal else ""
    return EmbeddingFileError(
        f"unrecognised file format ({start}not safetensors, a torch file or an image)"
    )


def read_file(path: str | os.PathLike[str]) -> Embedding:
    """Read one embedding file; errors name the file."""
    return read_file_detailed(path).embedding


def read_file_detailed(
    path: str | os.PathLike[str], *, warn: bool = True, finite: bool = True
) -> ReadResult:
    """Like :func:`read_file`, with the container, layout, stored dtypes and safety verdict;
    ``warn=False`` leaves non-finite vectors to :attr:`ReadResult.nonfinite` alone, and
    ``finite=False`` leaves them to the caller (see :func:`read_bytes_detailed`)."""
    p = path if isinstance(path, Path) else Path(path)
    try:
        data = read_capped(p, MAX_FILE_BYTES)
    except FileTooLargeError:
        raise _too_large(p).with_path(p) from None
    except OSError as exc:
        raise EmbeddingFileError(f"cannot read file: {exc.strerror or exc}", path=p) from exc
    # asked only when it matters: a file of no known format, whose first bytes an error quotes
    reveal = container_of(data) != "unknown" or not p.is_symlink()
    try:
        return read_bytes_detailed(
            data, name_hint=p.stem, label=str(p), reveal=reveal, warn=warn, finite=finite
        )
    except EmbeddingFileError as exc:
        raise exc.with_path(p) from None


def _too_large(path: Path) -> EmbeddingFileError:
    """Say what a file over the cap is without reading it all (a safetensors header is enough)."""
    try:
        with open_regular(path) as stream:
            size = os.fstat(stream.fileno()).st_size
            if stream.read(9)[8:9] == b"{":
                stream.seek(0)
                with contextlib.suppress(EmbeddingFileError):
                    count = len(safetensors_file.read_header(stream, size).tensors)
                    return NotAnEmbeddingError(
                        f"a safetensors file with {count:,} tensors ({size:,} bytes) — "
                        "looks like a checkpoint, not an embedding"
                    )
    except OSError:
        return NotAnEmbeddingError(
            f"larger than {MAX_FILE_BYTES:,} bytes: too large for an embedding"
        )
    return NotAnEmbeddingError(f"{size:,} bytes is too large for an embedding")


def read_bytes(data: bytes, *, name_hint: str) -> Embedding:
    """Read an embedding from bytes; ``name_hint`` (the file stem) names it if the file doesn't."""
    return read_bytes_detailed(data, name_hint=name_hint).embedding


def read_bytes_detailed(
    data: bytes,
    *,
    name_hint: str,
    label: str | None = None,
    reveal: bool = True,
    warn: bool = True,
    finite: bool = True,
) -> ReadResult:
    """Read bytes as an embedding, reporting how; ``label`` names the file in warnings.

    Whatever the container, the result passes :func:`tireg.converters.limits.check`. Errors quote
    the file's first bytes only when ``reveal`` (not for a file reached through a symlink).
    Vectors holding NaN or Inf are counted in :attr:`ReadResult.nonfinite` and, when ``warn``,
    reported as a :class:`NonFiniteVectorsWarning` (``tireg inspect`` lists them itself: a
    warnings context per file would cost more than its reading). ``finite=False`` skips that
    step (``nonfinite`` stays 0) for a caller that judges the vectors itself:
    ``tireg inspect`` sums their squares for the norms anyway, and a finite sum of squares
    proves every vector finite (:func:`nonfinite_count` counts them when it is not).
    """
    if not data:
        raise EmbeddingFileError("empty file (0 bytes)")
    container = container_of(data)
    if container == "unknown":
        raise _unknown(data, reveal)
    sha = hashlib.sha256(data).hexdigest()
    if container == "safetensors":
        result = _read_safetensors(data, name_hint, sha)
    elif container in ("torch-zip", "torch-pickle"):
        result = _read_torch(data, name_hint, container, sha)
    else:
        result = _read_image(data, name_hint, container, sha)
    embedding = limits.check(result.embedding, result.dtypes)
    if embedding.source_sha256 is None:  # an internal-format file written without provenance
        embedding = embedding.with_meta(source_sha256=sha)
    bad = 0
    if finite and not embedding.is_finite:
        bad = nonfinite_count(embedding)
        if warn:
            message = nonfinite_message(label or embedding.name, bad)
            warnings.warn(NonFiniteVectorsWarning(message), stacklevel=2)
    if embedding is result.embedding and not bad:
        return result  # the readers below give the file's sha256 already
    return result._replace(embedding=embedding, nonfinite=bad)


def nonfinite_count(embedding: Embedding) -> int:
    """How many of the embedding's vectors hold NaN or Inf (a row of any encoder)."""
    return sum(int((~np.isfinite(a)).any(axis=1).sum()) for a in embedding.vectors.values())


def nonfinite_message(label: str, count: int) -> str:
    """What is said of a file whose ``count`` vectors hold NaN or Inf."""
    return f"{label}: {count} vector(s) hold NaN or Inf; the embedding loads but will not work"


def _read_safetensors(data: bytes, name_hint: str, sha: str) -> ReadResult:
    header = safetensors_file.header_of(data)
    view = memoryview(data)
    start = header.data_start
    tensors = {
        name: safetensors_file.tensor_from_bytes(info, view[start + info.begin : start + info.end])
        for name, info in header.tensors.items()
    }
    metadata = header.metadata
    stored = {k: safetensors_file.dtype_name(v.dtype) for k, v in header.tensors.items()}
    if internal.is_internal(metadata):
        embedding = internal.from_parts(tensors, metadata)
        if embedding.source_format is None:
            embedding = embedding.with_meta(source_format="tireg", source_sha256=sha)
        dtypes = {k: stored.get(k, "float32") for k in embedding.vectors}
        return ReadResult(embedding, "safetensors", "tireg", dtypes, SAFE_SAFETENSORS, sha256=sha)
    found = layouts.interpret(
        tensors, container="safetensors", name_hint=name_hint, metadata=metadata, source_sha256=sha
    )
    if found.layout == "sdxl":
        dtypes = {CLIP_L: stored[CLIP_L], CLIP_G: stored[CLIP_G]}
    else:
        (only,) = stored.values()
        dtypes = dict.fromkeys(found.embedding.vectors, only)
    return ReadResult(
        found.embedding, "safetensors", found.layout, dtypes, SAFE_SAFETENSORS, sha256=sha
    )


def _read_torch(data: bytes, name_hint: str, container: str, sha: str) -> ReadResult:
    # ``import a.b as c``: found in sys.modules by C alone; ``from a import b`` runs importlib's
    # Python ``_handle_fromlist`` on every call
    import tireg.converters.torch_file as torch_file

    obj: Any = torch_file.load(data)
    found = layouts.interpret(obj, container="pt", name_hint=name_hint, source_sha256=sha)
    return ReadResult(
        found.embedding, container, found.layout, found.dtypes, SAFE_PICKLE, sha256=sha
    )


def _read_image(data: bytes, name_hint: str, container: str, sha: str) -> ReadResult:
    payload, carrier = a1111_png.loads(data)
    found = layouts.interpret(payload, container=container, name_hint=name_hint, source_sha256=sha)
    # JSON numbers arrive as float64; A1111 stores float32, which is what the card held
    dtypes = dict.fromkeys(found.embedding.vectors, "float32")
    return ReadResult(
        found.embedding, container, found.layout, dtypes, SAFE_IMAGE, carrier, sha256=sha
    )


def read_sdxl_pair(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> Embedding:
    """Combine diffusers' SDXL pair: ``learned_embeds`` (768, clip_l) + ``learned_embeds_2`` (1280).

    The files may come in either order (the widths tell them apart). The name is the first
    file's token; ``source_sha256`` is the sha256 of the 768-wide file.
    """
    parts = [read_file(first), read_file(second)]
    by_width: dict[int, Embedding] = {}
    for path, part in zip((first, second), parts, strict=True):
        if len(part.vectors) != 1:
            raise EmbeddingFileError("is not a single-encoder file of an SDXL pair", path=path)
        by_width[next(iter(part.widths.values()))] = part
    if set(by_width) != {768, 1280}:
        widths = [next(iter(p.widths.values())) for p in parts]
        raise EmbeddingFileError(
            f"an SDXL pair needs one 768-wide and one 1280-wide file, got widths {widths}",
            path=first,
        )
    clip_l, clip_g = by_width[768], by_width[1280]
    if clip_l.num_vectors != clip_g.num_vectors:
        raise EmbeddingFileError(
            "the pair disagrees on the vector count "
            f"({clip_l.num_vectors} vs {clip_g.num_vectors})",
            path=first,
        )
    return Embedding(
        name=parts[0].name,
        vectors={
            CLIP_L: next(iter(clip_l.vectors.values())),
            CLIP_G: next(iter(clip_g.vectors.values())),
        },
        source_format="diffusers-sdxl-pair",
        source_sha256=clip_l.source_sha256,
        flat=clip_l.flat and clip_g.flat,
    )
