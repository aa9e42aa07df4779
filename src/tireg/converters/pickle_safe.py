"""A pickle reader that executes nothing: an allow-list of globals, each mapped to our own stand-in.

Why this exists: ``.pt``/``.bin``/``.ckpt`` files are pickles, and a pickle is a program that may
import and call anything (``os.system``, ``builtins.exec``, ...). Scanners that deny known-bad
names keep being bypassed (perf-security.md §5.2); we do the opposite. Every global a pickle asks
for is looked up in :data:`ALLOWED`; anything else raises :class:`UnsafePickleError` naming it,
*before* anything is called. An allowed name never resolves to the real library object (torch is
never imported): it resolves to a stand-in defined here that only validates its arguments and builds
inert records (:class:`StorageRef`, :class:`TensorStub`, :class:`ModuleStub`). Turning those
records into numpy arrays is :mod:`tireg.converters.torch_file`'s job, after unpickling has ended.

The allow-list, and which real files need each entry:

* ``torch._utils._rebuild_tensor_v2``: every tensor torch >= 1.0 writes;
  ``_rebuild_tensor``: tensors in torch 0.4-era legacy files;
  ``_rebuild_tensor_v3`` with ``torch.storage.UntypedStorage``: dtypes without a legacy storage
  class (float8 checkpoints, torch >= 2.1);
* ``torch._utils._rebuild_parameter`` (and ``_with_state``): ``nn.Parameter``, as in original
  rinongal files and Parameters carrying Python attributes;
* ``torch.<X>Storage`` (Float, Half, BFloat16, Double, Long, Int, Short, Char, Byte, Bool,
  ComplexFloat, ComplexDouble): the storage type inside each persistent id;
* ``torch.<dtype>`` (float32, float16, bfloat16, float8_*, ...): v3's dtype argument;
* ``collections.OrderedDict``: state dicts and the empty backward-hook dict of every tensor;
* ``torch.nn.modules.container.ParameterDict``: the original textual-inversion format;
* ``builtins.set``: the ``_non_persistent_buffers_set`` inside a pickled module;
* ``builtins.object`` and ``copyreg._reconstructor``: modules pickled with protocol 0 or 1;
* ``_codecs.encode`` and ``builtins.bytes``: ``bytes`` values under protocol 2;
* ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``: a dict key inside the
  ``callbacks`` of SD ``.ckpt`` files (needed for checkpoint family detection);
* ``numpy.dtype``, ``numpy.core.multiarray.scalar``: numpy scalars (a Lightning callback's
  ``best_model_score``, training counters) in SD ``.ckpt`` files; only plain number and bool dtypes
  (:data:`NUMPY_DTYPE_SIZES`) in numpy's own pickled form, and an object dtype (``'O'``), the way
  numpy pickles arbitrary Python objects, is refused as unsafe;
* ``numpy.core.multiarray._reconstruct`` with ``numpy.ndarray`` as its class argument (and nothing
  else): small numpy arrays in the same files; their ``BUILD`` state must hold raw bytes of
  exactly the size the shape and dtype imply.

``numpy._core.multiarray`` (numpy >= 2) and Python 2 spellings (``__builtin__``, ``copy_reg``) are
accepted for the same names. numpy's own unpickling code is never called: the numpy stand-ins only
validate and record, and :mod:`tireg.converters.torch_file` builds fresh values from the bytes.

Other ways a pickle can reach objects are closed too:

* ``EXT1/EXT2/EXT4`` (the copyreg extension registry, whose cache the C unpickler consults *without*
  calling ``find_class``) are refused by a static pre-scan of the opcode stream (:func:`scan`);
* stand-ins are instances of :class:`Global` (slots, no ``__dict__``, ``__setattr__`` refused) or
  classes of the :class:`_Sealed` metaclass, so ``BUILD`` cannot re-bind attributes on them and a
  later load in the same process sees the same allow-list;
* the records stand-ins return refuse ``BUILD`` (:class:`StorageRef`, :class:`TensorStub`,
  :class:`NumpyScalar`) or take exactly one validated state (:class:`ModuleStub`,
  :class:`NumpyDType`, :class:`NumpyArray`), so a pickle cannot rewrite a tensor's checked
  strides after the fact (frozen slotted dataclasses otherwise get a ``__setstate__`` that
  rebinds every field);
* ``persistent_load`` accepts only torch's ``('storage', <storage type>, key, location, numel[,
  view])`` tuples and returns a record; no bytes are read here;
* memo indices are bounded, so ``LONG_BINPUT 0xFFFFFFFF`` cannot make the unpickler allocate
  gigabytes for its memo table, and tuple nesting is bounded (see :class:`_StackModel`), so a
  crafted dict key cannot crash the interpreter;
* dict keys and set elements may not be tuples or ints beyond 64 bits (again
  :class:`_StackModel`, and the ``OrderedDict``/``set`` stand-ins): those are the only values a
  pickle can give chosen, equal hashes, which makes building a dict of 100,000 of them quadratic;
* what a pickle can make is counted against one :class:`Budget` per file: every opcode is
  charged statically by :func:`scan` (an upper bound of the object it can create), and every
  call of an allowed stand-in dynamically by the size of what it returned, so calling
  ``_codecs.encode`` or ``OrderedDict`` thousands of times on one memoised megabyte is refused
  before the memory is spent. :mod:`tireg.converters.torch_file` charges the tensors it builds to
  the same budget, after widening.

Nearly every embedding's ``data.pkl`` is one of two byte layouts (a diffusers
``learned_embeds.bin``, an A1111 ``.pt``); :func:`unpickle_layout` recognises those whole with
one regular expression and builds their objects through the same stand-ins, with the same
checks and charges, without the scan and the C unpickler (a fifth of reading such a file).
Anything else is left to :func:`unpickle`.

Whatever goes wrong inside the unpickler surfaces as :class:`EmbeddingFileError` (the input is
untrusted, so every failure is the file's fault); ``UnsafePickleError`` is one of those.
"""

from __future__ import annotations

import contextlib
import contextvars
import copyreg
import io
import pickle
import pickletools
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from tireg.converters.errors import EmbeddingFileError, UnsafePickleError
from tireg.converters.limits import MAX_DIMS
from tireg.files import MAX_FILE_BYTES

#: Python 2 module names that protocol-0..2 pickles use, mapped to their Python 3 names.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

#: torch legacy storage class name -> (dtype name, bytes per element)
STORAGE_TYPES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("float32", 4),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "DoubleStorage": ("float64", 8),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
    "ComplexFloatStorage": ("complex64", 8),
    "ComplexDoubleStorage": ("complex128", 16),
}

#: torch dtype name -> bytes per element (the dtypes a ``torch.<name>`` global may name)
DTYPE_SIZES: dict[str, int] = {
    **{dtype: size for dtype, size in STORAGE_TYPES.values()},
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
}

#: numpy dtype codes, as ``numpy.dtype.__reduce__`` spells them, that a pickle may name → itemsize
NUMPY_DTYPE_SIZES: dict[str, int] = {
    "b1": 1,
    "i1": 1,
    "u1": 1,
    "i2": 2,
    "u2": 2,
    "f2": 2,
    "i4": 4,
    "u4": 4,
    "f4": 4,
    "i8": 8,
    "u8": 8,
    "f8": 8,
    "c8": 8,
    "c16": 16,
}

