"""MEGA links against a stand-in API on 127.0.0.1: real AES, real MAC, injected failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.sources import mega_server
from tests.sources.mega_server import MegaStandIn
from tireg.converters import read_file, safetensors_file
from tireg.sources import SourceError, mega

fake_mega = mega_server.fake_mega  # the fixture


def embedding_bytes(seed: int = 0, vectors: int = 2, width: int = 768) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_file.dumps(
        {"emb_params": rng.standard_normal((vectors, width), dtype=np.float32)}
    )


# --- links and primitives -------------------------------------------------------------------

KEY43 = "8vsSqlUm-o6QNB2gjSQeJzED1dtKOZVWdE8-By0INlI"
FKEY22 = "5_u6PYfdn-ZS7sRdoecD2A"


@pytest.mark.parametrize(
    ("url", "kind", "inner"),
    [
        (f"https://mega.nz/file/IABX1QKS#{KEY43}", "file", None),
        (f"https://mega.nz/#!IABX1QKS!{KEY43}", "file", None),
        (f"https://mega.co.nz/#!IABX1QKS!{KEY43}", "file", None),
        (f"https://mega.nz/folder/7k0R2arB#{FKEY22}", "folder", None),
        (f"https://mega.nz/#F!7k0R2arB!{FKEY22}", "folder", None),
        (f"https://mega.nz/folder/7k0R2arB#{FKEY22}/file/abcdEFGH", "folder", ("file", "abcdEFGH")),
        (
            f"https://mega.nz/folder/7k0R2arB#{FKEY22}/folder/abcd-_GH",
            "folder",
            ("folder", "abcd-_GH"),
        ),
        (f"  http://www.mega.co.nz/folder/7k0R2arB#{FKEY22}  ", "folder", None),
    ],
)
def test_parse_link_forms(url: str, kind: str, inner: tuple[str, str] | None) -> None:
    link = mega.parse_link(url)
    assert link.kind == kind
    assert (link.inner_kind, link.inner_handle) == (inner or (None, None))
    assert len(link.key) == (32 if kind == "file" else 16)
    assert mega.parse_link(link.url) == link  # the canonical form round-trips


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/file/IABX1QKS#" + KEY43,
        "https://mega.nz/file/IABX1QKS",  # no key
        "https://mega.nz/file/IABX1QKS#" + KEY43[:30],  # cut short
        "https://mega.nz/folder/7k0R2arB#" + KEY43,  # file key on a folder
        "https://mega.nz/file/IABX1QKS#" + KEY43 + "/file/abcdEFGH",
    ],
)
def test_parse_link_rejects(url: str) -> None:
    with pytest.raises(mega.MegaLinkError):
        mega.parse_link(url)


def test_a32_helpers_round_trip() -> None:
    assert mega.bytes_to_a32(b"\x00\x00\x00\x01\x02") == (1, 0x02000000)
    assert mega.a32_to_bytes((1, 2)) == b"\0\0\0\1\0\0\0\2"
    assert mega.b64url_decode(mega.b64url_encode(b"\xff\xfe\xfd")) == b"\xff\xfe\xfd"


@pytest.mark.parametrize("size", [1, 15, 16, 0x20000 - 1, 0x20000, 0x20000 + 17, 0x300000 + 5])
def test_streaming_decryptor_matches_reference_mac(size: int) -> None:
    plain = os.urandom(size)
    key, cipher = mega_server.encrypt_file(plain)
    decryptor = mega.Decryptor(key, size)
    out, pos, step = [], 0, 1
    while pos < size:  # feed uneven pieces, crossing block and chunk boundaries
        out.append(decryptor.update(cipher[pos : pos + step]))
        pos += step
        step = step * 3 + 7
    decryptor.verify(what="x")
    assert b"".join(out) == plain


def test_streaming_decryptor_detects_tampering() -> None:
    plain = os.urandom(300_000)
    key, cipher = mega_server.encrypt_file(plain)
    tampered = bytearray(cipher)
    tampered[200_000] ^= 1
    decryptor = mega.Decryptor(key, len(plain))
    decryptor.update(bytes(tampered))
    with pytest.raises(mega.MegaIntegrityError, match="MAC mismatch"):
        decryptor.verify(what="x")


def test_attributes_with_wrong_key_are_refused() -> None:
    key = os.urandom(16)
    encrypted = mega.b64url_decode(mega_server.encrypt_attrs({"n": "a.pt"}, key))
    assert mega.decrypt_attributes(encrypted, key) == {"n": "a.pt"}
    with pytest.raises(mega.MegaLinkError, match="does not decrypt"):
        mega.decrypt_attributes(encrypted, os.urandom(16))


# --- end to end against the stand-in --------------------------------------------------------


def test_file_link_downloads_decrypts_and_reads(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    data = embedding_bytes()
    link = fake_mega.add_file("fortune cookie.safetensors", data)
    legacy = link.replace("/file/", "/#!").replace("#", "!", 2).replace("!", "#", 1)
    assert mega.parse_link(legacy) == mega.parse_link(link)
    (got,) = mega.fetch(legacy, tmp_path)
    assert got.path == tmp_path / "fortune cookie.safetensors"
    assert got.path.read_bytes() == data
    assert got.kind == "mega" and got.revision and got.hints["title"] == "fortune cookie"
    emb = read_file(got.path)
    assert emb.num_vectors == 2
    assert not list(tmp_path.rglob("*.tireg-tmp"))


def test_folder_link_walks_the_tree(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    a, b = embedding_bytes(1), embedding_bytes(2, vectors=4)
    link, paths = fake_mega.add_folder(
        {"a.safetensors": a, "notes.txt": b"hello", "sub": {"b.pt": b, "deeper": {}}}
    )
    got = mega.fetch(link, tmp_path)
    assert sorted(str(f.path.relative_to(tmp_path)) for f in got) == ["a.safetensors", "sub/b.pt"]
    assert (tmp_path / "sub" / "b.pt").read_bytes() == b
    assert read_file(tmp_path / "a.safetensors").num_vectors == 2
    # a file inside the folder, and a subfolder
    (one,) = mega.fetch(f"{link}/file/{paths['sub/b.pt']}", tmp_path / "one")
    assert one.path == tmp_path / "one" / "b.pt" and one.path.read_bytes() == b
    (sub,) = mega.fetch(f"{link}/folder/{paths['sub']}", tmp_path / "sub-only")
    assert sub.path == tmp_path / "sub-only" / "b.pt"


def test_refetch_uses_the_cache_and_offline_says_so(
    fake_mega: MegaStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = fake_mega.add_file("x.safetensors", embedding_bytes())
    mega.fetch(link, tmp_path / "1")
    downloads = sum(1 for r in fake_mega.requests if r[0] == "GET")
    mega.fetch(link, tmp_path / "2")
    assert sum(1 for r in fake_mega.requests if r[0] == "GET") == downloads  # unchanged: cached
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    before = len(fake_mega.requests)
    (got,) = mega.fetch(link, tmp_path / "3")
    assert len(fake_mega.requests) == before
    assert (
        "offline" in got.hints
        and got.path.read_bytes() == (tmp_path / "1" / "x.safetensors").read_bytes()
    )
    other = fake_mega.add_file("y.safetensors", embedding_bytes(5))
    with pytest.raises(SourceError, match="offline"):
        mega.fetch(other, tmp_path / "4")


# --- injected failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (-9, mega.MegaGoneError, "gone"),
        (-16, mega.MegaTakenDownError, "taken down"),
        (-17, mega.MegaQuotaError, "quota"),
        (509, mega.MegaQuotaError, "quota"),
    ],
)
def test_api_errors_in_plain_words(
    fake_mega: MegaStandIn, tmp_path: Path, code: int, error: type, words: str
) -> None:
    link = fake_mega.add_file("x.safetensors", embedding_bytes())
    fake_mega.api_failures.append(code)
    with pytest.raises(error, match=words) as info:
        mega.fetch(link, tmp_path)
    assert fake_mega.api_failures == []
    assert info.value.path and "mega.nz" in info.value.path
    assert not list(tmp_path.rglob("*"))


def test_unknown_handle_is_gone(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    with pytest.raises(mega.MegaGoneError, match="no longer exists"):
        mega.fetch(f"https://mega.nz/file/AAAAAAAA#{KEY43}", tmp_path)


def test_eagain_is_retried_then_succeeds(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    link = fake_mega.add_file("x.safetensors", embedding_bytes())
    fake_mega.api_failures.extend([-3, -3])
    (got,) = mega.fetch(link, tmp_path)
    assert got.path.is_file()


@pytest.mark.parametrize("code", [-3, -18])
def test_persistent_temporary_errors_say_retry_later(
    fake_mega: MegaStandIn, tmp_path: Path, code: int
) -> None:
    link = fake_mega.add_file("x.safetensors", embedding_bytes())
    fake_mega.api_failures.extend([code] * 10)
    with pytest.raises(mega.MegaRetryLaterError, match="temporarily unavailable") as info:
        mega.fetch(link, tmp_path)
    assert "retry" in str(info.value)
    assert len(fake_mega.api_failures) == 10 - 4  # TIREG_HTTP_RETRIES bounds the attempts


def test_download_509_is_quota_not_a_bad_link(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    link = fake_mega.add_file("x.safetensors", embedding_bytes())
    fake_mega.download_failures.append(509)
    with pytest.raises(mega.MegaQuotaError) as info:
        mega.fetch(link, tmp_path)
    assert "quota" in str(info.value) and "hours" in str(info.value)
    (got,) = mega.fetch(link, tmp_path)  # the quota came back
    assert got.path.is_file()


def test_tampered_ciphertext_fails_the_mac_and_keeps_nothing(
    fake_mega: MegaStandIn, tmp_path: Path
) -> None:
    link = fake_mega.add_file("x.safetensors", embedding_bytes())
    handle = mega.parse_link(link).handle
    stored = fake_mega.files[handle]
    stored.cipher = stored.cipher[:100] + bytes([stored.cipher[100] ^ 0x40]) + stored.cipher[101:]
    with pytest.raises(mega.MegaIntegrityError, match="MAC mismatch"):
        mega.fetch(link, tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    from tireg import config

    kept = [p for p in (config.cache_dir() / "mega").rglob("*") if p.is_file()]
    assert all(p.name.endswith(".lock.tireg-tmp") for p in kept)  # only the downloader's lock


def test_wrong_key_is_refused(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    link = fake_mega.add_file("x.safetensors", embedding_bytes())
    wrong = link.split("#")[0] + "#" + KEY43
    with pytest.raises(mega.MegaLinkError, match="key"):
        mega.fetch(wrong, tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/x", "x"),
        ("/etc/passwd", "passwd"),
        ("CON", "_CON"),
        ("nul.pt", "_nul.pt"),
        ("a\x00b\x1b[31m\nc.pt", "ab[31mc.pt"),
        ("..", "download"),
        ("C:\\Windows\\evil.pt", "evil.pt"),
    ],
)
def test_malicious_file_names_stay_inside(
    fake_mega: MegaStandIn, tmp_path: Path, name: str, expected: str
) -> None:
    dest = tmp_path / "dest"
    link = fake_mega.add_file(name, embedding_bytes())
    (got,) = mega.fetch(link, dest)
    assert got.path.parent == dest
    assert got.path.name == expected
    assert got.hints["mega_name"] == name  # the original is kept as a fact, not as a path
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [got.path]


def test_malicious_names_in_folders_stay_inside(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    link, _ = fake_mega.add_folder(
        {"..": {"../../escape.pt": embedding_bytes(1)}, "CON": {"a\tb.pt": embedding_bytes(2)}}
    )
    got = mega.fetch(link, dest)
    rels = sorted(str(f.path.relative_to(dest)) for f in got)
    # a folder named ".." has no usable name left; handles are never path parts
    assert rels == sorted(["_CON/ab.pt", "unnamed/escape.pt"])
    for f in got:
        assert f.path.resolve().is_relative_to(dest.resolve())


def test_size_cap(fake_mega: MegaStandIn, tmp_path: Path) -> None:
    link = fake_mega.add_file("big.safetensors", embedding_bytes(vectors=50))
    with pytest.raises(SourceError, match="limit"):
        mega.fetch(link, tmp_path, max_bytes=10_000)
    folder, _ = fake_mega.add_folder(
        {"big.pt": embedding_bytes(vectors=50), "ok.pt": embedding_bytes()}
    )
    got = mega.fetch(folder, tmp_path / "f", max_bytes=10_000)
    assert [f.path.name for f in got] == ["ok.pt"]
