"""No pickle is ever executed: every malicious file is refused, naming the global, and runs nothing.

Each payload (tests/converters/malicious.py) would create a sentinel file in ``tmp_path`` if any
part of it ran; each is tried in every container (raw pickle, torch zip beside real tensors,
legacy torch file at two positions), through ``torch_file.load`` in both modes and through
``read_file`` under misleading extensions.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.converters import malicious
from tireg.converters import pickle_safe, read_file, torch_file
from tireg.converters.errors import EmbeddingFileError, UnsafePickleError

torch = pytest.importorskip("torch")

PAYLOAD_IDS = [p.id for p in malicious.payloads("/nowhere")]
CONTAINERS = ["raw", "torch-zip", "legacy-object", "legacy-magic"]


def _torch_save(obj: object, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tensor_file() -> bytes:
    return _torch_save({"string_to_param": torch.randn(2, 768)})


@pytest.fixture(scope="module")
def legacy_file() -> bytes:
    return _torch_save(
        {"string_to_param": torch.randn(2, 768)}, _use_new_zipfile_serialization=False
    )


def build(container: str, body: bytes, tensor_file: bytes, legacy_file: bytes) -> bytes:
    if container == "raw":
        return malicious.raw(body)
    if container == "torch-zip":
        return malicious.torch_zip(body, tensor_file)
    return malicious.legacy(body, legacy_file, 3 if container == "legacy-object" else 0)


def payload(case_id: str, sentinel: Path) -> malicious.Payload:
    (found,) = [p for p in malicious.payloads(str(sentinel)) if p.id == case_id]
    return found


def assert_refused(data: bytes, expected: str, sentinel: Path, **kwargs: str) -> None:
    with pytest.raises(UnsafePickleError) as info:
        torch_file.load(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.global_name == expected
    assert f"'{expected}'" in str(info.value)
    assert not sentinel.exists()


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("case_id", PAYLOAD_IDS)
def test_malicious_file_is_refused(
    case_id: str, container: str, tmp_path: Path, tensor_file: bytes, legacy_file: bytes
) -> None:
    sentinel = tmp_path / "sentinel"
    case = payload(case_id, sentinel)
    data = build(container, case.body, tensor_file, legacy_file)
    assert_refused(data, case.refused, sentinel)
    assert_refused(data, case.refused, sentinel, tensors="shape")


@pytest.mark.parametrize("suffix", [".safetensors", ".png", ".pt", ".bin", ".ckpt"])
@pytest.mark.parametrize("container", ["raw", "torch-zip"])
@pytest.mark.parametrize("case_id", ["os.system", "reduce-os.system-p4", "stack_global-from-memo"])
def test_refused_whatever_the_extension(
    case_id: str, container: str, suffix: str, tmp_path: Path, tensor_file: bytes,
    legacy_file: bytes,
) -> None:  # fmt: skip
    sentinel = tmp_path / "sentinel"
    case = payload(case_id, sentinel)
    path = tmp_path / f"embedding{suffix}"
    path.write_bytes(build(container, case.body, tensor_file, legacy_file))
    for reader in (read_file, torch_file.load_path):
        with pytest.raises(UnsafePickleError) as info:
            reader(path)
        assert info.value.global_name == case.refused
        assert info.value.path == str(path)
    with pytest.raises(UnsafePickleError):
        torch_file.load_path(path, tensors="shape")
    assert not sentinel.exists()


@pytest.fixture
def registered_extension() -> Iterator[None]:
    """copyreg's extension registry maps EXT codes to globals, process-wide."""
    copyreg.add_extension("os", "system", malicious.EXT_CODE)
    try:
        yield
    finally:
        copyreg.remove_extension("os", "system", malicious.EXT_CODE)


@pytest.mark.usefixtures("registered_extension")
@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("index", range(3))
def test_ext_opcodes_are_refused(
    index: int, container: str, tmp_path: Path, tensor_file: bytes, legacy_file: bytes
) -> None:
    sentinel = tmp_path / "sentinel"
    case = malicious.ext_payloads(str(sentinel))[index]
    assert_refused(build(container, case.body, tensor_file, legacy_file), case.refused, sentinel)


def test_stack_global_at_position_zero_without_proto(tmp_path: Path) -> None:
    """CVE-2025-71325: a stream that *starts* with STACK_GLOBAL (no PROTO) evaded a scanner."""
    sentinel = tmp_path / "sentinel"
    body = malicious.call(malicious.sg("os", "system"), malicious.s(f"touch {sentinel}"))
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        pickle_safe.unpickle(body + b".")
    with pytest.raises(EmbeddingFileError):  # and no torch file starts that way
        torch_file.load(body + b".")
    assert not sentinel.exists()


