"""Fuzzing every non-pickle reader: whatever the bytes, only tireg's converter errors come out.

(The pickle machinery has its own fuzzing in test_pickle_fuzz.py; PNG cards in test_png_card.py.)
Example counts are set per test below (see FUZZ); a run therefore tries several thousand inputs,
and the terminal summary says how many reached each reader (read_bytes by the container its magic
bytes name) and how many were read or refused.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from tests.converters.fuzz_tally import tally
from tireg.converters import (
    EmbeddingFileError,
    NonFiniteVectorsWarning,
    a1111_png,
    layouts,
    limits,
    read_bytes,
    safetensors_file,
)
from tireg.converters.embedding import ENCODER_WIDTHS
from tireg.converters.reading import container_of

#: examples per fuzz test; TIREG_FUZZ_SCALE=10 multiplies them for a long local run
_SCALE = int(os.environ.get("TIREG_FUZZ_SCALE", "1"))
FUZZ = {
    k: v * _SCALE
    for k, v in {
        "header": 600,
        "mutate": 600,
        "layouts": 800,
        "bytes": 600,
        "metadata": 300,
    }.items()
}

_SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck)}


def _seed_files() -> list[bytes]:
    """Valid files of every container: the mutation fuzzer starts from these."""
    vec = torch.randn(2, 768, generator=torch.Generator().manual_seed(0))
    a1111 = {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "n", "step": 1}
    pt, legacy = io.BytesIO(), io.BytesIO()
    torch.save(a1111, pt)
    torch.save({"<t>": vec}, legacy, _use_new_zipfile_serialization=False)
    from tireg.converters import Embedding, encode

    card = encode(Embedding(name="c", vectors={"clip_l": vec.numpy()[:1]}), "png")[0]
    return [
        st_save({"emb_params": vec}, metadata={"modelspec.title": "t"}),
        st_save({"clip_l": vec.half(), "clip_g": torch.zeros(2, 1280).bfloat16()}),
        pt.getvalue(),
        legacy.getvalue(),
        card,
    ]


SEEDS = _seed_files()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "XX"])
        | json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
    },
)


@settings(max_examples=FUZZ["header"], **_SETTINGS)
@given(
    st.dictionaries(st.text(max_size=12), entries | json_values, max_size=5),
    st.one_of(
        st.none(), st.dictionaries(st.text(max_size=5), json_values, max_size=3), json_values
    ),
    st.binary(max_size=256),
    st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
def test_fuzz_safetensors_headers(
    header: dict[str, Any], metadata: Any, body: bytes, length: int | None
) -> None:
    """Structured lies in the header: bad dtypes, shapes, offsets, lengths, metadata."""
    if metadata is not None:
        header = {**header, "__metadata__": metadata}
    head = json.dumps(header).encode()
    blob = struct.pack("<Q", len(head) if length is None else length) + head + body
    _through("safetensors_file.loads", safetensors_file.loads, blob)
    _only_tireg_errors(blob)


@settings(max_examples=FUZZ["mutate"], **_SETTINGS)
@given(st.sampled_from(range(len(SEEDS))), st.data())
def test_fuzz_mutated_real_files(index: int, data: st.DataObject) -> None:
    """Flip bytes, truncate, splice or overwrite the length prefix of valid files of every kind."""
    buf = bytearray(SEEDS[index])
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "cut", "splice", "prefix"]))
        if how == "flip" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
        elif how == "cut":
            del buf[data.draw(st.integers(0, len(buf))) :]
        elif how == "splice":
            at = data.draw(st.integers(0, len(buf)))
            buf[at:at] = data.draw(st.binary(max_size=32))
        elif how == "prefix" and len(buf) >= 8:
            buf[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    _only_tireg_errors(bytes(buf))


arrays = st.builds(
    lambda shape, kind: np.zeros(shape, dtype=kind),
    st.lists(st.integers(0, 2000), max_size=3).map(tuple).filter(lambda s: np.prod(s) <= 2**21),
    st.sampled_from(
        [np.float32, np.float16, np.float64, np.int64, np.uint8, np.bool_, np.complex64]
    ),
)
objects = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | arrays,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "string_to_param",
                    "string_to_token",
                    "name",
                    "step",
                    "sd_checkpoint",
                    "clip_l",
                    "clip_g",
                    "emb_params",
                    "*",
                    "<t>",
                ]
            )
            | st.text(max_size=6)
            | st.integers(),
            inner,
            max_size=5,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=FUZZ["layouts"], **_SETTINGS)
@given(
    objects,
    st.sampled_from(["pt", "safetensors", "png", "webp"]),
    st.dictionaries(st.text(max_size=20), st.text(max_size=10), max_size=3),
)
def test_fuzz_layouts(obj: Any, container: str, metadata: dict[str, str]) -> None:
    """Arbitrary decoded objects (what a pickle or a JSON payload can hold) against the layouts."""
    found = _through(
        "layouts.interpret",
        layouts.interpret,
        obj,
        container=container,
        name_hint="fuzz",
        metadata=metadata,
    )
    if found is not None:
        assert found.embedding.num_vectors >= 1


@settings(max_examples=FUZZ["bytes"], **_SETTINGS)
@given(
    st.binary(max_size=512)
    | st.builds(
        lambda p, b: p + b,
        st.sampled_from(
            [
                b"PK\x03\x04",
                b"\x80\x02",
                b"\x89PNG\r\n\x1a\n",
                b"RIFF\0\0\0\0WEBP",
                b"\x10\0\0\0\0\0\0\0{",
            ]
        ),
        st.binary(max_size=256),
    )
)
def test_fuzz_read_bytes_whole(blob: bytes) -> None:
    """Random bytes, and random bytes behind every magic number the sniffer knows."""
    _only_tireg_errors(blob)
    _through("a1111_png.loads", a1111_png.loads, blob)


def _through(reader: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(...)``, counted under ``reader``; a tireg error is a refusal (None), any other
    exception fails the test."""
    counts = tally(f"fuzz: {reader}")
    try:
        result = call(*args, **kwargs)
    except EmbeddingFileError:
        counts["refused"] += 1
        return None
    counts["read"] += 1
    return result


