"""Write an embedding in any supported format, atomically, never overwriting without ``force``.

What each format keeps (:data:`CARRIES`; the round-trip tests assert exactly this):

=========================  ===========================================  ==========================
format                     file(s)                                      keeps
=========================  ===========================================  ==========================
``tireg``                  internal safetensors (:mod:`.internal`)      everything, provenance too
``a1111-pt``               torch zip: A1111's dict (SDXL: clip_l and    vectors, name, step,
                           clip_g alone, which is all A1111 reads)      trained-on hash and name
                                                                        (SDXL: the vectors)
``png``                    A1111 card, text chunk + pixel payload       as ``a1111-pt`` (no SDXL)
``diffusers-bin``          torch zip ``{name: T}``; SDXL: a pair,        vectors, name (the token),
                           ``X.bin`` (clip_l) + ``X_2.bin`` (clip_g)    a single vector's rank
``diffusers-safetensors``  ``{name: T}``, metadata ``{"format": "pt"}``;  vectors, name, rank
                           SDXL: the same pair
``safetensors``            kohya: ``emb_params`` or ``clip_l``/``clip_g``,  vectors, name (as
                           ``modelspec.*`` metadata                     ``modelspec.title``),
                                                                        ``modelspec.*`` extras
=========================  ===========================================  ==========================

Provenance (``source_format``, ``source_sha256``) describes the file a value was read from, so
reading any file but ``tireg`` sets it afresh; ``tireg`` stores the original's.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tireg import prompt_words
from tireg.converters import (
    a1111_png,
    internal,
    layouts,
    safetensors_file,
    walking,
)
from tireg.converters.embedding import Embedding
from tireg.converters.errors import UnsupportedConversionError
from tireg.errors import TiregError
from tireg.files import atomic_batch
from tireg.paths import MAX_STEM_BYTES, safe_part
from tireg.prompt_words import unbracketed

WRITE_FORMATS = (
    "tireg",
    "a1111-pt",
    "diffusers-bin",
    "diffusers-safetensors",
    "safetensors",
    "png",
)

#: default file extension of each output format
EXTENSIONS = {
    "tireg": ".tireg.safetensors",
    "a1111-pt": ".pt",
    "diffusers-bin": ".bin",
    "diffusers-safetensors": ".safetensors",
    "safetensors": ".safetensors",
    "png": ".png",
}

_PROVENANCE = frozenset({"source_format", "source_sha256"})
_A1111 = frozenset({"vectors", "name", "step", "trained_on_hash", "trained_on_name"})
#: what ``a1111-pt`` keeps of an SDXL embedding (see :func:`layouts.a1111_dict`); the name a
#: reader gives back is the file's stem
_A1111_SDXL = frozenset({"vectors"})

#: the Embedding fields each format stores; ``extras:modelspec`` = only ``modelspec.*`` extras
#: (:func:`carried` has the one exception, SDXL in ``a1111-pt``)
CARRIES: dict[str, frozenset[str]] = {
    "tireg": _A1111 | _PROVENANCE | {"extras", "flat"},
    "a1111-pt": _A1111,
    "png": _A1111,
    "diffusers-bin": frozenset({"vectors", "name", "flat"}),
    "diffusers-safetensors": frozenset({"vectors", "name", "flat"}),
    "safetensors": frozenset({"vectors", "name", "extras:modelspec"}),
}


class OutputExistsError(TiregError):
    """The target file exists and ``force`` was not given."""


class OutputWriteError(TiregError):
    """The file system refused a write (no space, too large, no permission): nothing written."""


def carried(embedding: Embedding, fmt: str) -> frozenset[str]:
    """The fields of ``embedding`` that ``fmt`` stores: :data:`CARRIES`, except that an SDXL
    ``a1111-pt`` file holds nothing but its two tensors."""
    if fmt == "a1111-pt" and layouts.is_pair(embedding):
        return _A1111_SDXL
    return CARRIES[fmt]


def kept_by(embedding: Embedding, fmt: str) -> Embedding:
    """``embedding`` reduced to what ``fmt`` stores: the value a reader can give back.

    Dropped fields become None / empty (a dropped name ``""``); provenance is dropped unless the
    format keeps it.
    """
    keeps = carried(embedding, fmt)
    extras = dict(embedding.extras) if "extras" in keeps else {}
    if "extras:modelspec" in keeps:
        extras = {
            k: v
            for k, v in embedding.extras.items()
            if k.startswith("modelspec.") and k != layouts.TITLE_KEY
        }
    return Embedding(
        name=embedding.name if "name" in keeps else "",
        vectors=embedding.vectors,
        step=embedding.step if "step" in keeps else None,
        trained_on_hash=embedding.trained_on_hash if "trained_on_hash" in keeps else None,
        trained_on_name=embedding.trained_on_name if "trained_on_name" in keeps else None,
        source_format=embedding.source_format if "source_format" in keeps else None,
        source_sha256=embedding.source_sha256 if "source_sha256" in keeps else None,
        extras=extras,
        flat=embedding.flat and "flat" in keeps,
    )


def encode(embedding: Embedding, fmt: str) -> list[bytes]:
    """The bytes of each file ``fmt`` needs for ``embedding`` (two for a diffusers SDXL pair)."""
    if fmt == "tireg":
        return [internal.dumps(embedding)]
    if fmt not in WRITE_FORMATS:
        raise UnsupportedConversionError(
            f"unknown output format {fmt!r}", hint=f"choose one of {', '.join(WRITE_FORMATS)}"
        )
    pair = layouts.is_pair(embedding)
    if fmt == "png":
        if pair:
            raise UnsupportedConversionError(
                "A1111 image embeddings cannot hold SDXL (two-encoder) embeddings",
                hint="convert to safetensors (clip_l/clip_g): A1111, ComfyUI and InvokeAI read it",
            )
        return [a1111_png.dumps(embedding)]
    if fmt == "a1111-pt":
        return [_torch_dumps(layouts.a1111_dict(embedding))]
    if fmt == "diffusers-bin":
        return [_torch_dumps(d) for d in layouts.diffusers_dicts(embedding)]
    _check_safetensors_name(embedding)
    if fmt == "diffusers-safetensors":
        return [
            safetensors_file.dumps(d, {"format": "pt"}) for d in layouts.diffusers_dicts(embedding)
        ]
    tensors, metadata = layouts.kohya_dict(embedding)
    return [safetensors_file.dumps(tensors, metadata)]


def _torch_dumps(obj: object) -> bytes:
    from tireg.converters import torch_file

    return torch_file.dumps(obj)


def _check_safetensors_name(embedding: Embedding) -> None:
    if embedding.name == "__metadata__":
        raise UnsupportedConversionError(
            "the name '__metadata__' is reserved in safetensors files",
            hint="rename the embedding first",
        )


def output_paths(path: str | os.PathLike[str], count: int) -> list[Path]:
    """The files a write to ``path`` produces: ``path``, and for a pair ``<stem>_2<suffix>``."""
    first = path if isinstance(path, Path) else Path(path)
    if count == 1:
        return [first]
    return [first, first.with_name(f"{first.stem}_2{first.suffix}")]


def write_file(
    embedding: Embedding, path: str | os.PathLike[str], fmt: str, *, force: bool = False
) -> list[Path]:
    """Write ``embedding`` to ``path`` in ``fmt``; return every file written.

    Either every file is written or none is: all targets are checked before the first write,
    each write is atomic, and a pair whose second file fails loses its first file again.
    """
    written, errors = _write_each([(encode(embedding, fmt), Path(path))], force=force)
    if errors[0] is not None:
        raise errors[0]
    return written[0]


def _write_each(
    plan: Sequence[tuple[list[bytes], Path]], *, force: bool
) -> tuple[list[list[Path]], list[TiregError | None]]:
    """Write each embedding's files (one, or a pair) to the paths ``plan`` names.

    Returns the files written for each entry and each entry's error (None where it was
    written). Everything is staged, and every target checked, before the first file is
    published, so a refused target, or a write that fails (disk full, file too large, no
    permission), writes nothing for its entry and leaves no temporary behind, while the other
    entries go ahead; the files are then fsynced together (:func:`atomic_batch`).
    """
    errors: list[TiregError | None] = []
    written: list[list[Path]] = []
    with atomic_batch() as batch:
        for blobs, path in plan:
            targets = output_paths(path, len(blobs))
            try:
                batch.add(zip(targets, blobs, strict=True), overwrite=force)
            except OSError as exc:  # as _write_errors would raise it, without a generator each
                error = _write_error(exc, targets[0])
                error.__cause__ = exc
                errors.append(error)
                written.append([])
            else:
                errors.append(None)
                written.append(targets)
        with _write_errors(plan[0][1].parent if plan else Path.cwd()):
            # a commit publishes every group staged, or raises (and so does this function)
            batch.commit()
    return written, errors


@contextlib.contextmanager
def _write_errors(target: Path) -> Iterator[None]:
    """File-system failures as one-line errors naming ``target`` (the batch, on the way out,
    removes whatever it staged)."""
    try:
        yield
    except OSError as exc:
        raise _write_error(exc, target) from exc


def _write_error(exc: OSError, target: Path) -> TiregError:
    """The one-line error of a failed write to ``target``."""
    if isinstance(exc, FileExistsError) and exc.errno is None:
        return _exists(exc.args[0])  # tireg.files' own refusal: args[0] is the target taken
    return _cannot_write(exc, target)


def _exists(path: str | os.PathLike[str]) -> OutputExistsError:
    return OutputExistsError("already exists", path=path, hint="pass --force to overwrite")


def _cannot_write(exc: OSError, path: Path) -> OutputWriteError:
    return OutputWriteError(f"cannot write ({exc.strerror or exc})", path=path)


#: what :func:`safe_stem` replaces: all but alphanumerics (``str.isalnum``: ``\w`` is exactly
#: that plus ``_``, which is replaced by itself) and ``._- ``; checked over every code point
_NOT_STEM = re.compile(r"[^\w.\- ]")


def safe_stem(text: str) -> str:
    """A file stem from an embedding name: A1111's rule (alphanumerics and ``._- ``), no ``<>``."""
    cleaned = _NOT_STEM.sub("_", unbracketed(text))
    return safe_part(cleaned, max_bytes=MAX_STEM_BYTES)  # device names, length: tireg.paths


