"""Fuzzing the torch reader: whatever the bytes, only tireg.converters.errors exceptions come out.

Inputs: random bytes (some behind a zip or pickle magic), byte-level mutations (bit flips, byte
sets, truncations, insertions, deletions, chunk duplications) of real torch zip and legacy files
and of raw pickle streams, and structure-aware mutations that re-zip a mutated ``data.pkl`` with
valid CRCs so the pickle layer, not the zip layer, is what gets hit. Sizes stay small, so a hang
would show as a stuck test.

``TIREG_FUZZ_EXAMPLES`` sets the examples per test (default 150: ~1,000 inputs, well under a
minute). A long run: ``TIREG_FUZZ_EXAMPLES=5000 pytest tests/converters/test_pickle_fuzz.py``;
the tally of inputs and outcomes is shown in the terminal summary (tests/converters/fuzz_tally.py).
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.converters import malicious
from tests.converters.fuzz_tally import tally
from tireg.converters import pickle_safe, torch_file
from tireg.converters.errors import EmbeddingFileError, UnsafePickleError

torch = pytest.importorskip("torch")

EXAMPLES = int(os.environ.get("TIREG_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
OUTCOMES = tally("fuzz: torch reader (torch_file, pickle_safe)")


def _save(obj: Any, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@functools.cache
def seeds() -> dict[str, bytes]:
    """Real files to mutate: what A1111, rinongal, diffusers and we write."""
    gen = torch.Generator().manual_seed(0)
    a1111 = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.randn(2, 16, generator=gen)},
        "name": "fuzz",
        "step": 10,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }
    original = {
        "string_to_token": {"*": torch.tensor(265)},
        "string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.ones(1, 8))}),
    }
    lightning = {  # numpy values as in the training state of SD .ckpt files
        "state_dict": {"w": torch.randn(3, 4, generator=gen)},
        "callbacks": {"score": np.float64(0.25), "flag": np.bool_(True), "dtype": np.dtype("<u2")},
        "history": np.arange(6, dtype=">i4").reshape(2, 3),
        "global_step": 470000,
    }
    views = {
        "h": torch.ones(3, 4).half()[:, 1],
        "b": torch.ones(2).bfloat16(),
        "z": torch.tensor(1),
    }
    out = {
        "zip-a1111": _save(a1111),
        "zip-original": _save(original),
        "zip-views": _save(views),
        "zip-ckpt": _save(lightning),
        "legacy-a1111": _save(a1111, legacy=True),
        "legacy-original": _save(original, legacy=True),
        "ours": torch_file.dumps({"<tok>": np.ones((2, 8), np.float32), "l": [1, (2.5, None)]}),
    }
    for name in ("zip-a1111", "zip-original", "zip-views", "zip-ckpt"):
        out["pkl-" + name[4:]] = zipfile.ZipFile(io.BytesIO(out[name])).read("archive/data.pkl")
    return out


def check(data: bytes) -> None:
    """The property: a value or an EmbeddingFileError, in both modes; nothing else escapes."""
    for mode in ("load", "shape"):
        try:
            torch_file.load(data, tensors=mode)  # type: ignore[arg-type]
            OUTCOMES["decoded"] += 1
        except UnsafePickleError:
            OUTCOMES["unsafe-refused"] += 1
        except EmbeddingFileError:
            OUTCOMES["refused"] += 1


# one mutation: (kind, position as a fraction of the length, a byte value, a length)
mutations = st.tuples(
    st.sampled_from(["flip", "set", "truncate", "insert", "delete", "duplicate"]),
    st.floats(0, 1, exclude_max=True),
    st.integers(0, 255),
    st.integers(1, 64),
)


def mutate(data: bytes, steps: list[tuple[str, float, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value, length in steps:
        if not buf:
            buf = bytearray([value])
            continue
        pos = int(where * len(buf))
        if kind == "flip":
            buf[pos] ^= 1 << (value % 8)
        elif kind == "set":
            buf[pos] = value
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = bytes([value]) * length
        elif kind == "delete":
            del buf[pos : pos + length]
        else:
            buf[pos:pos] = buf[pos : pos + length]
    return bytes(buf)


@FUZZ
@given(prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95"]),
       body=st.binary(max_size=2048))  # fmt: skip
def test_random_bytes(prefix: bytes, body: bytes) -> None:
    check(prefix + body)


@FUZZ
@given(seed=st.sampled_from(["zip-a1111", "zip-original", "zip-views", "zip-ckpt", "ours"]),
       steps=st.lists(mutations, min_size=1, max_size=4))  # fmt: skip
def test_mutated_zip_files(seed: str, steps: list[tuple[str, float, int, int]]) -> None:
    check(mutate(seeds()[seed], steps))


@FUZZ
@given(seed=st.sampled_from(["legacy-a1111", "legacy-original"]),
       steps=st.lists(mutations, min_size=1, max_size=4))  # fmt: skip
def test_mutated_legacy_files(seed: str, steps: list[tuple[str, float, int, int]]) -> None:
    check(mutate(seeds()[seed], steps))


@FUZZ
@given(seed=st.sampled_from(["pkl-a1111", "pkl-original", "pkl-views", "pkl-ckpt"]),
       steps=st.lists(mutations, min_size=1, max_size=4))  # fmt: skip
def test_mutated_data_pkl_inside_a_valid_zip(
    seed: str, steps: list[tuple[str, float, int, int]]
) -> None:
    """The zip stays valid (CRCs recomputed), so every mutation reaches the pickle layer."""
    source = seeds()["zip-" + seed[4:]]
    src = zipfile.ZipFile(io.BytesIO(source))
    pkl = mutate(seeds()[seed], steps)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(
                info.filename, pkl if info.filename.endswith("data.pkl") else src.read(info)
            )
    check(out.getvalue())


@FUZZ
@given(seed=st.sampled_from(["pkl-a1111", "pkl-original", "pkl-views", "pkl-ckpt"]),
       steps=st.lists(mutations, min_size=1, max_size=4))  # fmt: skip
def test_mutated_raw_pickles(seed: str, steps: list[tuple[str, float, int, int]]) -> None:
    data = mutate(seeds()[seed], steps)
    try:
        pickle_safe.unpickle(data)
        OUTCOMES["pickle-decoded"] += 1
    except EmbeddingFileError:
        OUTCOMES["pickle-refused"] += 1
    check(data)


def test_seeds_decode() -> None:
    """The unmutated seeds are valid, so mutations start from files that really load."""
    for name, data in seeds().items():
        if name.startswith("pkl-"):
            pickle_safe.unpickle(data)
        else:
            torch_file.load(data)


#: keys a pickled dict, set or OrderedDict may be built from: the ordinary ones, and the ones a
#: pickle can give colliding hashes (huge ints, tuples), whose building is refused
keys = st.one_of(
    st.text(max_size=8),
    st.integers(-(2**40), 2**40),
    st.integers(-(2**200), 2**200),
    st.floats(allow_nan=False),
    st.tuples(st.integers(), st.integers()),
    st.none(),
)


@FUZZ
@given(
    items=st.lists(st.tuples(keys, st.integers(0, 9)), max_size=12),
    builder=st.sampled_from(["setitems", "dict", "ordereddict", "set", "frozenset"]),
    padded=st.booleans(),
)
def test_pickled_dict_and_set_keys(
    items: list[tuple[Any, int]], builder: str, padded: bool
) -> None:
    """Dicts and sets built every way a pickle can (``SETITEMS``, ``DICT``, ``OrderedDict``,
    ``set``, ``FROZENSET``) from fuzzed keys: built, or refused with our error. Huge-int and
    tuple keys are refused by the OrderedDict and set stand-ins always, and by the opcodes in any
    pickle large enough to hold many of them (``padded`` makes it so with a popped string)."""
    body = _build(builder, items)
    pad = malicious.s("p" * (pickle_safe._SMALL_PICKLE + 1)) + b"0" if padded else b""
    data = b"\x80\x02" + pad + body + b"."
    risky = any(not pickle_safe._safe_key(k) for k, _ in items)
    checked = padded or builder in ("ordereddict", "set")
    try:
        pickle_safe.unpickle(data)
        OUTCOMES["keys-built"] += 1
        assert not (risky and checked)
    except EmbeddingFileError:
        OUTCOMES["keys-refused"] += 1
    check(_zip_pickle(data))


def _build(builder: str, items: list[tuple[Any, int]]) -> bytes:
    """Opcodes pushing a dict or set of ``items``'s keys (values in dicts)."""
    import pickle

    def one(value: Any) -> bytes:
        return pickle.dumps(value, protocol=2)[2:-1]

    if builder == "setitems":
        return b"}(" + b"".join(one(k) + one(v) for k, v in items) + b"u"
    if builder == "dict":
        return b"(" + b"".join(one(k) + one(v) for k, v in items) + b"d"
    pairs = b"](" + b"".join(one(k) + one(v) + b"\x86" for k, v in items) + b"e"
    if builder == "ordereddict":
        return malicious.call(malicious.g("collections", "OrderedDict"), pairs)
    elements = b"".join(one(k) for k, _ in items)
    if builder == "set":
        return malicious.call(malicious.g("builtins", "set"), b"](" + elements + b"e")
    return b"(" + elements + b"\x91"  # FROZENSET


def _zip_pickle(pkl: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", pkl)
    return out.getvalue()
