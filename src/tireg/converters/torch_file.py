"""Read and write ``torch.save`` files without torch and without executing a pickle.

Reading (:func:`load`, :func:`load_path`) handles both container formats torch has written:

* **zip** (torch >= 1.6): members under one archive directory (``archive/`` today, the file's stem
  in older releases): ``data.pkl`` (the object pickle), ``data/<key>`` (one raw little-endian blob
  per storage), ``version``, and in newer releases ``byteorder``, ``.format_version``,
  ``.storage_alignment`` and ``.data/serialization_id``, which we accept and ignore except
  ``byteorder``;
* **legacy** (``_use_new_zipfile_serialization=False``): five pickles back to back (the magic number
  ``0x1950a86a20f9469cfc6c``, protocol version 1001, a sys-info dict, the object, the sorted list of
  storage keys), then per key an int64 element count and the raw bytes.

A zip member's CRC-32 is not checked, because torch's own reader does not check it (its miniz is
built with ``MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS``: pytorch ``cmake/Dependencies.cmake``), and
``torch.save`` under ``torch.serialization.set_crc32_options(False)`` writes 0 for every CRC: such
a file loads in every UI, so it must read here too. Sizes, names and local headers are checked.

The object pickle goes through :mod:`tireg.converters.pickle_safe` (an allow-list of stand-ins), and
the inert records it yields become plain Python: dicts (OrderedDict included) → ``dict``, lists,
tuples, scalars, ``bytes``, tensors and Parameters → owned numpy arrays (bfloat16 widened to
float32), ``ParameterDict`` → ``dict`` of arrays; numpy values (as in SD ``.ckpt`` callback state)
→ fresh numpy dtypes, scalars and owned native-byte-order arrays, built from the checked bytes
(in both ``tensors`` modes: their data is inside the pickle); allowed globals kept as values (a
storage type, a dtype, Lightning's ``ModelCheckpoint`` key) → their dotted name. The storage
location (``cuda:0``) is ignored. Every size is bounded: what decoding a file builds is charged to
one :class:`~tireg.converters.pickle_safe.Budget` (its pickles' objects, then its tensors at the
size they are returned in, bfloat16 widened), ints are at most :data:`MAX_INT_BITS` wide, and only
:mod:`tireg.converters.errors` exceptions leave this module, whatever the input bytes.

Writing (:func:`dumps`) produces the files A1111 and the sd-concepts-library published, which
every consumer reads: the members ``data.pkl``, ``data/<key>`` and ``version`` only. A1111's
``modules/safe.py`` (``check_zip_filenames``) refuses any other member as "may be malicious", and
the ones torch >= 2.1 adds (``.format_version``, ``.storage_alignment``, ``byteorder``,
``.data/serialization_id``) are all optional to torch's own loader (a missing ``byteorder`` means
little-endian). Each member is byte for byte what ``torch.save`` (torch 2.13) writes under that
name, laid out as torch lays out its archive, so the bytes equal those of a torch < 2.1 file
(``sd-concepts-library`` ``learned_embeds.bin`` files, A1111's Train tab output).

**data.pkl** is pickle protocol 2, as torch's pickler emits it: ``PROTO 2``; each str as
``BINUNICODE`` followed by ``BINPUT`` (a repeated str is a ``BINGET``); ints as ``BININT1``/
``BININT2``/``BININT``/``LONG1``; floats ``BINFLOAT``; ``NEWTRUE``/``NEWFALSE``/``NONE``;
a dict ``EMPTY_DICT BINPUT`` then its items in batches of 1000 (``SETITEM`` for a batch of one,
``MARK … SETITEMS`` otherwise); a list likewise with ``EMPTY_LIST``/``APPEND``/``APPENDS``; tuples
``EMPTY_TUPLE`` (not memoised) or ``TUPLE1/2/3`` or ``MARK … TUPLE``, then ``BINPUT``; an
``OrderedDict`` ``GLOBAL 'collections OrderedDict' BINPUT EMPTY_TUPLE REDUCE BINPUT`` then its
items. An array ``a`` becomes::

    GLOBAL 'torch._utils _rebuild_tensor_v2' BINPUT          (a global is written once, then BINGET)
    MARK
      MARK 'storage' GLOBAL 'torch FloatStorage' '<key>' 'cpu' <a.size> TUPLE BINPUT BINPERSID
      0  <shape tuple>  <C-order strides tuple, in elements>  NEWFALSE
      GLOBAL 'collections OrderedDict' EMPTY_TUPLE REDUCE BINPUT
    TUPLE BINPUT REDUCE BINPUT

with storage keys ``'0'``, ``'1'``, … in order of first appearance (the same array object twice is
one tensor, written once and then fetched with ``BINGET``).

**The zip** is stored (no compression); members ``archive/data.pkl``, ``archive/data/<key>``…,
``archive/version`` (``3\\n``). Each local header has version 0, flags 0x0808 (data descriptor,
UTF-8 names), time/date/CRC/sizes 0, and an extra field ``FB <u16 n> 'Z'*n`` that puts the
member's data on a 64-byte boundary; the data is followed by a descriptor
``PK\\x07\\x08 crc csize usize``. Then the central directory (the same fields, real CRC and sizes,
no extra), a ZIP64 end record, its locator, and the classic end record.
"""