@dataclass
class ConvertReport:
    """What a batch conversion did: the files written for each input, and why others were not."""

    #: (input, files written for it): one file, or a diffusers SDXL pair
    converted: list[tuple[Path, list[Path]]] = field(default_factory=list)
    #: (input, why it was not converted), in the order the inputs came
    failed: list[tuple[Path, TiregError]] = field(default_factory=list)
    #: files in walked folders whose extension no embedding uses
    skipped: int = 0

    @property
    def written(self) -> list[Path]:
        return [path for _, paths in self.converted for path in paths]


def convert(
    inputs: Sequence[str | os.PathLike[str]],
    fmt: str,
    *,
    output: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    sdxl_pair: bool = False,
) -> ConvertReport:
    """Convert files, and folders walked recursively, to ``fmt`` (the ``tireg convert`` command).

    Each output keeps its input's file stem (:func:`output_stem`): A1111 uses the stem as the
    prompt word, so a converted file is typed as the original was, whatever else is converted
    with it. Outputs go to ``out_dir`` (default: the current directory), or to ``output`` for
    one input. What can be converted is; every other input (unreadable, refused, a target that
    exists, two inputs for one target) is reported in :attr:`ConvertReport.failed`, as ``add``
    reports its files. ``sdxl_pair`` reads exactly two inputs as one diffusers SDXL pair.
    """
    if fmt not in WRITE_FORMATS:
        raise UnsupportedConversionError(
            f"unknown output format {fmt!r}", hint=f"choose one of {', '.join(WRITE_FORMATS)}"
        )
    if output is not None and out_dir is not None:
        raise UnsupportedConversionError("give either an output file or an output folder, not both")
    report = ConvertReport()
    if sdxl_pair:
        if len(inputs) != 2:
            raise UnsupportedConversionError("an SDXL pair is exactly two files")
        files = [Path(inputs[0])]
    else:
        files = _expand(inputs, report)
    if output is not None and len(files) != 1:
        raise UnsupportedConversionError(
            f"one output file for {len(files)} inputs", hint="use --out-dir for several inputs"
        )
    folder = Path(out_dir) if out_dir is not None else Path.cwd()
    plan: list[tuple[Path, list[bytes], Path]] = []
    # targets as strings, compared as the file system's Path compares them (normcase): a set
    # of a thousand Paths hashes each by its parts
    taken: set[str] = set()
    for path in files:
        try:
            embedding = _read_input(path, inputs[1] if sdxl_pair else None)
            target = Path(output) if output is not None else _target(path, embedding, fmt, folder)
            key = os.path.normcase(target)
            if key in taken:
                raise UnsupportedConversionError(
                    f"another input of this batch is written to {target}",
                    hint="convert this one with -o",
                )
            plan.append((path, encode(embedding, fmt), target))
            taken.add(key)
        except TiregError as exc:
            report.failed.append((path, exc.with_path(path) if exc.path is None else exc))
    written, errors = _write_each([(blobs, target) for _, blobs, target in plan], force=force)
    for (path, _, _), files_written, error in zip(plan, written, errors, strict=True):
        if error is None:
            report.converted.append((path, files_written))
        else:
            report.failed.append((path, error))
    if report.failed:
        order = {path: i for i, path in enumerate(files)}
        report.failed.sort(key=lambda item: order.get(item[0], -1))
    return report


