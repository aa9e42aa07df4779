"""One-pass hashing: every hash equals the one computed independently, whatever the block layout."""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from pathlib import Path

import blake3
import pytest

from tests.checkpoints.builders import write_checkpoint
from tireg.checkpoints import CheckpointError, hash_file
from tireg.checkpoints.hashing import OLD_HASH_LENGTH, OLD_HASH_OFFSET, hash_stream


def _expected(data: bytes, addnet_start: int | None) -> dict[str, object]:
    return {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "old_hash": hashlib.sha256(
            data[OLD_HASH_OFFSET : OLD_HASH_OFFSET + OLD_HASH_LENGTH]
        ).hexdigest()[:8],
        "crc32": f"{zlib.crc32(data):08x}",
        "blake3": blake3.blake3(data).hexdigest(),
        "addnet": hashlib.sha256(data[addnet_start:]).hexdigest()
        if addnet_start is not None
        else None,
    }


def _fields(h: object) -> dict[str, object]:
    return {k: getattr(h, k) for k in ("size", "sha256", "old_hash", "crc32", "blake3", "addnet")}


@pytest.mark.parametrize(
    ("lanes", "block_size"),
    [(1, 1 << 20), (2, 100_003), (3, 65_536), (4, 7 << 20)],
)
def test_plain_file_all_hashes(
    tmp_path: Path, lanes: int, block_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small blocks that do not divide 1 MiB make the old-hash window straddle blocks; a low
    # threshold sends this 3 MiB file through the threaded pipeline.
    monkeypatch.setattr("tireg.checkpoints.hashing.THREADED_MIN_SIZE", 1)
    data = os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "model.ckpt"
    path.write_bytes(data)
    got = hash_file(path, lanes=lanes, block_size=block_size)
    assert _fields(got) == _expected(data, None)
    assert got.autov2 == got.sha256[:10]
    assert got.old_hash_meaningful


@pytest.mark.parametrize("lanes", [1, 2])
def test_safetensors_gets_addnet_hash(
    tmp_path: Path, lanes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tireg.checkpoints.hashing.THREADED_MIN_SIZE", 1)
    path = write_checkpoint(tmp_path / "m.safetensors", "sd1", padding=2 << 20)
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    got = hash_file(path, lanes=lanes, block_size=5000)  # the header spans several blocks
    assert _fields(got) == _expected(data, header_end)
    # kohya's point: the addnet hash ignores metadata, the SHA-256 does not
    assert got.addnet != got.sha256


def test_small_file_old_hash_is_the_empty_hash(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    path.write_bytes(b"x" * 1000)
    got = hash_file(path)
    assert got.old_hash == "e3b0c442"  # sha256 of nothing, as A1111 computes for any small file
    assert not got.old_hash_meaningful
    assert got.to_dict()["old_hash_meaningful"] is False


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    got = hash_file(path)
    assert got.sha256 == hashlib.sha256(b"").hexdigest()
    assert got.crc32 == "00000000"


def test_file_shorter_than_claimed_is_refused() -> None:
    with pytest.raises(CheckpointError, match="changed while it was hashed"):
        hash_stream(io.BytesIO(b"abc" * 100), 400)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        hash_file(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="folder"):
        hash_file(tmp_path)


def test_not_safetensors_has_no_addnet(tmp_path: Path) -> None:
    path = tmp_path / "fake.safetensors"
    path.write_bytes(b"\xff" * 64)  # a header length past the end of the file
    assert hash_file(path).addnet is None


class _FailingHasher:
    def update(self, data: memoryview, /) -> None:
        raise MemoryError("simulated")

    def hexdigest(self) -> str:  # pragma: no cover - never reached
        return ""


class _FailingBlake3Module:
    blake3 = _FailingHasher


@pytest.mark.parametrize("lanes", [1, 3])
def test_a_failing_lane_raises_instead_of_hanging(
    tmp_path: Path, lanes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tireg.checkpoints.hashing.THREADED_MIN_SIZE", 1)
    monkeypatch.setattr("tireg.checkpoints.hashing._blake3", _FailingBlake3Module)
    path = tmp_path / "m"
    path.write_bytes(os.urandom(1 << 20))
    with pytest.raises(MemoryError, match="simulated"):
        hash_file(path, lanes=lanes, block_size=4096)