from __future__ import annotations

import copy
import io
import math
import os
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, NoReturn

import numpy as np

from tireg.converters import pickle_safe
from tireg.converters.errors import EmbeddingFileError
from tireg.converters.pickle_safe import (
    Budget,
    ModuleStub,
    NumpyArray,
    NumpyDType,
    NumpyScalar,
    StorageRef,
    TensorStub,
)
from tireg.errors import ends_early
from tireg.files import MAX_FILE_BYTES, open_regular, read_at_most

MAX_TOTAL_BYTES = pickle_safe.MAX_DECODED_BYTES  # all of one file's storages read, and arrays
#: a ``data.pkl`` is read whole into memory like any untrusted file, so the same cap bounds it
#: (the pickle of a multi-GB checkpoint is well under 10 MB; ``pipelines.pickled`` uses it too)
MAX_PICKLE_BYTES = MAX_FILE_BYTES
#: the widest int a file may hold (torch's legacy magic number takes 77 bits); a wider one could
#: not even be printed (Python refuses int-to-str conversions beyond 4,300 digits)
MAX_INT_BITS = 128
MAX_RATIO = 200  # a stored or deflated torch member never expands beyond this
MAX_DEPTH = 100  # nesting of containers; real files nest 3 or 4 deep

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"
#: a zip local file header: signature .. extra length; we read flags, name and extra lengths
_LOCAL_HEADER = struct.Struct("<4x2xH18xHH")
#: the end of central directory record, the ZIP64 one and its locator, a central directory
#: entry (APPNOTE.TXT 4.3.16, 4.3.14, 4.3.15, 4.3.12; zipfile's struct formats)
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_LOCATOR = struct.Struct("<4sLQL")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
#: the fields of a central directory entry that :func:`_directory` reads (the others skipped
#: as padding): signature, version needed, flags, method, sizes, name/extra/comment lengths,
#: local header offset
_CENTRAL_USED = struct.Struct("<4s2xB1xHH8xLLHHH8xL")
assert _CENTRAL_USED.size == _CENTRAL.size
#: a 32-bit size or offset with this value is in a ZIP64 extra field instead
_ZIP64_MARK = 0xFFFFFFFF
#: the newest "version needed to extract" zipfile accepts (6.3)
_MAX_EXTRACT_VERSION = 63

Tensors = Literal["load", "shape"]

#: torch dtype name → numpy dtype (little-endian) its storage bytes are read as
_NUMPY_DTYPES: dict[str, str] = {
    "float32": "<f4",
    "float16": "<f2",
    "bfloat16": "<u2",
    "float64": "<f8",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "u1",
    "complex64": "<c8",
    "complex128": "<c16",
}

#: torch dtype name → the numpy dtypes its storage is read as (little-endian, as stored; and
#: big-endian, for a file that says so) and returned in (native byte order), made once:
#: ``np.dtype(...)`` and ``newbyteorder`` cost more per tensor than the rest of its checks
_DTYPE_TRIPLES: dict[str, tuple[np.dtype[Any], np.dtype[Any], np.dtype[Any]]] = {
    name: (np.dtype(code), np.dtype(code).newbyteorder(">"), np.dtype(code).newbyteorder("="))
    for name, code in _NUMPY_DTYPES.items()
}


@dataclass(frozen=True)
class TensorRef:
    """A tensor seen without reading its data (``tensors="shape"``): torch dtype name and shape."""

    shape: tuple[int, ...]
    dtype: str


def _fail(message: str) -> NoReturn:
    raise EmbeddingFileError(message)


# --------------------------------------------------------------------------------------- reading


def load(data: bytes, *, tensors: Tensors = "load") -> Any:
    """Decode a ``torch.save`` file held in ``data`` (zip or legacy format) into plain Python.

    With ``tensors="shape"`` no storage is read: tensors come back as :class:`TensorRef`.
    """
    data = bytes(data)
    if data.startswith(_ZIP_MAGIC):
        return _guard(lambda: _Archive(None, data).load(tensors))
    if data.startswith(b"\x80"):
        return _guard(lambda: _load_legacy(data, tensors, Budget(MAX_TOTAL_BYTES)))
    _fail("not a torch file (neither a zip archive nor a legacy pickle)")


