"""tireg's internal format, pinned byte for byte: its sha256 is a content identity, so any change
to the bytes the same embedding produces is a format change and must bump ``tireg.schema``."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tireg.converters import (
    Embedding,
    EmbeddingFileError,
    internal,
    read_bytes,
    read_file,
    safetensors_file,
)

#: the one source of truth the expected bytes are compared with (written out by hand, not by
#: the writer under test): sorted keys, compact separators, then spaces up to a multiple of 8
TINY_HEADER = (
    '{"__metadata__":{'
    '"tireg.extra.note":"hi",'
    '"tireg.extra.source_url":"https://example.invalid/x",'
    '"tireg.name":"tiny",'
    '"tireg.schema":"1",'
    '"tireg.source.format":"a1111-pt",'
    '"tireg.source.sha256":"' + "ab" * 32 + '",'
    '"tireg.step":"500",'
    '"tireg.trained_on.hash":"a9263745",'
    '"tireg.trained_on.name":"v1-5"'
    "},"
    '"clip_g":{"data_offsets":[0,8],"dtype":"F32","shape":[1,2]},'
    '"clip_l":{"data_offsets":[8,20],"dtype":"F32","shape":[1,3]}}'
)


def _tiny(*, reverse: bool = False) -> Embedding:
    vectors = {
        "clip_l": np.array([[1.0, -2.0, 0.5]], np.float32),
        "clip_g": np.array([[3.0, 0.25]], np.float32),
    }
    extras = {"note": "hi", "source_url": "https://example.invalid/x"}
    if reverse:
        vectors = dict(reversed(list(vectors.items())))
        extras = dict(reversed(list(extras.items())))
    return Embedding(
        name="tiny",
        vectors=vectors,
        step=500,
        trained_on_hash="a9263745",
        trained_on_name="v1-5",
        source_format="a1111-pt",
        source_sha256="ab" * 32,
        extras=extras,
    )


def _expected_bytes() -> bytes:
    head = TINY_HEADER.encode()
    head += b" " * (-len(head) % 8)
    data = np.array([3.0, 0.25], "<f4").tobytes() + np.array([1.0, -2.0, 0.5], "<f4").tobytes()
    return struct.pack("<Q", len(head)) + head + data


def test_schema_1_bytes_are_pinned() -> None:
    assert internal.SCHEMA_VERSION == 1
    assert internal.dumps(_tiny()) == _expected_bytes()


def test_minimal_embedding_has_only_schema_and_name() -> None:
    emb = Embedding(name="bare", vectors={"clip_l": np.zeros((1, 2), np.float32)})
    head = '{"__metadata__":{"tireg.name":"bare","tireg.schema":"1"},'
    head += '"clip_l":{"data_offsets":[0,8],"dtype":"F32","shape":[1,2]}}'
    raw = head.encode() + b" " * (-len(head) % 8)
    assert internal.dumps(emb) == struct.pack("<Q", len(raw)) + raw + bytes(8)


def test_input_order_does_not_change_the_bytes() -> None:
    assert internal.dumps(_tiny(reverse=True)) == internal.dumps(_tiny())


def test_round_trip_keeps_everything() -> None:
    assert internal.loads(internal.dumps(_tiny())) == _tiny()


def _with_schema(schema: str) -> bytes:
    tensors = {"clip_l": np.ones((1, 768), np.float32)}
    return safetensors_file.dumps(tensors, {"tireg.schema": schema, "tireg.name": "x"})


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path: Path) -> None:
    path = tmp_path / "future.tireg.safetensors"
    path.write_bytes(_with_schema("2"))
    with pytest.raises(EmbeddingFileError) as caught:
        read_file(path)
    assert "newer tireg (schema 2, this one reads 1)" in caught.value.message
    assert caught.value.hint == "upgrade tireg"
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("schema", ["one", "", "1.0", "0x1", " 1", "+1", "1_0", "\u0661"])
def test_non_numeric_schema_is_refused(schema: str) -> None:
    with pytest.raises(EmbeddingFileError, match=r"tireg\.schema is not a number"):
        read_bytes(_with_schema(schema), name_hint="x")


def test_safetensors_without_schema_is_not_internal() -> None:
    """tireg.* keys alone do not make a file internal: only tireg.schema does."""
    tensors = {"emb_params": np.ones((2, 768), np.float32)}
    data = safetensors_file.dumps(tensors, {"tireg.name": "impostor", "tireg.step": "9"})
    assert not internal.is_internal(safetensors_file.loads(data)[1])
    with pytest.raises(EmbeddingFileError, match=r"no tireg\.schema"):
        internal.loads(data)
    emb = read_bytes(data, name_hint="plain")
    assert emb.source_format != "tireg" and emb.step is None and emb.name != "impostor"
