"""A file that stops early is called truncated, with how far it got, wherever that is noticed.

A cut download used to surface as "corrupt torch file (BadZipFile: File is not a zip file)"; the
user needs to hear "truncated: ends after 1,864 of 70,656 bytes" and fetch it again.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tests.sources.servers.http_server import FileServer, Served
from tireg.converters import CLIP_L, Embedding, read_file, write_file
from tireg.converters.errors import EmbeddingFileError
from tireg.sources import SourceError
from tireg.sources.http import download


def embedding() -> Embedding:
    vectors = np.random.default_rng(5).standard_normal((2, 768)).astype(np.float32)
    return Embedding(name="cut", vectors={CLIP_L: vectors})


def written(tmp_path: Path, fmt: str) -> bytes:
    return write_file(embedding(), tmp_path / "whole", fmt=fmt)[0].read_bytes()


def legacy_torch_file() -> bytes:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    tensor = torch.from_numpy(embedding().vectors[CLIP_L])
    torch.save(
        {"string_to_param": {"*": tensor}, "name": "cut"},
        buffer,
        _use_new_zipfile_serialization=False,
    )
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["a1111-pt", "diffusers-safetensors", "legacy"])
def test_a_cut_file_is_called_truncated(tmp_path: Path, fmt: str) -> None:
    whole = legacy_torch_file() if fmt == "legacy" else written(tmp_path, fmt)
    cut = whole[: len(whole) - 100]
    path = tmp_path / "cut.bin"
    path.write_bytes(cut)
    with pytest.raises(EmbeddingFileError) as info:
        read_file(path)
    message = str(info.value)
    assert f"truncated: ends after {len(cut):,}" in message, message
    if fmt != "a1111-pt":  # a zip's length is only in its (missing) directory
        assert f"of {len(whole):,} bytes" in message, message


def test_a_cut_download_is_called_truncated(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIREG_HTTP_RETRIES", "1")
    data = bytes(range(256)) * 7
    url = file_server.add("/f.pt", Served(data), "short")  # Content-Length says 100 more
    with pytest.raises(SourceError) as info:
        download(url, tmp_path)
    assert f"truncated: ends after {len(data):,} of {len(data) + 100:,} bytes" in str(info.value)