_MEMO_SLACK = 1024  # memo indices may run this far ahead of the PUTs seen so far
MAX_TUPLE_DEPTH = 100  # torch nests tuples 2 deep (persistent id inside the rebuild arguments)
#: what decoding one file may make Python allocate: its objects, and its tensors once widened
#: to what the reader returns (4x an embedding file's cap: bf16 widens 2x, and room to spare)
MAX_DECODED_BYTES = 4 * MAX_FILE_BYTES


#: bytes charged per opcode on top of its size: the most one Python object (an empty dict, a
#: boxed number, a container slot) costs beyond the bytes it was decoded from
_OPCODE_COST = 64
#: a str's characters may take 4 bytes each (one astral character widens the whole string)
_CHAR_COST = 4


def _fail(message: str) -> NoReturn:
    raise EmbeddingFileError(message)


class Budget:
    """The bytes decoding one file may still produce; :meth:`charge` refuses past the limit.

    One per file (a legacy torch file's five pickles share it), so the total a hostile file can
    make Python allocate is bounded, however its parts are arranged.
    """

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def charge(self, size: int, what: str, *subject: object) -> None:
        """Spend ``size`` bytes on ``what`` (a ``str.format`` template when ``subject`` is
        given: the message is built only for a refusal, never per charge)."""
        self.left -= size
        if self.left < 0:
            if subject:
                what = what.format(*subject)
            _fail(f"decoding would take more than {self.limit:,} bytes ({what})")


#: the budget of the unpickling in progress, charged by the stand-ins' calls
_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("budget", default=None)


def _footprint(value: Any) -> int:
    """An upper bound of the memory a stand-in's result holds beyond what it was given."""
    kind = type(value)
    if kind is bytes:
        return _OPCODE_COST + len(value)
    if kind in (dict, set, list, tuple):
        return _OPCODE_COST + 2 * _OPCODE_COST * len(value)
    return _OPCODE_COST


def _safe_key(value: Any) -> bool:
    """Whether ``value`` may be a dict key or set element: anything but a tuple, frozenset or an
    int beyond 64 bits, the values whose hashes a pickle can choose to collide."""
    kind = type(value)
    if kind is int:
        return -(2**63) <= value < 2**63
    return kind not in (tuple, frozenset)


def _safe_keys(values: Any, what: str) -> None:
    if not all(_safe_key(v) for v in values):
        _fail(f"the pickle uses a tuple or a huge int as a key of {what}")


def describe_error(exc: BaseException) -> str:
    """A short, safe description of an exception raised while decoding untrusted input.

    ``str(exc)`` may embed the repr of a value the attacker built (huge, or nested deeply enough
    to raise ``RecursionError`` itself), so it is computed defensively and cut short.
    """
    try:
        text = str(exc)
    except Exception:  # the message itself is hostile; the type is enough
        text = ""
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_int(value: object) -> bool:
    return type(value) is int


def _dims(value: Any, what: str) -> tuple[int, ...]:
    """A shape or stride: a tuple of at most :data:`MAX_DIMS` non-negative ints."""
    if type(value) is not tuple:
        _fail(f"{what} must be a tuple of non-negative ints")
    for d in value:  # a plain loop: no generator and no call per dimension (read per tensor)
        if type(d) is not int or d < 0:
            _fail(f"{what} must be a tuple of non-negative ints")
    if len(value) > MAX_DIMS:
        _fail(f"{what} has {len(value)} dimensions")
    return value


def _refuse_build(self: object, state: object) -> None:
    """``__setstate__`` of the frozen records: without it, a slotted frozen dataclass gets one
    that re-binds every field, and a ``BUILD`` could undo the checks its constructor made."""
    _fail(f"the pickle tries to change a {type(self).__name__} after it was built")


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage named by a persistent id: ``numel`` elements of ``dtype``, found under ``key``.

    ``start``/``length`` describe the visible window; they differ from ``0``/``numel`` only for the
    storage views of very old legacy files. ``numel`` is always the whole storage's element count.
    """

    key: str
    dtype: str
    itemsize: int
    numel: int
    start: int = 0
    length: int = -1

    __setstate__ = _refuse_build

    @property
    def visible(self) -> int:
        return self.numel if self.length < 0 else self.length


@dataclass(frozen=True, slots=True)
class TensorStub:
    """A tensor as the pickle describes it; nothing is read. Strides and offset are in elements."""

    storage: StorageRef
    dtype: str
    itemsize: int
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    __setstate__ = _refuse_build


class Global:
    """An allowed global: a name and the safe function that stands in for it.

    Instances have no ``__dict__`` and refuse attribute assignment, so a ``BUILD`` opcode aimed at
    a stand-in fails instead of changing it for every later load.
    """

    __slots__ = ("_call", "name")
    name: str
    _call: Callable[..., Any] | None

    def __init__(self, name: str, call: Callable[..., Any] | None = None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_call", call)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{self.name} is read-only")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{self.name} is read-only")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._call is None or kwargs:
            _fail(f"the pickle calls {self.name}, which is not callable that way")
        result = self._call(*args)
        budget = _BUDGET.get()
        if budget is not None:
            budget.charge(_footprint(result), "calls of {}", self.name)
        return result

    def __repr__(self) -> str:
        return f"<stand-in {self.name}>"


class StorageType(Global):
    """``torch.FloatStorage`` and friends: only ever an element of a persistent id."""

    __slots__ = ("dtype", "itemsize")
    dtype: str
    itemsize: int

    def __init__(self, name: str, dtype: str, itemsize: int) -> None:
        super().__init__(name)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "itemsize", itemsize)


class DType(Global):
    """``torch.float32`` and friends."""

    __slots__ = ("dtype",)
    dtype: str

    def __init__(self, dtype: str) -> None:
        super().__init__(f"torch.{dtype}")
        object.__setattr__(self, "dtype", dtype)


class _Sealed(type):
    """Metaclass of the class stand-ins: their attributes cannot be re-bound by a pickle."""

    def __setattr__(cls, key: str, value: object) -> None:
        raise AttributeError(f"{cls.__name__} is read-only")

    def __delattr__(cls, key: str) -> None:
        raise AttributeError(f"{cls.__name__} is read-only")


class _Built:
    """A record whose state arrives through exactly one ``BUILD``, checked by :meth:`_check`.

    Attributes cannot be assigned otherwise, and a second ``BUILD`` is refused, so what the
    converter reads is what was checked. ``state`` is ``None`` until the ``BUILD``.
    """

    __slots__ = ("state",)
    state: Any

    def __new__(cls, *args: Any) -> Any:
        # ``__new__``, not ``__init__``: the NEWOBJ opcode calls only ``__new__``
        self = object.__new__(cls)
        object.__setattr__(self, "state", None)
        return self

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __setstate__(self, state: Any) -> None:
        if self.state is not None:
            _fail(f"the pickle gives a {type(self).__name__} its state twice")
        object.__setattr__(self, "state", self._check(state))

    def _check(self, state: Any) -> Any:
        """Validate the ``BUILD`` state; return what to keep (never ``None``)."""
        raise NotImplementedError


class ModuleStub(_Built, metaclass=_Sealed):
    """Stands in for ``torch.nn.ParameterDict``: ``NEWOBJ`` makes one, ``BUILD`` gives its state.

    Only the state dict is kept; :mod:`torch_file` turns ``state['_parameters']`` into a dict.
    """

    __slots__ = ()
    state: dict[str, Any] | None

    def __new__(cls, *args: Any) -> ModuleStub:
        if cls is not ModuleStub:
            _fail("bad ParameterDict construction")
        stub: ModuleStub = super().__new__(cls)
        return stub

    def __init__(self, *args: Any) -> None:
        """Arguments (none from torch) are ignored; the state arrives through ``BUILD``."""

    def _check(self, state: Any) -> dict[str, Any]:
        if type(state) is not dict:
            _fail("ParameterDict state must be one dict")
        return state


class NumpyDType(_Built):
    """``numpy.dtype(code, align, copy)``; its ``BUILD`` state gives the byte order.

    Only the exact state numpy writes for a plain number or bool dtype is accepted:
    ``(3, byteorder, None, None, None, -1, -1, 0)`` (no subarray, fields, or flags).
    """

    __slots__ = ("code",)
    code: str
    state: str | None

    def __init__(self, code: str) -> None:
        object.__setattr__(self, "code", code)

    @property
    def itemsize(self) -> int:
        return NUMPY_DTYPE_SIZES[self.code]

    @property
    def descr(self) -> str:
        """The dtype as numpy's ``dtype.str`` spells it, e.g. ``'<f8'``; the dtype must be built."""
        if self.state is None:
            _fail("numpy dtype used before its state was given")
        return self.state + self.code

    def _check(self, state: Any) -> str:
        if type(state) is not tuple or len(state) != 8:
            _fail("numpy dtype state must be numpy's 8-tuple")
        version, order, subarray, names, fields, elsize, alignment, flags = state
        if not all(_is_int(v) for v in (version, elsize, alignment, flags)) or version != 3:
            _fail("numpy dtype state has an unknown version or bad numbers")
        if (subarray, names, fields, elsize, alignment, flags) != (None, None, None, -1, -1, 0):
            _fail(f"numpy dtype {self.code!r} with fields, subarrays or flags is not supported")
        if order not in (("|",) if self.itemsize == 1 else ("<", ">")):
            _fail(f"numpy dtype {self.code!r} has a bad byte order")
        return str(order)