def load_path(path: str | os.PathLike[str], *, tensors: Tensors = "load") -> Any:
    """:func:`load` on a file. With ``tensors="shape"`` only the pickle is read, never the blobs:

    for a zip, the central directory and ``data.pkl``; for a legacy file, its leading pickles.
    That is what makes family detection on multi-GB ``.ckpt`` files cheap.
    """
    p = Path(path)
    try:
        with open_regular(p) as fh:
            head = fh.read(4)
            if tensors == "shape" and head == _ZIP_MAGIC:
                fh.seek(0)
                return _guard(lambda: _Archive(fh).load(tensors))
            limit = MAX_PICKLE_BYTES if tensors == "shape" else MAX_TOTAL_BYTES + MAX_PICKLE_BYTES
            size = os.fstat(fh.fileno()).st_size
            if tensors == "load" and size > limit:
                _fail(f"{size} bytes is too large for a torch embedding file")
            fh.seek(0)
            data = read_at_most(fh, limit)[:limit]
        return load(data, tensors=tensors)
    except OSError as exc:
        raise EmbeddingFileError(f"cannot read file: {exc.strerror}", path=p) from exc
    except EmbeddingFileError as exc:
        raise exc.with_path(p) from None


def _guard(fn: Any) -> Any:
    """Run a decoding step; any failure that is not already ours is the input's fault."""
    try:
        return fn()
    except EmbeddingFileError:
        raise
    except Exception as exc:  # untrusted input must only ever raise our errors
        raise EmbeddingFileError(
            f"corrupt torch file ({pickle_safe.describe_error(exc)})"
        ) from None


class _Member(NamedTuple):
    """One central-directory entry: what :meth:`_Archive.read` checks and slices by. ``name`` is
    the whole stored name (zipfile's ``orig_filename``: NULs included); ``info`` is zipfile's own
    record, kept where zipfile read the directory (to stream a compressed member through it).
    A named tuple: an archive has several members, and a tuple is built at a fraction of a
    frozen dataclass's cost."""

    name: str
    flag_bits: int
    compress_type: int
    compress_size: int
    file_size: int
    header_offset: int
    info: zipfile.ZipInfo | None = None

    @classmethod
    def of(cls, info: zipfile.ZipInfo) -> _Member:
        return cls(
            info.orig_filename,
            info.flag_bits,
            info.compress_type,
            info.compress_size,
            info.file_size,
            info.header_offset,
            info,
        )