def _expand(inputs: Sequence[str | os.PathLike[str]], report: ConvertReport) -> list[Path]:
    """Files named, and the embedding files of folders named (:func:`walking.walk`)."""
    files: list[Path] = []
    for given in (p if isinstance(p, Path) else Path(p) for p in inputs):
        if given.is_dir():
            found, skipped = walking.walk(given)
            files += found
            report.skipped += skipped
        else:
            files.append(given)
    return files


def _read_input(path: Path, pair_second: str | os.PathLike[str] | None) -> Embedding:
    # ``import a.b as c``: found in sys.modules by C alone, where ``from a.b import c`` runs
    # importlib's Python ``_handle_fromlist`` for every file converted
    import tireg.converters.reading as reading

    if pair_second is None:
        return reading.read_file(path)
    return reading.read_sdxl_pair(path, pair_second)


def _target(path: Path, embedding: Embedding, fmt: str, folder: Path) -> Path:
    return folder / (output_stem(path, embedding) + EXTENSIONS[fmt])


def output_stem(path: Path, embedding: Embedding) -> str:
    """The file stem an output of ``path`` keeps: the prompt word A1111 gave the input
    (:mod:`tireg.prompt_words`), so the converted file is typed as the original was. Image cards
    and diffusers' generic ``learned_embeds`` are named by the name inside instead.
    """
    tireg_ext = EXTENSIONS["tireg"]
    stem = path.name[: -len(tireg_ext)] if path.name.endswith(tireg_ext) else path.stem
    if path.suffix.lower() in prompt_words.IMAGE_SUFFIXES or stem in prompt_words.GENERIC_STEMS:
        return safe_stem(embedding.name) or safe_stem(stem) or "embedding"
    return safe_stem(stem) or safe_stem(embedding.name) or "embedding"