def test_static_globals_are_refused_before_unpickling_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GLOBAL anywhere in the stream stops the load before the unpickler runs at all."""

    def never(self: object) -> None:
        raise AssertionError("the unpickler ran")

    monkeypatch.setattr(pickle_safe.RestrictedUnpickler, "load", never)
    late_global = malicious.call(malicious.g("collections", "OrderedDict")) + b"0"
    late_global += malicious.call(malicious.g("os", "system"), malicious.s("x"))
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        pickle_safe.unpickle(malicious.wrap(late_global))


def test_stand_ins_cannot_be_rebound_by_build() -> None:
    """BUILD with slot state would setattr on the object: stand-ins refuse, for every later load."""
    s = malicious.s
    slot_state = b"(N}" + s("_call") + g_exec() + b"st"  # (None, {'_call': <refused>})
    attack = malicious.g("collections", "OrderedDict") + b"N}" + s("name") + s("x") + b"s\x86b"
    with pytest.raises(EmbeddingFileError):
        pickle_safe.unpickle(malicious.wrap(attack))
    with pytest.raises(UnsafePickleError):
        pickle_safe.unpickle(malicious.wrap(malicious.g("collections", "OrderedDict") + slot_state))
    cls_attack = malicious.sg("torch.nn.modules.container", "ParameterDict")
    cls_attack += b"N}" + s("__setstate__") + s("x") + b"s\x86b"
    with pytest.raises(EmbeddingFileError):
        pickle_safe.unpickle(malicious.wrap(cls_attack, protocol=4))
    assert pickle_safe.ALLOWED[("collections", "OrderedDict")].name == "collections.OrderedDict"
    # and a normal file still loads
    data = torch_file.dumps({"x": np.ones(2, np.float32)})
    np.testing.assert_array_equal(torch_file.load(data)["x"], np.ones(2, np.float32))


def g_exec() -> bytes:
    return malicious.g("builtins", "exec")


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"\x80\x02N" + b"r\xff\xff\xff\xff" + b".", "memo index"),  # 64 GiB memo table
        (b"\x80\x02}N" + b"\x85" * 200_000 + b"Ns.", "nests tuples"),  # segfaults hash()
        (b"\x80\x02" + b"]" * 1000 + b"a" * 999 + b".", "nests containers"),
        (b"\x80\x02]q\x00h\x00a.", "contains itself"),
        (b"\x80\x02)Q.", "persistent id"),
        (b"\x80\x02" + malicious.s("x") + b"Q.", "persistent id"),
        (b"\x80\x02\x97.", "corrupt pickle"),  # NEXT_BUFFER without buffers
        (b"\x80\x02N", "corrupt pickle"),  # no STOP
    ],
    ids=[
        "memo-index",
        "deep-tuple",
        "deep-list",
        "cycle",
        "bad-pid",
        "str-pid",
        "buffer",
        "no-stop",
    ],
)
def test_resource_and_structure_attacks(stream: bytes, message: str) -> None:
    with pytest.raises(EmbeddingFileError):
        torch_file.load(stream)  # as a legacy file's first pickle
    if stream.endswith(b"."):  # spliced into a real torch zip, beside a real tensor
        zipped = malicious.torch_zip(stream[2:-1], _torch_save({"x": torch.ones(1)}))
        with pytest.raises(EmbeddingFileError, match=message):
            torch_file.load(zipped)
    else:
        with pytest.raises(EmbeddingFileError, match=message):
            pickle_safe.unpickle(stream)


def test_shared_references_are_not_expanded() -> None:
    """A 'billion laughs' DAG (2**60 leaves by value) loads in linear time, sharing kept."""
    body = b"]q\x00" + malicious.s("lol") + b"a0"  # memo 0: ["lol"], popped
    for i in range(60):
        body += b"]q" + bytes([i + 1]) + b"(h" + bytes([i]) + b"h" + bytes([i]) + b"e0"
    body += b"h" + bytes([60])
    obj = pickle_safe.unpickle(malicious.wrap(body))[0]
    assert obj[0] is obj[1]
    data = malicious.torch_zip(body, _torch_save({"x": torch.ones(1)}))
    loaded = torch_file.load(data)
    assert loaded["evil"][0] is loaded["evil"][1]


@pytest.mark.parametrize("case_id", ["os.system", "builtins.open", "reduce-exec-p2"])
def test_control_the_payloads_are_live(case_id: str, tmp_path: Path) -> None:
    """Control experiment: an unrestricted unpickler in a throwaway child process *does* create
    the sentinel, so its absence above means the refusal stopped a real attack."""
    sentinel = tmp_path / "sentinel"
    data = malicious.raw(payload(case_id, sentinel).body)
    child = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", child], input=data, check=False, timeout=60)
    assert sentinel.exists()


def test_count_of_malicious_files(tensor_file: bytes, legacy_file: bytes, tmp_path: Path) -> None:
    """Every generated file in every container is refused; prints the tally for the report."""
    sentinel = tmp_path / "sentinel"
    cases = malicious.payloads(str(sentinel))
    refused = total = 0
    for case in cases:
        for container in CONTAINERS:
            total += 1
            try:
                torch_file.load(build(container, case.body, tensor_file, legacy_file))
            except UnsafePickleError as exc:
                refused += exc.global_name == case.refused
    print(f"\nmalicious files: {total} ({len(cases)} payloads x {len(CONTAINERS)} containers); "
          f"refused naming the global: {refused}")  # fmt: skip
    assert refused == total and not sentinel.exists()


# ------------------------------------------------------------------------- numpy stand-ins

NP = "numpy._core.multiarray"
g, s = malicious.g, malicious.s
_NO_FIELDS = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00"  # None, None, None, -1, -1, 0


def _in_zip(pkl: bytes) -> bytes:
    """A torch zip whose data.pkl is ``pkl`` (the form numpy values reach us in)."""
    return malicious.torch_zip(pkl[2:-1], _torch_save({"x": torch.ones(1)}))


def _bare_dtype(code: str) -> bytes:
    """``numpy.dtype(code, False, True)``, without its BUILD."""
    return g("numpy", "dtype") + s(code) + b"\x89\x88\x87R"


def _dtype(code: str, order: str = "<", tail: bytes = _NO_FIELDS) -> bytes:
    """A dtype as numpy pickles it: then BUILD with the state ``(3, order, <tail>)``."""
    return _bare_dtype(code) + b"(K\x03" + s(order) + tail + b"tb"


def _scalar(*args: bytes) -> bytes:
    return g(NP, "scalar") + b"(" + b"".join(args) + b"tR"


def _array(state_items: bytes, cls: bytes = g("numpy", "ndarray")) -> bytes:
    """``_reconstruct(cls, (0,), b'b')`` then BUILD with ``(state_items)``."""
    head = g(NP, "_reconstruct") + cls + b"K\x00\x85C\x01b\x87R"
    return head + b"(" + state_items + b"tb"


@pytest.mark.parametrize(
    ("make", "refused"),
    [
        (lambda: np.array(["a", 1], dtype=object), "numpy.dtype('O8')"),
        (lambda: np.ma.masked_array([1, 2], mask=[0, 1]), "numpy.ma.core._mareconstruct"),
        (lambda: np.rec.array([(1, 2.0)]), "numpy.rec.recarray"),
    ],
    ids=["object-array", "masked-array", "record-array"],
)
def test_numpy_values_beyond_plain_arrays_are_unsafe(make: Any, refused: str) -> None:
    """Real pickles numpy writes for objects and ndarray subclasses: refused, naming why."""
    with pytest.raises(UnsafePickleError) as info:
        torch_file.load(_in_zip(pickle.dumps(make(), protocol=2)))
    assert info.value.global_name == refused


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(2, dtype=[("a", "<f4")]), "'V4' is not supported"),
        (np.datetime64("2020-01-01"), "'M8' is not supported"),
        (np.str_("ab"), "'U2' is not supported"),
        (np.longdouble(1), "'f16' is not supported"),
    ],
    ids=["structured", "datetime", "str", "longdouble"],
)
def test_numpy_dtypes_other_than_plain_numbers_are_refused(value: object, message: str) -> None:
    with pytest.raises(EmbeddingFileError, match=message):
        torch_file.load(_in_zip(pickle.dumps(value, protocol=2)))


_F8 = _dtype("f8")
_EIGHT = b"C\x08" + b"\x00" * 8  # SHORT_BINBYTES
_SHAPE_2 = b"K\x01K\x02\x85"  # version 1, shape (2,)
_OK_ARRAY = _SHAPE_2 + _F8 + b"\x89C\x10" + b"\x00" * 16  # (1, (2,), f8, False, 16 bytes)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_scalar(_F8, b"C\x07" + b"\x00" * 7), "holds 7 bytes"),
        (_scalar(_F8, s("x" * 8)), "raw bytes"),
        (_scalar(g("numpy", "ndarray"), _EIGHT), "needs a numpy dtype"),
        (_scalar(_bare_dtype("f8"), _EIGHT), "before its state"),
        (_array(_SHAPE_2 + _F8 + b"\x89C\x0f" + b"\x00" * 15), "does not hold 15 bytes"),
        (_array(_SHAPE_2 + _F8 + b"\x89](K\x01K\x02e"), "raw bytes"),
        (_array(b"K\x01K\x02J\xff\xff\xff\xff\x86" + _F8 + b"\x89C\x00"), "non-negative ints"),
        (_array(b"K\x02" + _OK_ARRAY[2:]), "unknown version"),
        (_array(_OK_ARRAY, g("collections", "OrderedDict")), "only allowed for numpy.ndarray"),
        (_array(_OK_ARRAY) + b"(" + _OK_ARRAY + b"tb", "state twice"),
        (_F8 + b"(K\x03" + s("<") + _NO_FIELDS + b"tb", "state twice"),
        (_dtype("f8", "|"), "bad byte order"),
        (_dtype("u1", "<"), "bad byte order"),
        (_dtype("f8", tail=_NO_FIELDS[:-1] + b"\x3f"), "fields, subarrays or flags"),
        (_dtype("f8", tail=b"N)}" + _NO_FIELDS[3:]), "fields, subarrays or flags"),
        (g("numpy", "dtype") + s("f8") + b"K\x00\x88\x87R", "bad numpy.dtype arguments"),
    ],
    ids=[
        "scalar-short", "scalar-str", "scalar-no-dtype", "scalar-dtype-without-state",
        "array-short", "array-list-data", "array-negative-dim", "array-version",
        "reconstruct-other-class", "array-build-twice", "dtype-build-twice",
        "dtype-order-multi-byte", "dtype-order-single-byte", "dtype-flags", "dtype-fields",
        "dtype-align-int",
    ],
)  # fmt: skip
def test_malformed_numpy_pickles_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(EmbeddingFileError, match=message):
        torch_file.load(_in_zip(malicious.wrap(body, protocol=3)))


def test_the_numpy_builders_above_are_valid_when_unbroken() -> None:
    """Control: the hand-written streams the refusals above break do load when left intact."""
    obj = torch_file.load(_in_zip(malicious.wrap(_array(_OK_ARRAY), protocol=3)))
    np.testing.assert_array_equal(obj["evil"], np.zeros(2))
    scalar = torch_file.load(_in_zip(malicious.wrap(_scalar(_F8, _EIGHT), protocol=3)))["evil"]
    assert type(scalar) is np.float64 and scalar == 0


def _tensor_then_build(state: bytes) -> bytes:
    """A valid tensor (memo 201: its storage reference) followed by a BUILD with ``state``."""
    pid = b"(" + s("storage") + g("torch", "FloatStorage") + s("0") + s("cpu") + b"M\x00\x06tQq\xc9"
    tensor = (
        g("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"K\x00K\x02K\x01\x86K\x01K\x01\x86"
    )
    tensor += b"\x89" + g("collections", "OrderedDict") + b")RtR"
    return tensor + state + b"b"


@pytest.mark.parametrize(
    "state",
    [
        # (storage, dtype, itemsize, offset, shape, stride): a stride 2**28 elements past the end
        b"(h\xc9" + s("float32") + b"K\x04K\x00K\x02K\x01\x86J\x00\x00\x00\x10K\x01\x86t",
        b"N}" + s("stride") + b"J\x00\x00\x00\x10K\x01\x86s\x86",  # slot state
    ],
    ids=["setstate", "slot-state"],
)
def test_build_cannot_rewrite_a_checked_tensor(state: bytes, tensor_file: bytes) -> None:
    """Frozen slotted dataclasses get a ``__setstate__`` that rebinds every field; a BUILD after
    ``_rebuild_tensor_v2`` would swap in strides never checked against the storage and make the
    reader copy memory outside it (this crashed the interpreter before the records refused)."""
    with pytest.raises(EmbeddingFileError, match="change a TensorStub after it was built"):
        torch_file.load(malicious.torch_zip(_tensor_then_build(state), tensor_file))
    # control: the same tensor without the BUILD loads
    ok = torch_file.load(malicious.torch_zip(_tensor_then_build(b"")[:-1], tensor_file))
    np.testing.assert_array_equal(ok["evil"], ok["string_to_param"][0, :2, None])