class _Archive:
    """A torch zip archive, read member by member with bounded reads.

    ``data``, when the whole archive is in memory, lets its directory be read straight from the
    bytes (:func:`_directory`) and stored members (all that torch writes) be sliced out of it
    instead of streamed through :meth:`zipfile.ZipFile.open`, with the same checks: local header
    signature and name, sizes (neither way checks a CRC: see the module's docstring). An
    archive laid out otherwise (a comment, zip64 fields, compressed members), or one on disk, is
    read through :mod:`zipfile`.
    """

    def __init__(self, source: BinaryIO | None, data: bytes | None = None) -> None:
        self.data = data
        self.zip: zipfile.ZipFile | None = None
        members = _directory(data) if data is not None else None
        if members is None:
            # the stream over the bytes is made only here: a torch-laid archive needs none
            self.zip = _open_zip(source if source is not None else io.BytesIO(data or b""))
            listed = [_Member.of(info) for info in self.zip.infolist()]
            # a name listed twice is one key: the same names, NULs included, as the list's
            members = {member.name: member for member in listed}
            if len(members) != len(listed):
                _fail("zip archive lists a member twice")
        self.members = members
        if "\0" in "".join(members):
            # zipfile cuts a name at its first NUL: 'data.pkl\0junk' would be read as 'data.pkl'
            _fail("zip archive has a member name with a NUL character")
        pickles = [
            n
            for n in self.members
            if n.endswith("data.pkl") and (n == "data.pkl" or _one_dir(n, "data.pkl"))
        ]
        if not pickles:
            _fail("zip archive has no data.pkl: not a torch file")
        if len(pickles) > 1:
            _fail("zip archive has several data.pkl members")
        self.prefix = pickles[0][: -len("data.pkl")]
        self.budget = Budget(MAX_TOTAL_BYTES)
        self.big_endian = False

    def read(self, name: str, limit: int) -> bytes | memoryview:
        """A member's bytes: for a stored member of an archive held in memory, a view into it
        (a tensor's storage is then copied once, into its array, not first into a slice of its
        own), found through its local header, whose signature, flags and name must agree."""
        member = self.members.get(self.prefix + name)
        if member is None:
            _fail(f"zip archive has no member {self.prefix + name!r}")
        shown, flags, method, stored_size, size, at, info = member
        if flags & 1:
            _fail(f"zip member {shown!r} is encrypted")
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            _fail(f"zip member {shown!r} uses an unsupported compression method")
        if size > min(limit, self.budget.left):
            _fail(f"zip member {shown!r} declares {size} bytes, over the limit")
        if size > 1024 * 1024 and size > MAX_RATIO * max(stored_size, 1):
            _fail(f"zip member {shown!r} has an absurd compression ratio")
        blob: bytes | memoryview
        data = self.data
        if data is not None and method == zipfile.ZIP_STORED:
            # the local header unpacked in place: a slice of it would be a copy made only for that
            if at + _LOCAL_HEADER.size > len(data) or not data.startswith(_ZIP_MAGIC, at):
                _fail(f"zip member {shown!r} has a bad local header")
            local_flags, name_size, extra_size = _LOCAL_HEADER.unpack_from(data, at)
            if local_flags & 0x61:  # encrypted, patched or strongly encrypted: as zipfile refuses
                _fail(f"zip member {shown!r} is encrypted or patched")
            start = at + _LOCAL_HEADER.size
            encoding = "utf-8" if local_flags & 0x800 else "cp437"
            if str(data[start : start + name_size], encoding) != shown:
                _fail(f"zip member {shown!r} has another name in its local header")
            start += name_size + extra_size
            blob = memoryview(data)[start : start + stored_size]
            if len(blob) != stored_size:
                _fail(f"zip member {shown!r} is truncated")
        else:
            assert self.zip is not None and info is not None  # only _directory omits it
            with self.zip.open(without_crc(info)) as fh:
                blob = fh.read(size + 1)  # one more byte than declared: proves the size is honest
        if len(blob) != size:
            _fail(f"zip member {shown!r} holds {len(blob)} bytes, not {size}")
        self.budget.charge(size, "zip member {!r}", shown)
        return blob

    def load(self, tensors: Tensors) -> Any:
        if self.prefix + "byteorder" in self.members:
            order = bytes(self.read("byteorder", 16))
            if order not in (b"little", b"big"):
                _fail(f"unknown byteorder {order!r}")
            self.big_endian = order == b"big"
        pickled = bytes(self.read("data.pkl", MAX_PICKLE_BYTES))  # the scan needs bytes' find
        blobs: dict[str, bytes | memoryview] = {}

        def fetch(ref: StorageRef) -> bytes | memoryview:
            if ref.key not in blobs:
                blobs[ref.key] = self.read("data/" + ref.key, MAX_TOTAL_BYTES)
            return blobs[ref.key]

        converter = _Converter(tensors, fetch, self.big_endian, self.budget)
        known = pickle_safe.unpickle_layout(pickled, self.budget)
        if known is not None:
            # a diffusers or A1111 embedding: its one tensor is all there is to convert
            obj, holder, key = known
            holder[key] = converter.convert(holder[key], 0)
            return obj
        obj, _ = pickle_safe.unpickle(pickled, budget=self.budget)
        return converter.convert(obj, 0)