def _only_tireg_errors(blob: bytes) -> Any:
    """``read_bytes(blob)`` counted by container: the embedding, or None when refused."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteVectorsWarning)
        return _through(f"read_bytes [{container_of(blob)}]", read_bytes, blob, name_hint="fuzz")


#: text a name or step may arrive as: any characters (digits of every script), any length
texts = st.text(max_size=40) | st.text(max_size=400) | st.integers(-(2**80), 2**80).map(str)
#: JSON nested to any depth, up to far beyond what a recursive parser survives
nested = st.integers(0, 200_000).map(lambda depth: "[" * depth + "]" * depth)


@settings(max_examples=FUZZ["metadata"], **_SETTINGS)
@given(
    st.one_of(st.none(), texts),
    st.one_of(st.none(), texts),
    st.one_of(st.none(), nested),
    st.sampled_from(["clip_l", "clip_g", "clip_h", "emb", "x"]),
    st.sampled_from([1, 768, 1024, 1280, 20_000]),
    st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "F8_E5M2"]),
)
def test_fuzz_internal_metadata_and_names(
    name: str | None, step: str | None, deep: str | None, key: str, width: int, dtype: str
) -> None:
    """tireg-format files with fuzzed names, steps (any digits, any size), deeply nested
    metadata and every dtype and width: read within every bound, or refused with our error."""
    meta: dict[str, str] = {"tireg.schema": "1"}
    if name is not None:
        meta["tireg.name"] = name
    if step is not None:
        meta["tireg.step"] = step
    size = safetensors_file.DTYPES[dtype][1] * width
    entry = {"dtype": dtype, "shape": [1, width], "data_offsets": [0, size]}
    text = json.dumps({"__metadata__": meta, key: entry})
    if deep is not None:
        text = text[:-1] + ', "deep": ' + deep + "}"
    blob = struct.pack("<Q", len(text)) + text.encode() + b"\0" * size
    _bounded(_only_tireg_errors(blob))


@settings(max_examples=FUZZ["metadata"], **_SETTINGS)
@given(
    st.one_of(st.none(), texts, st.integers(-(2**100), 2**100)),
    st.one_of(st.none(), st.integers(-(2**100), 2**100), texts),
    st.sampled_from(["pt", "png"]),
)
def test_fuzz_a1111_names_and_steps(name: Any, step: Any, container: str) -> None:
    """A1111 files (a torch pickle, a card) whose ``name`` and ``step`` are anything a pickle or
    JSON can hold: read within every bound, or refused with our error."""
    from tireg.converters import torch_file

    vec = np.ones((1, 768), dtype=np.float32)
    fields = {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}}
    fields |= {k: v for k, v in (("name", name), ("step", step)) if v is not None}
    if container == "pt":
        blob = torch_file.dumps(fields)
    else:
        payload = a1111_png._encode_payload(fields)
        blob = _text_card(payload)
    _bounded(_only_tireg_errors(blob))


def _text_card(payload: bytes) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(a1111_png.TEXT_KEY, base64.b64encode(payload).decode())
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 1, 1)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _bounded(embedding: Any) -> None:
    """What a reader returns is within the bounds of tireg.converters.limits."""
    if embedding is None:
        return
    assert len(embedding.name.encode("utf-8", "surrogatepass")) <= limits.MAX_NAME_BYTES
    assert embedding.step is None or 0 <= embedding.step <= limits.MAX_STEP
    for key, arr in embedding.vectors.items():
        assert 1 <= arr.shape[0] <= limits.MAX_VECTORS and arr.shape[1] <= limits.MAX_WIDTH
        assert key not in ENCODER_WIDTHS or arr.shape[1] == ENCODER_WIDTHS[key]
