"""The content-addressed store: layout, idempotence, verification, healing, stale temporaries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.registry.make_files import random_embedding
from tireg.converters import internal
from tireg.files import TMP_SUFFIX
from tireg.registry.store import STALE_TEMP_AGE_S, ContentStore, StoreError, relative_path


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


def test_put_names_the_file_by_its_vectors(store: ContentStore) -> None:
    emb = random_embedding(np.random.default_rng(1), "first")
    sha = emb.vectors_sha256()
    rel = store.put(emb)
    assert rel == f"{sha[:2]}/{sha}.safetensors" == relative_path(sha)
    assert (store.root / rel).read_bytes() == internal.dumps(emb)
    assert sha in store
    assert store.get(sha) == emb


def test_same_vectors_keep_the_first_file(store: ContentStore) -> None:
    emb = random_embedding(np.random.default_rng(2), "first")
    rel = store.put(emb)
    before = (store.root / rel).stat()
    assert store.put(emb.with_meta(name="second")) == rel
    after = (store.root / rel).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert store.get(emb.vectors_sha256()).name == "first"


def test_verify_finds_damage_and_put_heals_it(store: ContentStore) -> None:
    a = random_embedding(np.random.default_rng(3), "a")
    b = random_embedding(np.random.default_rng(4), "b")
    store.put(a)
    rel_b = store.put(b)
    assert store.verify().ok and store.verify().checked == 2
    damaged = store.root / rel_b
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    check = store.verify()
    assert [rel for rel, _ in check.bad] == [rel_b]
    with pytest.raises(StoreError, match="does not match its hash"):
        store.get(b.vectors_sha256())
    store.put(b)
    assert store.verify().ok


def test_only_stale_temporaries_are_swept(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "ab").mkdir(parents=True)
    stale = root / "ab" / f".abc.safetensors.x1{TMP_SUFFIX}"
    fresh = root / "ab" / f".abd.safetensors.x2{TMP_SUFFIX}"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in flight in another process")
    old = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(stale, (old, old))
    assert ContentStore(root).swept == 1
    assert not stale.exists() and fresh.exists()


def test_unwritable_store_is_one_clear_line(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.write_text("a file where the store's folder should be")
    with pytest.raises(StoreError) as err:
        ContentStore(root).put(random_embedding(np.random.default_rng(5), "x"))
    assert "cannot write the content store" in str(err.value) and "\n" not in str(err.value)