def without_crc(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """A copy of ``info`` that :meth:`zipfile.ZipFile.open` reads without comparing the CRC
    (its reader compares only when the record has one), as torch's reader does: every member
    of a torch file read through :mod:`zipfile` is read through this (see the module's
    docstring)."""
    unchecked = copy.copy(info)
    del unchecked.CRC
    return unchecked


def _open_zip(source: BinaryIO) -> zipfile.ZipFile:
    """:class:`zipfile.ZipFile` on ``source``; a zip that starts right and has no directory is
    called what it is: cut short (a truncated download), which "not a zip file" would hide."""
    try:
        return zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        source.seek(0)
        if source.read(4) != _ZIP_MAGIC:
            raise
        _fail(ends_early(source.seek(0, os.SEEK_END)) + ", before the zip's directory")


def _directory(data: bytes) -> dict[str, _Member] | None:
    """The members of an archive held in memory, by name, read straight from its central
    directory when it is laid out as torch (and :func:`zip_archive`) lay archives out: the end
    record last (no comment), optionally preceded by a matching ZIP64 end record and locator,
    right after the central directory, whose entries need no ZIP64 fields, are all stored, and
    are as many as the end record counts, each name once. ``None`` for anything else, which
    :mod:`zipfile` then reads (and judges) as before.

    Why: :class:`zipfile.ZipFile` costs more than everything else in reading a small embedding
    (it builds a ``ZipInfo`` per member and parses every extra field); this reads the same
    fields (APPNOTE.TXT 4.3.12, 4.3.14-16) in one pass of :meth:`struct.Struct.unpack_from`.
    """
    end = len(data) - _END.size
    if end < 0:
        return None
    sig, disk, first_disk, here, count, cd_size, cd_offset, comment = _END.unpack_from(data, end)
    if sig != b"PK\x05\x06" or comment or disk or first_disk or here != count:
        return None
    cd_end = end
    locator = end - _END64_LOCATOR.size
    if locator >= 0 and data.startswith(b"PK\x06\x07", locator):
        _, disk64, _, disks = _END64_LOCATOR.unpack_from(data, locator)
        record = locator - _END64.size
        if record < 0 or disk64 or disks > 1:
            return None
        fields = _END64.unpack_from(data, record)
        if fields[0] != b"PK\x06\x06" or fields[4:] != (0, 0, count, count, cd_size, cd_offset):
            return None
        cd_end = record
    if cd_offset + cd_size != cd_end:  # data before the archive, or a gap: zipfile's business
        return None
    members: dict[str, _Member] = {}
    pos = cd_offset
    entry = _CENTRAL_USED.size
    last = cd_end - entry  # where the last entry's fixed part may start
    unpack = _CENTRAL_USED.unpack_from
    new = tuple.__new__  # a named tuple's own __new__ is a Python function, called per member
    mark = _ZIP64_MARK
    # per entry, as few steps as the checks allow; bytes left over after the last entry end the
    # loop off the directory's end, which the check after it finds
    while pos <= last:
        (sig, version, flags, method, csize, usize, name_size, extra_size, comment_size,
         offset) = unpack(data, pos)  # fmt: skip
        start = pos + entry
        pos = start + name_size + extra_size + comment_size
        if sig != b"PK\x01\x02" or version > _MAX_EXTRACT_VERSION or method or pos > cd_end:
            return None  # not an entry, not stored, or a name running past the directory
        if mark in (csize, usize, offset):
            return None
        name = str(data[start : start + name_size], "utf-8" if flags & 0x800 else "cp437")
        members[name] = new(_Member, (name, flags, method, csize, usize, offset, None))
    # a name listed twice leaves fewer members than entries: zipfile's reading then refuses it
    if pos != cd_end or len(members) != count:
        return None
    return members


def _one_dir(name: str, leaf: str) -> bool:
    """``name`` is ``<dir>/<leaf>`` with exactly one directory level."""
    head, sep, tail = name.partition("/")
    return bool(head) and sep == "/" and tail == leaf


def _load_legacy(data: bytes, tensors: Tensors, budget: Budget) -> Any:
    magic, pos = pickle_safe.unpickle(data, 0, budget=budget)
    if magic != LEGACY_MAGIC:
        _fail("not a torch file (a pickle without torch's magic number)")
    protocol, pos = pickle_safe.unpickle(data, pos, budget=budget)
    if protocol != LEGACY_PROTOCOL:
        _fail("unsupported legacy torch protocol")
    sys_info, pos = pickle_safe.unpickle(data, pos, budget=budget)
    if type(sys_info) is not dict or sys_info.get("little_endian") is not True:
        _fail("legacy torch file from a big-endian machine or with bad system info")
    storages: dict[str, StorageRef] = {}
    obj, pos = pickle_safe.unpickle(data, pos, storages, budget)
    blobs: dict[str, bytes] = {}
    if tensors == "load":
        keys, pos = pickle_safe.unpickle(data, pos, budget=budget)
        if type(keys) is not list or not all(type(k) is str for k in keys):
            _fail("legacy torch file has a bad storage key list")
        for key in keys:
            ref = storages.get(key)
            if ref is None or key in blobs:
                _fail(f"legacy storage record {key!r} is unknown or repeated")
            (numel,) = struct.unpack_from("<q", data, pos) if len(data) >= pos + 8 else (-1,)
            end = pos + 8 + ref.numel * ref.itemsize
            if end > len(data) and numel in (ref.numel, -1):
                rest = keys[keys.index(key) + 1 :]
                need = end + sum(8 + r.numel * r.itemsize for k in rest if (r := storages.get(k)))
                _fail(ends_early(len(data), need))
            if numel != ref.numel or end > len(data):
                _fail(f"legacy storage record {key!r} is truncated or has the wrong size")
            blobs[key] = data[pos + 8 : end]
            pos = end
        if pos != len(data):
            _fail("unexpected bytes after the last legacy storage record")
        if set(blobs) != set(storages):
            _fail("legacy torch file lacks a storage record")

    def fetch(ref: StorageRef) -> bytes:
        return blobs[ref.key]

    return _Converter(tensors, fetch, False, budget).convert(obj, 0)


#: values the converter returns as they are (ints too, once their width is checked)
_PLAIN = frozenset({type(None), bool, float, str, bytes})
#: an int is at most :data:`MAX_INT_BITS` wide exactly when its magnitude is below this
_INT_BOUND = 1 << MAX_INT_BITS


class _Converter:
    """Turn unpickled records into plain Python; shared values stay shared, cycles are refused."""

    def __init__(self, tensors: Tensors, fetch: Any, big_endian: bool, budget: Budget) -> None:
        self.tensors = tensors
        self.fetch = fetch
        self.big_endian = big_endian
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()
        self.budget = budget

    def convert(self, obj: Any, depth: int) -> Any:
        kind = type(obj)
        if kind in _PLAIN:
            return obj
        if kind is int:
            if obj.bit_length() > MAX_INT_BITS:
                _fail(f"pickle holds an int of {obj.bit_length():,} bits (at most {MAX_INT_BITS})")
            return obj
        if depth > MAX_DEPTH:
            _fail(f"pickle nests containers more than {MAX_DEPTH} deep")
        oid = id(obj)
        if oid in self.done:
            return self.done[oid]
        if oid in self.active:
            _fail("pickle holds a container that contains itself")
        self.active.add(oid)
        out: Any
        if kind is dict:
            # str keys and plain values, most of a state dict, are taken as they are, uncalled;
            # so is an int of at most MAX_INT_BITS bits (a step, a token id): its magnitude
            # below 2**MAX_INT_BITS is the width check :meth:`convert` makes
            out = {
                k if type(k) is str else self.key(k, depth): (
                    v
                    if type(v) in _PLAIN or (type(v) is int and -_INT_BOUND < v < _INT_BOUND)
                    else self.convert(v, depth + 1)
                )
                for k, v in obj.items()
            }
        elif kind is list:
            out = [self.convert(v, depth + 1) for v in obj]
        elif kind is tuple:
            out = tuple(self.convert(v, depth + 1) for v in obj)
        elif kind in (set, frozenset):
            out = kind(self.key(v, depth) for v in obj)
        elif kind is bytearray:
            out = bytes(obj)
        elif kind is TensorStub:
            out = self.tensor(obj)
        elif kind is ModuleStub:
            params = obj.state.get("_parameters") if obj.state is not None else None
            if type(params) is not dict:
                _fail("ParameterDict without a _parameters dict")
            out = {
                self.key(k, depth): self.convert(v, depth + 1)
                for k, v in params.items()
                if v is not None
            }
        elif kind is NumpyDType:
            out = np.dtype(obj.descr)
        elif kind is NumpyScalar:
            out = _numpy_values(obj.descr, obj.data, ())[()]
        elif kind is NumpyArray:
            out = self.numpy_array(obj)
        elif isinstance(obj, pickle_safe.Global):
            out = obj.name
        else:
            _fail(f"unsupported value in pickle: {kind.__name__}")
        self.active.discard(oid)
        self.done[oid] = out
        return out

    def key(self, value: Any, depth: int) -> Any:
        converted = self.convert(value, depth + 1)
        try:
            hash(converted)
        except TypeError:
            _fail(f"unusable dict key or set element in pickle: {type(converted).__name__}")
        return converted

    def numpy_array(self, record: NumpyArray) -> np.ndarray:
        if record.state is None:
            _fail("numpy array without its state")
        self.budget.charge(len(record.state.data), "its numpy arrays")
        state = record.state
        return _numpy_values(state.descr, state.data, state.shape, state.fortran)

    def tensor(self, stub: TensorStub) -> Any:
        if self.tensors == "shape":
            return TensorRef(stub.shape, stub.dtype)
        dtypes = _DTYPE_TRIPLES.get(stub.dtype)
        if dtypes is None:
            _fail(f"tensors of dtype {stub.dtype} cannot be loaded")
        numel = math.prod(stub.shape)
        # charged at the size returned: bfloat16 is widened to float32 (a stride-0 view of a few
        # bytes may still describe millions of elements; they are counted before they exist)
        returned = 4 if stub.dtype == "bfloat16" else stub.itemsize
        self.budget.charge(numel * returned, "its tensors")
        ref = stub.storage
        blob = self.fetch(ref)
        if len(blob) != ref.numel * ref.itemsize:
            _fail(
                f"storage {ref.key!r} holds {len(blob)} bytes, expected {ref.numel * ref.itemsize}"
            )
        little, big, native = dtypes
        dtype = big if self.big_endian else little
        start = ref.start * ref.itemsize + stub.offset * stub.itemsize
        if numel:
            # pickle_safe checked that the view stays inside its storage; numpy checks it again
            size = stub.itemsize
            strides = tuple([s * size for s in stub.stride])
            view = np.ndarray(stub.shape, dtype, buffer=blob, offset=start, strides=strides)
            array = np.array(view, dtype=native)
        else:
            array = np.zeros(stub.shape, dtype=native)
        if stub.dtype == "bfloat16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        if stub.dtype == "bool":
            return array != 0
        return array


def _numpy_values(
    descr: str, data: bytes, shape: tuple[int, ...], fortran: bool = False
) -> np.ndarray:
    """An owned, native-byte-order array of ``shape`` from raw bytes whose size was checked.

    Bool bytes other than 0/1 are normalised, as for bool tensors.
    """
    dtype = np.dtype(descr)
    flat = np.frombuffer(data, dtype=np.uint8 if dtype.kind == "b" else dtype)
    array = flat.reshape(shape, order="F" if fortran else "C")
    if dtype.kind == "b":
        return array != 0
    return array.astype(dtype.newbyteorder("="), order="K")


# --------------------------------------------------------------------------------------- writing

#: numpy dtype name → torch storage class written for it
_STORAGE_CLASSES = {
    "float32": "FloatStorage",
    "float16": "HalfStorage",
    "float64": "DoubleStorage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}
_BATCH = 1000  # pickle's batch size for APPENDS/SETITEMS
_ALIGNMENT = 64


class _PickleWriter:
    """Emit protocol-2 opcodes the way CPython's pickler does inside ``torch.save``."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo: dict[Any, int] = {}
        self.count = 0
        self.storages: list[np.ndarray] = []
        self.keep: list[Any] = []  # objects whose id() keys the memo stay alive while writing

    def put(self, key: Any = None) -> None:
        if key is not None:
            self.memo[key] = self.count
        idx = self.count
        self.count += 1
        self.out += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def get(self, key: Any) -> bool:
        idx = self.memo.get(key)
        if idx is None:
            return False
        self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)
        return True

    def save(self, obj: Any, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"value nests more than {MAX_DEPTH} deep")
        if obj is None:
            self.out += b"N"
        elif obj is True or obj is False:
            self.out += b"\x88" if obj else b"\x89"
        elif type(obj) is int:
            self.save_int(obj)
        elif type(obj) is float:
            self.out += b"G" + struct.pack(">d", obj)
        elif type(obj) is str:
            self.save_str(obj)
        elif self.get(("id", id(obj))):
            return
        elif type(obj) is tuple:
            self.save_tuple(obj, depth)
        elif type(obj) is list:
            self.out += b"]"
            self.identity_put(obj)
            self.batches(list(obj), b"a", b"e", depth)
        elif isinstance(obj, OrderedDict):
            self.global_("collections", "OrderedDict")
            self.out += b")R"
            self.identity_put(obj)
            self.batches(list(obj.items()), b"s", b"u", depth)
        elif type(obj) is dict:
            self.out += b"}"
            self.identity_put(obj)
            self.batches(list(obj.items()), b"s", b"u", depth)
        elif isinstance(obj, np.ndarray):
            self.tensor(obj)
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} into a torch file")

    def identity_put(self, obj: Any) -> None:
        self.keep.append(obj)
        self.put(("id", id(obj)))

    def save_int(self, value: int) -> None:
        if 0 <= value < 0x100:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 0x10000:
            self.out += b"M" + struct.pack("<H", value)
        elif -0x80000000 <= value < 0x80000000:
            self.out += b"J" + struct.pack("<i", value)
        else:
            raw = value.to_bytes((value.bit_length() >> 3) + 1, "little", signed=True)
            if value < 0 and len(raw) > 1 and raw[-1] == 0xFF and raw[-2] & 0x80:
                raw = raw[:-1]
            if len(raw) < 256:
                self.out += b"\x8a" + bytes([len(raw)]) + raw
            else:
                self.out += b"\x8b" + struct.pack("<i", len(raw)) + raw

    def save_str(self, value: str) -> None:
        if self.get(("str", value)):
            return
        encoded = value.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(encoded)) + encoded
        self.put(("str", value))

    def global_(self, module: str, name: str) -> None:
        if not self.get(("global", module, name)):
            self.out += b"c" + f"{module}\n{name}\n".encode()
            self.put(("global", module, name))

    def save_tuple(self, value: tuple[Any, ...], depth: int) -> None:
        if self._tuple(value, lambda item: self.save(item, depth + 1)):
            self.identity_put(value)

    def batches(self, items: list[Any], one: bytes, many: bytes, depth: int) -> None:
        pairs = one == b"s"
        for begin in range(0, len(items), _BATCH):
            batch = items[begin : begin + _BATCH]
            if len(batch) > 1:
                self.out += b"("
            for item in batch:
                if pairs:
                    self.save(item[0], depth + 1)
                    self.save(item[1], depth + 1)
                else:
                    self.save(item, depth + 1)
            self.out += many if len(batch) > 1 else one

    def tensor(self, array: np.ndarray) -> None:
        storage_class = _STORAGE_CLASSES.get(array.dtype.name)
        if storage_class is None:
            raise TypeError(f"cannot write a {array.dtype} array into a torch file")
        self.keep.append(array)
        contiguous = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
        key = str(len(self.storages))
        self.storages.append(contiguous)
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("
        self.out += b"("
        self.save_str("storage")
        self.global_("torch", storage_class)
        self.save_str(key)
        self.save_str("cpu")
        self.save_int(contiguous.size)
        self.out += b"t"
        self.put()
        self.out += b"Q"
        self.save_int(0)
        shape = tuple(int(d) for d in contiguous.shape)
        self.tuple_fresh(shape)
        self.tuple_fresh(_c_strides(shape))
        self.out += b"\x89"
        self.global_("collections", "OrderedDict")
        self.out += b")R"
        self.put()
        self.out += b"t"
        self.put()
        self.out += b"R"
        self.put(("id", id(array)))

    def tuple_fresh(self, value: tuple[int, ...]) -> None:
        """A tuple that torch builds anew for each tensor (never shared through the memo)."""
        if self._tuple(value, self.save_int):
            self.put()

    def _tuple(self, value: tuple[Any, ...], save_item: Callable[[Any], None]) -> bool:
        """EMPTY_TUPLE, TUPLE1-3 for short tuples, MARK ... TUPLE for longer ones (as pickle);
        False for the empty tuple, which pickle never memoises."""
        if not value:
            self.out += b")"
            return False
        if len(value) > 3:
            self.out += b"("
        for item in value:
            save_item(item)
        self.out += b"t" if len(value) > 3 else b"\x85\x86\x87"[len(value) - 1 : len(value)]
        return True


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides in elements, as torch reports them (also for empty tensors)."""
    strides: list[int] = []
    step = 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` as ``torch.save(obj)`` would (zip format), deterministically.

    ``obj`` may nest dict (str keys; ``OrderedDict`` is written as one), list, tuple, str, int,
    float, bool, None and numpy arrays (float32/16/64, int64/32/16/8, uint8, bool), which
    become CPU tensors. Raises ``TypeError``/``ValueError`` for anything else (``bytes`` too:
    torch's ``weights_only`` loader refuses them), a bug in the caller, not bad input.
    """
    writer = _PickleWriter()
    writer.save(obj)
    writer.out += b"."
    records = [("data.pkl", bytes(writer.out))]
    records += [(f"data/{i}", a.tobytes()) for i, a in enumerate(writer.storages)]
    records.append(("version", b"3\n"))
    return zip_archive(("archive/" + name, blob) for name, blob in records)


def zip_archive(records: Iterable[tuple[str, bytes]]) -> bytes:
    """Lay ``(name, bytes)`` members out the way torch's PyTorchStreamWriter does (see the module
    docstring); given the members of a ``torch.save`` file, it gives that file's bytes back."""
    out = bytearray()
    central = bytearray()
    count = 0
    for name, blob in records:
        encoded = name.encode("utf-8")
        if len(blob) >= 0xFFFFFFFF:
            raise ValueError("members of 4 GiB or more are not supported")
        offset = len(out)
        start = offset + 30 + len(encoded) + 4
        pad = (-start) % _ALIGNMENT
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 0, 0x0808, 0, 0, 0, 0, 0, 0, len(encoded), len(extra)
        )
        out += encoded + extra + blob
        crc = zlib.crc32(blob)
        out += struct.pack("<IIII", 0x08074B50, crc, len(blob), len(blob))
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50, 0, 0, 0x0808, 0, 0, 0, crc, len(blob), len(blob),
            len(encoded), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += encoded
        count += 1
    cd_offset = len(out)
    out += central
    zip64_offset = len(out)
    out += struct.pack(
        "<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 0x2D, 0, 0, count, count, len(central), cd_offset
    )
    out += struct.pack("<IIQI", 0x07064B50, 0, zip64_offset, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), cd_offset, 0)
    return bytes(out)