@dataclass(frozen=True, slots=True)
class NumpyScalar:
    """A numpy scalar: its dtype (``'<f8'``) and exactly ``itemsize`` raw bytes."""

    descr: str
    data: bytes

    __setstate__ = _refuse_build


@dataclass(frozen=True, slots=True)
class ArrayData:
    """A numpy array's checked ``BUILD`` state: ``len(data)`` is exactly numel × itemsize."""

    shape: tuple[int, ...]
    descr: str
    fortran: bool
    data: bytes

    __setstate__ = _refuse_build


class NumpyArray(_Built):
    """``_reconstruct(numpy.ndarray, (0,), b'b')``; ``BUILD`` then gives
    ``(1, shape, dtype, is_fortran, raw bytes)``. Object arrays (whose data is a list of
    arbitrary pickled objects) never get here: their dtype is refused."""

    __slots__ = ()
    state: ArrayData | None

    def _check(self, state: Any) -> ArrayData:
        if type(state) is not tuple or len(state) != 5:
            _fail("numpy array state must be numpy's 5-tuple")
        version, shape, dtype, fortran, data = state
        if not _is_int(version) or version != 1:
            _fail("numpy array state has an unknown version")
        shape = _dims(shape, "numpy array shape")
        if type(dtype) is not NumpyDType or type(fortran) is not bool:
            _fail("numpy array state needs a numpy dtype and a bool order flag")
        if type(data) is not bytes:
            _fail("numpy array data must be raw bytes")
        numel = 1
        for d in shape:
            numel *= d
        if numel * dtype.itemsize != len(data):
            _fail(f"numpy array {list(shape)} of {dtype.descr} does not hold {len(data)} bytes")
        return ArrayData(shape, dtype.descr, fortran, data)


def _tensor(
    storage: Any, offset: Any, shape: Any, stride: Any, dtype: str | None = None
) -> TensorStub:
    """Validate a tensor's view of its storage, so every later read stays inside it."""
    if not isinstance(storage, StorageRef):
        _fail("tensor storage is not a persistent storage reference")
    if not _is_int(offset) or offset < 0:
        _fail("tensor storage offset must be a non-negative int")
    shape, stride = _dims(shape, "tensor shape"), _dims(stride, "tensor stride")
    if len(shape) != len(stride):
        _fail(f"tensor has {len(shape)} sizes and {len(stride)} strides")
    if dtype is None:
        dtype, itemsize, extent_unit = storage.dtype, storage.itemsize, storage.itemsize
    else:  # v3: an untyped (byte) storage viewed as ``dtype``
        itemsize = DTYPE_SIZES[dtype]
        extent_unit = itemsize
    numel = 1
    for d in shape:
        numel *= d
    last = offset + sum((d - 1) * s for d, s in zip(shape, stride, strict=True)) if numel else 0
    available = storage.visible * storage.itemsize // extent_unit
    if (numel and last >= available) or offset > available:
        _fail(f"tensor {list(shape)} at offset {offset} reaches outside its storage")
    return TensorStub(storage, dtype, itemsize, offset, tuple(shape), tuple(stride))


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    shape: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> TensorStub:
    if type(requires_grad) is not bool:
        _fail("tensor requires_grad must be a bool")
    return _tensor(storage, offset, shape, stride)


def _rebuild_tensor_v3(
    storage: Any,
    offset: Any,
    shape: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> TensorStub:
    if not isinstance(dtype, DType) or not isinstance(storage, StorageRef):
        _fail("tensor dtype must be a torch dtype over an untyped storage")
    if storage.dtype != "uint8":
        _fail("tensor v3 needs an untyped storage")
    return _tensor(storage, offset, shape, stride, dtype.dtype)


def _rebuild_tensor(storage: Any, offset: Any, shape: Any, stride: Any) -> TensorStub:
    return _tensor(storage, offset, shape, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, *state: Any) -> Any:
    """A Parameter is its tensor (``_rebuild_parameter_with_state`` adds one state argument)."""
    if not isinstance(data, TensorStub) or len(state) > 1:
        _fail("a Parameter must wrap one tensor")
    return data


def _ordered_dict(*args: Any) -> dict[Any, Any]:
    """OrderedDict → dict (dicts keep insertion order); protocol 0/1 pass a list of pairs."""
    if not args:
        return {}
    if len(args) != 1 or type(args[0]) not in (list, tuple, dict):
        _fail("bad OrderedDict arguments")
    items = args[0]
    if type(items) is not dict:
        if not all(type(pair) in (list, tuple) and len(pair) == 2 for pair in items):
            _fail("OrderedDict items must be pairs")
        _safe_keys((pair[0] for pair in items), "an OrderedDict")
    return dict(items)


def _set(*args: Any) -> set[Any]:
    if not args:
        return set()
    if len(args) != 1 or type(args[0]) not in (list, tuple):
        _fail("bad set arguments")
    _safe_keys(args[0], "a set")
    return set(args[0])


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Protocol 2 stores ``bytes`` as ``_codecs.encode(text, 'latin1')``."""
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        _fail("_codecs.encode is only allowed as protocol 2's latin-1 bytes encoding")
    return text.encode("latin-1")


def _bytes(*args: Any) -> bytes:
    if args:
        _fail("bytes() is only allowed without arguments (protocol 2's empty bytes)")
    return b""


_OBJECT = Global("builtins.object")
_NDARRAY = Global("numpy.ndarray")


def _reconstructor(cls: Any, base: Any, state: Any) -> ModuleStub:
    """Protocol 0/1 build objects as ``copyreg._reconstructor(cls, object, None)``."""
    if cls is not ModuleStub or base is not _OBJECT or state is not None:
        _fail("copyreg._reconstructor is only allowed for ParameterDict")
    return ModuleStub()


def _numpy_dtype(code: Any, align: Any = False, copy: Any = True) -> NumpyDType:
    """``numpy.dtype(code, align, copy)`` as numpy pickles a dtype; plain number and bool codes."""
    if type(code) is not str or len(code) > 8 or type(align) is not bool or type(copy) is not bool:
        _fail("bad numpy.dtype arguments")
    if code.startswith("O"):  # an object array or scalar: numpy's vehicle for arbitrary objects
        raise UnsafePickleError(f"numpy.dtype({code!r})")
    if code not in NUMPY_DTYPE_SIZES:
        _fail(f"numpy dtype {code!r} is not supported (only plain numbers and bool)")
    return NumpyDType(code)


def _numpy_scalar(dtype: Any, data: Any = None) -> NumpyScalar:
    """``numpy.core.multiarray.scalar(dtype, raw bytes)``: one value's bytes, checked for size."""
    if type(dtype) is not NumpyDType or type(data) is not bytes:
        _fail("numpy scalar needs a numpy dtype and raw bytes")
    if len(data) != dtype.itemsize:
        _fail(f"numpy scalar of {dtype.descr} holds {len(data)} bytes")
    return NumpyScalar(dtype.descr, data)


def _numpy_reconstruct(cls: Any, shape: Any, typecode: Any) -> NumpyArray:
    """``_reconstruct(numpy.ndarray, (0,), b'b')``: an empty array the ``BUILD`` then fills."""
    if cls is not _NDARRAY:
        _fail("numpy's _reconstruct is only allowed for numpy.ndarray")
    if type(shape) is not tuple or shape != (0,) or typecode not in (b"b", "b"):
        _fail("bad numpy _reconstruct arguments")
    return NumpyArray()


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("collections", "OrderedDict"): _ordered_dict,
        ("builtins", "set"): _set,
        ("builtins", "bytes"): _bytes,
        ("_codecs", "encode"): _codecs_encode,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("numpy", "dtype"): _numpy_dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "scalar")] = _numpy_scalar
        table[(module, "_reconstruct")] = _numpy_reconstruct
    out: dict[tuple[str, str], Any] = {key: Global(".".join(key), fn) for key, fn in table.items()}
    out[("builtins", "object")] = _OBJECT
    out[("numpy", "ndarray")] = _NDARRAY
    out[("torch.nn.modules.container", "ParameterDict")] = ModuleStub
    lightning = ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    out[lightning] = Global(".".join(lightning))
    for cls, (dtype, size) in STORAGE_TYPES.items():
        out[("torch", cls)] = StorageType(f"torch.{cls}", dtype, size)
    out[("torch.storage", "UntypedStorage")] = StorageType("torch.UntypedStorage", "uint8", 1)
    for dtype in DTYPE_SIZES:
        out[("torch", dtype)] = DType(dtype)
    return out


#: (module, name) → stand-in. Module names are the Python 3 spelling.
ALLOWED: dict[tuple[str, str], Any] = _allowed()


#: ``GLOBAL``'s argument, ``module\nname``, of each allowed global as Python 3 spells it
_ALLOWED_SPELLINGS = frozenset(f"{module}\n{name}".encode() for module, name in ALLOWED)


def _resolve(module: str, name: str) -> Any:
    stand_in = ALLOWED.get((_PY2_MODULES.get(module, module), name))
    if stand_in is None:
        raise UnsafePickleError(f"{module}.{name}")
    return stand_in


def _storage_ref(pid: Any) -> StorageRef:
    """Validate torch's persistent id ``('storage', type, key, location, numel[, view])``."""
    if type(pid) is not tuple or len(pid) not in (5, 6) or pid[0] != "storage":
        _fail("unsupported persistent id (not a torch storage)")
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, StorageType):
        _fail("persistent id does not name a torch storage type")
    if type(key) is not str or not 0 < len(key) <= 64 or type(location) is not str:
        _fail("persistent id has a bad storage key or location")
    if not _is_int(numel) or numel < 0:
        _fail("persistent id has a bad element count")
    view = pid[5] if len(pid) == 6 else None
    if view is None:
        return StorageRef(key, storage_type.dtype, storage_type.itemsize, numel)
    # legacy storage view: (view_key, offset, size) inside the root storage ``key``
    if (
        type(view) is not tuple
        or len(view) != 3
        or not all(_is_int(v) and v >= 0 for v in view[1:])
        or view[1] + view[2] > numel
    ):
        _fail("persistent id has a bad storage view")
    return StorageRef(key, storage_type.dtype, storage_type.itemsize, numel, view[1], view[2])


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals and persistent ids resolve only to inert stand-ins.

    Every storage reference met is also recorded in ``storages`` (by key), so a legacy file's
    storage records, which follow the pickles, can be sized without walking the object.
    """

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, StorageRef]) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        return _resolve(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple and len(pid) == 4 and pid[0] == "module":
            # legacy format: a module class is saved as ('module', cls, source_file, source)
            if pid[1] is not ModuleStub:
                _fail("legacy module reference to something other than ParameterDict")
            return ModuleStub
        ref = _storage_ref(pid)
        seen = self.storages.setdefault(ref.key, ref)
        if (seen.itemsize, seen.numel) != (ref.itemsize, ref.numel):
            _fail(f"storage {ref.key!r} is named with two different sizes")
        return ref


def _opcode_table() -> list[_Opcode | None]:
    """Opcode byte → how :func:`_check_opcodes` steps over it (``None``: no such opcode).

    ``layout`` is pickletools' ``ArgumentDescriptor.n`` (a byte count, or one of its
    ``UP_TO_NEWLINE``/``TAKEN_FROM_ARGUMENT*`` codes), except ``GLOBAL``/``INST``, whose argument
    is two lines (:data:`_TWO_LINES`). For a length-prefixed argument, ``width`` and ``signed``
    describe its length prefix; for a fixed one, ``signed`` says how to read it as an int, which
    is done only for the opcodes whose argument a check looks at (``role`` :data:`_ROLE_INT` and
    up). A 256-entry list indexed by the byte, not a dict of pickletools objects: the scan looks
    an opcode up once per opcode, and that lookup is most of what it costs.
    """
    prefixes = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
    }
    roles = {
        **dict.fromkeys(_TUPLE_BUILDERS, _ROLE_TUPLE),
        "GLOBAL": _ROLE_GLOBAL,
        "INST": _ROLE_GLOBAL,
        "STOP": _ROLE_STOP,
        "STRING": _ROLE_ESCAPED,
        "MEMOIZE": _ROLE_MEMOIZE,
        **dict.fromkeys(_GETS, _ROLE_GET),
        **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _ROLE_PUT),
        **dict.fromkeys(_EXTS, _ROLE_EXT),
    }
    table: list[_Opcode | None] = [None] * 256
    for op in pickletools.opcodes:
        if op.arg is None:
            layout = 0
        elif op.arg.name == "stringnl_noescape_pair":
            layout = _TWO_LINES
        else:
            layout = op.arg.n
        width, signed = prefixes.get(layout, (0, op.name == "EXT4"))
        table[ord(op.code)] = (op.name, layout, width, signed, roles.get(op.name, _ROLE_PLAIN))
    return table


_TWO_LINES = -100
_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"))
_GETS = frozenset(("GET", "BINGET", "LONG_BINGET"))
_EXTS = frozenset(("EXT1", "EXT2", "EXT4"))
_TUPLE_BUILDERS = frozenset(("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "FROZENSET"))
#: what a check does with an opcode; from :data:`_ROLE_INT` on, its argument is read as an int
#: (for ``_ROLE_GET`` only when the stack model runs: nothing else looks at it)
_ROLE_PLAIN, _ROLE_TUPLE, _ROLE_GLOBAL, _ROLE_STOP, _ROLE_MEMOIZE, _ROLE_ESCAPED = range(6)
_ROLE_INT = _ROLE_GET = 6
_ROLE_PUT, _ROLE_EXT = 7, 8
#: (name, layout, width, signed, role), see :func:`_opcode_table`
_Opcode = tuple[str, int, int, bool, int]
_OPCODES = _opcode_table()
_BINPUT = pickle.BINPUT[0]


def _skip_table() -> list[int]:
    """Opcode byte → its length when :func:`_check_opcodes` may step over it unread: positive
    for an opcode with a fixed-size argument no check looks at, negative for one it only counts
    (``BINPUT``, whose one-byte index is always in range, and the tuple builders); 0 otherwise."""
    skips = [0] * 256
    for code, entry in enumerate(_OPCODES):
        if entry is None or entry[1] < 0:
            continue
        name, layout, _, _, role = entry
        if role in (_ROLE_PLAIN, _ROLE_GET):
            skips[code] = 1 + layout
        elif name == "BINPUT" or role == _ROLE_TUPLE:
            skips[code] = -(1 + layout)
    return skips


_SKIPS = _skip_table()
_NO_SKIPS = [0] * 256


def _prefixed_table() -> list[int]:
    """Opcode byte → the width of its unsigned length prefix, for the opcodes whose
    length-prefixed argument (a str, bytes, a ``LONG1``) no check reads, which
    :func:`_check_opcodes` may then step over in its short loop too; 0 for every other opcode
    (``BINSTRING`` and ``LONG4`` among them: their prefix is signed, and a negative one is an
    error the full step names)."""
    unsigned = {
        pickletools.TAKEN_FROM_ARGUMENT1,
        pickletools.TAKEN_FROM_ARGUMENT4U,
        pickletools.TAKEN_FROM_ARGUMENT8U,
    }
    widths = [0] * 256
    for code, entry in enumerate(_OPCODES):
        if entry is not None and entry[1] in unsigned and entry[4] == _ROLE_PLAIN:
            widths[code] = entry[2]
    return widths


_PREFIXED = _prefixed_table()


def _quick_table() -> list[int]:
    """Opcode byte → how :func:`_quick_opcodes` steps over it: its whole length (positive) for
    an opcode with a fixed-size argument that needs no check in a small pickle (the plain ones,
    the ``GET``s, ``BINPUT`` and the tuple builders), minus the width of its length prefix
    (negative) for a str or bytes argument (:data:`_PREFIXED`), 0 for every other opcode."""
    table = [0] * 256
    for code, (skip, width) in enumerate(zip(_SKIPS, _PREFIXED, strict=True)):
        table[code] = abs(skip) if skip else -width
    return table


_QUICK = _quick_table()
_GLOBAL, _STOP = pickle.GLOBAL[0], pickle.STOP[0]
#: the tuple-building opcodes' bytes (``TUPLE``, ``TUPLE1``-``TUPLE3``, ``FROZENSET``)
_TUPLE_BYTES = bytes(code for code, entry in enumerate(_OPCODES) if entry and entry[4] == 1)


class _StackModel:
    """Follows the unpickler's stack statically, tracking what could make ``hash()`` misbehave.

    Each stack entry is a tuple nesting depth (``0`` for every other value), or :data:`_HUGE`
    for an int beyond 64 bits. Why:

    * ``hash()`` of a tuple recurses in C without a recursion guard, so a key made of 200,000
      nested ``TUPLE1`` (200 KB of pickle) crashes the interpreter with a segfault inside
      ``SETITEM``, before any Python code of ours could react. Tuples and frozensets are
      immutable, so their nesting is fixed when they are built and can be computed from the
      opcodes alone.
    * a dict or set whose keys all share one hash takes quadratic time to build: 100,000 ints
      ``k * (2**61 - 1)`` (or tuples of chosen ints) take minutes inside one ``SETITEMS``. Only
      tuples and huge ints can be given chosen hashes (str and bytes hashes are salted per
      process), and no torch file uses them as keys, so the opcodes that build dicts and sets
      refuse them as keys.
    """

    _MARK = -1
    _HUGE = -2
    _KEEPS_CONTAINER = frozenset(("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"))
    #: opcodes that hash what they pop: (values between the mark, or after the container, that
    #: are keys: every second one from the top, or all)
    _KEYED: ClassVar[dict[str, int]] = {
        "SETITEM": 2,
        "SETITEMS": 2,
        "DICT": 2,
        "ADDITEMS": 1,
        "FROZENSET": 1,
    }

    def __init__(self) -> None:
        self.stack: list[int] = []
        self.memo: dict[int, int] = {}

    def step(self, name: str, arg: Any, size: int) -> None:
        stack = self.stack
        # the opcodes most pickles consist of, first and cheaply
        if name in _PLAIN_PUSHES:
            stack.append(0)
            return
        if name in _GETS:
            stack.append(self.memo.get(arg, 0))
            return
        if name == "MARK":
            stack.append(self._MARK)
            return
        if name in _PUTS:
            if not stack or stack[-1] == self._MARK:
                _fail("pickle memoizes an empty stack")
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = stack[-1]
            return
        marked, pops, pushes = _SHAPES[name]
        popped: list[int] = []
        if marked:
            while stack and stack[-1] != self._MARK:
                popped.append(stack.pop())
            if not stack:
                _fail("pickle pops a mark that was never pushed")
            stack.pop()
        for _ in range(pops):
            if not stack or stack[-1] == self._MARK:
                _fail("pickle stack underflow")
            popped.append(stack.pop())
        every = self._KEYED.get(name)
        if every is not None:
            # SETITEM pops (value, key, dict); the others pop their marked items, top first
            keys = popped[1::every] if every == 2 else popped[: len(popped) - pops]
            if any(k != 0 for k in keys):
                _fail("the pickle uses a tuple or a huge int as a dict key or set element")
        depth = 0
        if name in _TUPLE_BUILDERS:
            depth = 1 + max((d for d in popped if d > 0), default=0)
            if depth > MAX_TUPLE_DEPTH:
                _fail(f"pickle nests tuples more than {MAX_TUPLE_DEPTH} deep")
        elif name in _GETS:
            depth = self.memo.get(arg, 0)
        elif name == "DUP" or name in self._KEEPS_CONTAINER:
            depth = popped[-1]
        elif name in _HUGE_INTS and size > _HUGE_INTS[name]:
            depth = self._HUGE
        for is_mark in pushes:
            stack.append(self._MARK if is_mark else depth)


def _shapes() -> dict[str, tuple[bool, int, tuple[bool, ...]]]:
    """Opcode name -> (pops down to a mark, values popped below it, pushes (True: a mark))."""
    out: dict[str, tuple[bool, int, tuple[bool, ...]]] = {}
    for op in pickletools.opcodes:
        before = op.stack_before
        marked = pickletools.markobject in before
        if marked:
            before = before[: before.index(pickletools.markobject)]
        pushes = tuple(item is pickletools.markobject for item in op.stack_after)
        out[op.name] = (marked, len(before), pushes)
    return out


_SHAPES = _shapes()
#: int opcodes -> their largest size (opcode and argument) that still holds a 64-bit int
_HUGE_INTS = {"LONG1": 2 + 8, "LONG4": 5 + 8, "INT": 2 + 18, "LONG": 3 + 18}
#: opcodes that only push one value, never a tuple (strings, numbers, globals, empty containers)
_PLAIN_PUSHES = frozenset(
    name
    for name, (marked, pops, pushes) in _SHAPES.items()
    if not marked
    and not pops
    and pushes == (False,)
    and name not in _TUPLE_BUILDERS
    and name not in _GETS
    and name not in _HUGE_INTS
)


#: pickles up to this size skip the key check: their dicts cannot hold enough colliding keys
#: (one per 2 bytes at most) for building them to take more than a fraction of a second
_SMALL_PICKLE = 16 * 1024


def scan(data: bytes, start: int = 0, budget: Budget | None = None) -> tuple[int, bool]:
    """Walk the opcodes of the pickle at ``data[start:]`` without running it; return its end,
    and whether it holds protocol 0's escaped ``STRING`` (whose bad escapes make the unpickler
    warn: only such a pickle needs the warnings silenced, which costs more than a small load).

    Refuses statically what needs no execution to judge: a ``GLOBAL``/``INST`` outside the
    allow-list, any ``EXT`` opcode, memo indices far beyond the entries written so far, tuples
    nested deeper than :data:`MAX_TUPLE_DEPTH` and tuples or huge ints as dict keys (both by a
    simulation of the unpickler's stack, :class:`_StackModel`), and more objects than ``budget``
    allows (each opcode is charged the most its object can cost).

    The simulation costs more than the rest of the scan, and an embedding's pickle is a few
    hundred bytes, so it runs only where it can matter: alongside the scan for a pickle over
    :data:`_SMALL_PICKLE` bytes, and afterwards for a smaller one holding more tuple-building
    opcodes than :data:`MAX_TUPLE_DEPTH` (fewer cannot nest deeper: each level of nesting is a
    tuple built by an opcode of its own, and no opcode runs twice).
    """
    model = _StackModel() if len(data) - start > _SMALL_PICKLE else None
    worst = (_OPCODE_COST + _CHAR_COST) * (len(data) - start)
    if model is None and (budget is None or worst <= budget.left):
        quick = _quick_opcodes(data, start)
        if quick is not None:
            end, count = quick
            if budget is not None:
                budget.charge(
                    _OPCODE_COST * count + _CHAR_COST * (end - start),
                    "the objects its pickle builds",
                )
            return end, False
    try:
        end, tuples, escaped = _check_opcodes(data, start, budget, model)
        if model is None and tuples > MAX_TUPLE_DEPTH:
            _check_opcodes(data, start, None, _StackModel())
    except EmbeddingFileError:
        raise
    except Exception as exc:  # untrusted input: any parse failure is the file's
        raise EmbeddingFileError(f"corrupt pickle ({describe_error(exc)})") from None
    return end, escaped


def _quick_opcodes(data: bytes, start: int) -> tuple[int, int] | None:
    """The checks of :func:`scan` for the pickles embeddings hold, in a shorter loop: (end,
    opcodes) when the pickle at ``data[start:]`` uses only fixed-size opcodes, str and bytes
    with an unsigned length prefix, ``GLOBAL`` and ``STOP``, and holds at most
    :data:`MAX_TUPLE_DEPTH` tuple-building opcodes; ``None`` for anything else, which
    :func:`_check_opcodes` then judges (and words any failure) the long way.

    Why it may skip what :func:`_check_opcodes` does per opcode: with none of ``PUT``,
    ``LONG_BINPUT``, ``MEMOIZE`` or ``EXT`` (all sent the long way), no memo index can be out
    of range (``BINPUT``'s one byte is always within :data:`_MEMO_SLACK`) and nothing needs
    the memo count; and there can be no more tuple builders than the bytes that spell them,
    counted at C speed, so they need no count of their own unless a pickle has more opcodes
    than :data:`MAX_TUPLE_DEPTH`. Only the caller's budget check is left, which it makes on
    the count returned, as the long way does when it does not watch opcode by opcode.
    """
    table = _QUICK
    size = len(data)
    pos = start
    count = 0
    while pos < size:
        code = data[pos]
        step = table[code]
        count += 1
        if step > 0:
            pos += step
        elif step:  # a length prefix of -step bytes, then that many bytes
            begin = pos + 1 - step
            pos = begin + int.from_bytes(data[pos + 1 : begin], "little")
        elif code == _GLOBAL:
            first = data.find(b"\n", pos + 1)
            second = data.find(b"\n", first + 1) if first > 0 else -1
            if second < 0:
                return None
            # an allowed name as torch spells it is known by its bytes; any other is decoded
            # and judged as the long way judges it
            if data[pos + 1 : second] not in _ALLOWED_SPELLINGS:
                try:
                    module = data[pos + 1 : first].decode("utf-8")
                    name = data[first + 1 : second].decode("utf-8")
                except UnicodeDecodeError:
                    return None
                _resolve(module, name)
            pos = second + 1
        elif code == _STOP:
            pos += 1
            if count > MAX_TUPLE_DEPTH:
                body = data[start:pos]
                if len(body) - len(body.translate(None, _TUPLE_BYTES)) > MAX_TUPLE_DEPTH:
                    return None
            return pos, count
        else:
            return None
    return None  # cut short: the long way says where


def _check_opcodes(
    data: bytes, start: int, budget: Budget | None, model: _StackModel | None
) -> tuple[int, int, bool]:
    """The checks of :func:`scan`, with ``model`` stepped alongside when given; returns (end,
    tuple-building opcodes, whether a ``STRING`` was seen). A finding of the model is raised
    once every global was judged, so a refusal names the unsafe global whatever else is wrong.

    One loop over the opcodes, skipping each argument by the length rules the C unpickler
    follows and decoding only those a check reads: ``(module, name)`` for ``GLOBAL``/``INST``
    (UTF-8, as the C unpickler decodes them), an int for the memo and ``EXT`` opcodes. A
    truncated argument or an unknown opcode is a corrupt pickle. What the objects may cost is
    ``_OPCODE_COST`` per opcode plus ``_CHAR_COST`` per byte, summed once at the end; it is
    watched opcode by opcode only when the whole pickle could exceed what ``budget`` has left.
    """
    table = _OPCODES
    size = len(data)
    pos = start
    puts = tuples = count = 0
    escaped = False
    worst = (_OPCODE_COST + _CHAR_COST) * (size - start)  # every byte an opcode of its own
    watch = budget is not None and worst > budget.left
    # opcodes no check reads, stepped over in two lines, unless the model or the budget watch
    # wants to see each one
    fast = model is None and not watch
    skips = _SKIPS if fast else _NO_SKIPS
    prefixed = _PREFIXED if fast else _NO_SKIPS
    wrong: EmbeddingFileError | None = None
    while pos < size:  # a STOP breaks out; running off the end is the ``else`` below
        code = data[pos]
        skip = skips[code]
        if skip:
            count += 1
            if skip > 0:
                pos += skip
                continue
            pos -= skip
            if code == _BINPUT:  # a one-byte memo index cannot be out of range: only counted
                puts += 1
            else:
                tuples += 1
            continue
        width = prefixed[code]
        if width:  # a str or bytes argument: stepped over whole, unless it runs past the end
            end = pos + 1 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "little")
            if end <= size:
                count += 1
                pos = end
                continue
        entry = table[code]
        if entry is None:
            _fail(f"corrupt pickle (unknown opcode {code:#04x} at offset {pos})")
        name, layout, width, signed, role = entry
        began = pos
        pos += 1
        arg: Any = None
        if layout >= 0:
            end = pos + layout
            if role >= _ROLE_INT and end <= size and (role != _ROLE_GET or model is not None):
                arg = int.from_bytes(data[pos:end], "little", signed=signed)
        elif width:
            length = int.from_bytes(data[pos : pos + width], "little", signed=signed)
            if length < 0 or pos + width > size:
                _fail(f"corrupt pickle ({name} has a bad length)")
            end = pos + width + length
        else:
            end = data.find(b"\n", pos) + 1
            if end and layout == _TWO_LINES:
                first = data[pos : end - 1]
                pos, end = end, data.find(b"\n", end) + 1
                if end:
                    arg = (first.decode("utf-8"), data[pos : end - 1].decode("utf-8"))
            elif end and role >= _ROLE_INT:
                arg = int(data[pos : end - 1])
            if not end:
                _fail(f"corrupt pickle ({name} argument has no newline)")
        if end > size:
            _fail(f"corrupt pickle ({name} argument runs past the end)")
        pos = end
        count += 1
        if role == _ROLE_TUPLE:
            tuples += 1
        elif role == _ROLE_GLOBAL:
            _resolve(*arg)
        elif role == _ROLE_EXT:
            known = copyreg._inverted_registry.get(arg)  # type: ignore[attr-defined]
            raise UnsafePickleError(".".join(known) if known else f"copyreg extension code {arg}")
        elif role == _ROLE_PUT:
            if arg > puts + _MEMO_SLACK:
                _fail(f"pickle memo index {arg} is out of range")
            puts += 1
        elif role == _ROLE_MEMOIZE:
            puts += 1
        elif role == _ROLE_ESCAPED:
            escaped = True
        if model is not None:
            try:
                model.step(name, arg, end - began)
            except EmbeddingFileError as exc:
                wrong, model = exc, None
        if watch and budget is not None:
            cost = _OPCODE_COST * count + _CHAR_COST * (pos - start)
            if cost > budget.left:
                budget.charge(cost, "the objects its pickle builds")
        if role == _ROLE_STOP:
            break
    else:
        ends = "its last opcode runs past the end" if pos > size else "it has no STOP opcode"
        _fail(f"corrupt pickle ({ends})")
    if wrong is not None:
        raise wrong
    if budget is not None:
        budget.charge(
            _OPCODE_COST * count + _CHAR_COST * (pos - start), "the objects its pickle builds"
        )
    return pos, tuples, escaped


# --------------------------------------------------------- the layouts torch.save gives embeddings

#: an int as torch's pickler writes one: ``BININT1``, ``BININT2`` or ``BININT``
_INT = rb"(K.|M..|J....)"
#: one or two of those, then ``TUPLE1``/``TUPLE2`` and its ``BINPUT``: a shape or a stride
_DIMS = _INT + _INT + rb"?([\x85\x86])q."
#: a str, ``BINUNICODE`` and its ``BINPUT``: the length prefix and the characters, which
#: :func:`_text` checks against each other (the lazy match alone could stop short)
_STR = rb"X(....)(.*?)q."
#: ``_rebuild_tensor_v2((persistent id), offset, shape, stride, requires_grad, OrderedDict())``
#: exactly as torch >= 1.6 pickles a tensor the first time it meets one (module docstring of
#: :mod:`tireg.converters.torch_file`); groups: storage class, key, location, numel, offset,
#: shape (one or two ints), its tuple opcode, stride (likewise), its tuple opcode, requires_grad
_TENSOR = (
    rb"ctorch\._utils\n_rebuild_tensor_v2\nq.\(\(X\x07\x00\x00\x00storageq.ctorch\n(\w+)\nq."
    + _STR
    + _STR
    + _INT
    + rb"tq.Q"
    + _INT
    + _DIMS
    + _DIMS
    + rb"([\x88\x89])ccollections\nOrderedDict\nq.\)Rq.tq.Rq."
)
#: a diffusers / sd-concepts-library ``learned_embeds.bin``: ``{token: tensor}``
_DIFFUSERS = re.compile(rb"\x80\x02\}q." + _STR + _TENSOR + rb"s\.", re.DOTALL)
#: an A1111 ``.pt`` (``modules/textual_inversion/textual_inversion.py``,
#: ``Embedding.save``): ``{"string_to_token": {"*": 265}, "string_to_param": {"*": tensor},
#: "name", "step", "sd_checkpoint", "sd_checkpoint_name"}``; the second ``"*"`` is a ``BINGET``
#: of the first, whose memo slot the two ``BINPUT``s in between must not have re-bound
_A1111 = re.compile(
    rb"\x80\x02\}q.\(X\x0f\x00\x00\x00string_to_tokenq.\}q.X\x01\x00\x00\x00\*q(.)"
    + _INT
    + rb"sX\x0f\x00\x00\x00string_to_paramq(.)\}q(.)h(.)"
    + _TENSOR
    + rb"sX\x04\x00\x00\x00nameq."
    + _STR
    + rb"X\x04\x00\x00\x00stepq."
    + _INT
    + rb"X\r\x00\x00\x00sd_checkpointq.(N|"
    + _STR
    + rb")X\x12\x00\x00\x00sd_checkpoint_nameq.(N|"
    + _STR
    + rb")u\.",
    re.DOTALL,
)
#: the opcodes of each layout besides its shape's and stride's ints, with ``NONE`` for each
#: optional str (a str is one more: ``BINUNICODE`` and ``BINPUT``): what :func:`scan` counts
_TENSOR_OPCODES = 31
_DIFFUSERS_OPCODES = 5 + _TENSOR_OPCODES + 2
_A1111_OPCODES = 17 + _TENSOR_OPCODES + 16


def _int(token: bytes) -> int:
    """A ``BININT1``/``BININT2`` (unsigned) or ``BININT`` (signed) token's value."""
    if len(token) == 2:
        return token[1]
    return int.from_bytes(token[1:], "little", signed=token[0] == 0x4A)  # J: BININT


def _int_tuple(first: bytes, second: bytes | None, opcode: bytes) -> tuple[int, ...] | None:
    """The tuple one or two int tokens and their ``TUPLE1``/``TUPLE2`` make; ``None`` when the
    opcode takes another number of items (the long way then judges)."""
    if second is None:
        return (_int(first),) if opcode == b"\x85" else None
    return (_int(first), _int(second)) if opcode == b"\x86" else None


def _text(prefix: bytes, chars: bytes) -> str | None:
    """A ``BINUNICODE`` argument decoded as the C unpickler decodes it; ``None`` when the lazy
    match took other bytes than the prefix says (the long way then judges)."""
    if int.from_bytes(prefix, "little") != len(chars):
        return None
    try:
        return chars.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None


def unpickle_layout(data: bytes, budget: Budget) -> tuple[Any, dict[str, Any], str] | None:
    """What :func:`unpickle` would make of ``data`` (a zip's whole ``data.pkl``) when it is,
    opcode for opcode, one of the two layouts nearly every embedding's pickle has
    (:data:`_DIFFUSERS`, :data:`_A1111`): the object, and the dict and key its one tensor (a
    :class:`TensorStub`) sits under, every other value in it being plain already (str, None,
    ints of at most 32 bits, dicts of those). ``None`` for any other pickle, which
    :func:`unpickle` then scans and runs the long way.
    """
    if data[:2] != b"\x80\x02":
        return None
    token = _BUDGET.set(budget)
    try:
        return _layout(data, budget)
    finally:
        _BUDGET.reset(token)


def _layout(data: bytes, budget: Budget) -> tuple[Any, dict[str, Any], str] | None:
    """:func:`unpickle_layout`, with ``budget`` the one the stand-ins charge.

    Why: scanning and running a 200-byte pickle through the C unpickler and its Python
    callbacks costs a fifth of reading an embedding. A whole match of one regular expression
    settles the same questions: the match is the pickle's one opcode stream (each token is an
    opcode with its argument's true length, every str's prefix checked against its bytes), so
    it names no global but the allowed ones it spells out, needs no memo beyond the one
    ``BINGET`` checked, and nests nothing. The objects are then built by the same stand-ins,
    with the same checks and the same charges (the scan's, then each call's), in the same
    order; ``tests/converters/test_fast_paths.py`` holds both ways to the same objects,
    charges and refusals, on real files and their mutants.
    """
    head = data[5:6]  # after PROTO 2, EMPTY_DICT and its BINPUT
    if head == b"X":
        match = _DIFFUSERS.fullmatch(data)
        if match is None:
            return None
        fields = match.groups()
        key = _text(fields[0], fields[1])
        if key is None:
            return None
        tensor = _tensor_of(fields[2:], budget, _DIFFUSERS_OPCODES, len(data))
        if tensor is None:
            return None
        entry: dict[str, Any] = {key: tensor}
        return entry, entry, key
    if head != b"(":
        return None
    match = _A1111.fullmatch(data)
    if match is None:
        return None
    (star, token, put1, put2, get, *tensor_fields, name_len, name_chars, step, point, point_len,
     point_chars, point_name, point_name_len, point_name_chars) = match.groups()  # fmt: skip
    if get != star or star in (put1, put2):
        return None
    name = _text(name_len, name_chars)
    texts: list[str | None] = []
    extra = 0
    for whole, prefix, chars in ((point, point_len, point_chars),
                                 (point_name, point_name_len, point_name_chars)):  # fmt: skip
        if whole == b"N":
            texts.append(None)
            continue
        text = _text(prefix, chars)
        if text is None:
            return None
        texts.append(text)
        extra += 1
    if name is None:
        return None
    tensor = _tensor_of(tuple(tensor_fields), budget, _A1111_OPCODES + extra, len(data))
    if tensor is None:
        return None
    params: dict[str, Any] = {"*": tensor}
    obj: dict[str, Any] = {
        "string_to_token": {"*": _int(token)},
        "string_to_param": params,
        "name": name,
        "step": _int(step),
        "sd_checkpoint": texts[0],
        "sd_checkpoint_name": texts[1],
    }
    return obj, params, "*"


def _tensor_of(
    fields: tuple[bytes, ...], budget: Budget, opcodes: int, size: int
) -> TensorStub | None:
    """The tensor a :data:`_TENSOR` match's groups describe, built by the stand-ins as the
    unpickler builds it, once the scan's charge for the whole pickle (``size`` bytes, its
    ``opcodes`` and the shape's and stride's ints) is made; ``None``, with nothing charged or
    called, when the groups are not what the long way would read (which then judges)."""
    (storage, key_len, key_chars, where_len, where_chars, numel, offset, shape, shape2, shape_op,
     stride, stride2, stride_op, grad) = fields  # fmt: skip
    key = _text(key_len, key_chars)
    location = _text(where_len, where_chars)
    dims = _int_tuple(shape, shape2, shape_op)
    strides = _int_tuple(stride, stride2, stride_op)
    stand_in = ALLOWED.get(("torch", storage.decode("ascii")))
    if (
        key is None
        or location is None
        or dims is None
        or strides is None
        or not isinstance(stand_in, StorageType)
    ):
        return None
    budget.charge(
        _OPCODE_COST * (opcodes + len(dims) + len(strides)) + _CHAR_COST * size,
        "the objects its pickle builds",
    )
    # the unpickler's order: the persistent id, the hooks' OrderedDict, then the rebuild
    ref = _storage_ref(("storage", stand_in, key, location, _int(numel)))
    hooks = ALLOWED[("collections", "OrderedDict")]()
    rebuild = ALLOWED[("torch._utils", "_rebuild_tensor_v2")]
    tensor: TensorStub = rebuild(ref, _int(offset), dims, strides, grad == b"\x88", hooks)
    return tensor


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the DeprecationWarnings that malformed ``STRING`` escapes make the unpickler
    print (entered only for a pickle that has such strings: it costs more than a small load)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def unpickle(
    data: bytes,
    start: int = 0,
    storages: dict[str, StorageRef] | None = None,
    budget: Budget | None = None,
) -> tuple[Any, int]:
    """Scan, then unpickle the pickle at ``data[start:]``; return (object, end offset).

    The object is built from plain containers and the records above; nothing outside this module
    was called. Storage references met are added to ``storages`` when given. What the pickle
    builds is charged to ``budget`` (a fresh one of :data:`MAX_DECODED_BYTES` when not given).
    """
    budget = Budget(MAX_DECODED_BYTES) if budget is None else budget
    end, escaped = scan(data, start, budget)
    sink: dict[str, StorageRef] = {} if storages is None else storages
    token = _BUDGET.set(budget)
    try:
        whole = start == 0 and end == len(data)  # a zip's data.pkl: no copy to slice
        # a buffered stream has ``peek``, with which the C unpickler takes its input in one
        # read; from a bare BytesIO it calls ``read`` once per opcode
        stream = io.BufferedReader(io.BytesIO(data if whole else data[start:end]))
        unpickler = RestrictedUnpickler(stream, sink)
        if escaped:
            with _quiet():
                obj = unpickler.load()
        else:  # no context manager at all: even a null one is two Python calls per load
            obj = unpickler.load()
    except EmbeddingFileError:
        raise
    except Exception as exc:  # untrusted input: any failure is the file's
        raise EmbeddingFileError(f"corrupt pickle ({describe_error(exc)})") from None
    finally:
        _BUDGET.reset(token)
    return obj, end
