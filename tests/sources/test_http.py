"""The shared downloader against a real loopback server with injected failures."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.sources.servers.http_server import FileServer, Served
from tireg.files import TMP_SUFFIX, sha256_file
from tireg.sources import SourceError, http
from tireg.sources.http import (
    SMALL_FILE,
    USER_AGENT,
    Downloaded,
    HttpStatusError,
    _locked,
    _Partial,
    _same_file,
    download,
    get_json,
    looks_like_html,
)

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX) and ".lock" not in p.name
    )


def test_download_names_file_from_content_disposition(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add(
        "/dl/1",
        Served(PAYLOAD, disposition="attachment; filename*=UTF-8''b%C3%A4d%20cat.safetensors"),
    )
    seen: list[tuple[int, int | None]] = []
    got = download(url, tmp_path, expected_sha256=SHA, progress=lambda d, t: seen.append((d, t)))
    assert got.path == tmp_path / "bäd cat.safetensors"
    assert got.path.read_bytes() == PAYLOAD and got.sha256 == SHA and got.size == len(PAYLOAD)
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert leftovers(tmp_path) == []


def test_hostile_disposition_name_stays_in_folder(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add(
        "/x", Served(PAYLOAD, disposition='attachment; filename="../../etc/passwd"')
    )
    got = download(url, tmp_path / "in")
    assert got.path.parent == tmp_path / "in" and got.path.name == "passwd"


def test_redirect_is_followed_and_named_by_final_url(
    file_server: FileServer, tmp_path: Path
) -> None:
    target = file_server.add("/store/real-name.pt", Served(PAYLOAD))
    url = file_server.add("/api/download/7", Served(location=target))
    got = download(url, tmp_path)
    assert got.path.name == "real-name.pt" and got.url_final == target


def test_redirect_loop_is_bounded(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/loop", Served(location=file_server.url + "/loop"))
    with pytest.raises(SourceError, match="redirects"):
        download(url, tmp_path)


def test_429_then_500_then_success(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD), "429", "500")
    got = download(url, tmp_path, expected_sha256=SHA)
    assert got.sha256 == SHA and file_server.hits("/f.bin") == 3


def test_persistent_500_gives_up_after_bounded_tries(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD), *["500"] * 10)
    with pytest.raises(SourceError, match="after 4 tries"):
        download(url, tmp_path)
    assert file_server.hits("/f.bin") == 4
    assert not (tmp_path / "f.bin").exists() and leftovers(tmp_path) == []


def test_dropped_connection_resumes_with_range(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD), "drop", "short")
    got = download(url, tmp_path, expected_sha256=SHA)
    assert got.path.read_bytes() == PAYLOAD
    ranges = [h.get("Range") for m, p, h in file_server.requests if p == "/f.bin"]
    assert ranges[0] is None and ranges[1] is not None  # resumed, not restarted
    assert 0 < int(ranges[1][6:-1]) <= len(PAYLOAD) // 2
    assert leftovers(tmp_path) == []


def test_resume_across_calls(file_server: FileServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TIREG_HTTP_RETRIES", "1")
    url = file_server.add("/f.bin", Served(PAYLOAD), "drop")
    with pytest.raises(SourceError, match="connection dropped"):
        download(url, tmp_path)
    assert len(leftovers(tmp_path)) == 2  # the prefix and its validator, kept for the next call
    got = download(url, tmp_path, expected_sha256=SHA)
    assert got.path.read_bytes() == PAYLOAD
    assert file_server.requests[-1][2]["Range"].startswith("bytes=")


def test_changed_file_is_not_spliced_onto_old_prefix(
    file_server: FileServer, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TIREG_HTTP_RETRIES", "1")
    url = file_server.add("/f.bin", Served(PAYLOAD), "drop")
    with pytest.raises(SourceError):
        download(url, tmp_path)
    new = os.urandom(1000)
    file_server.add("/f.bin", Served(new))  # new ETag: If-Range fails, server sends it whole
    got = download(url, tmp_path, expected_sha256=hashlib.sha256(new).hexdigest())
    assert got.path.read_bytes() == new


def test_wrong_hash_keeps_nothing(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD))
    with pytest.raises(SourceError, match="sha256 mismatch"):
        download(url, tmp_path, expected_sha256="0" * 64)
    assert list(p for p in tmp_path.iterdir() if ".lock" not in p.name) == []


def test_wrong_size_is_refused(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD))
    with pytest.raises(SourceError, match="size mismatch"):
        download(url, tmp_path, expected_size=len(PAYLOAD) + 1)


def test_what_the_first_reply_promises_is_checked(file_server: FileServer, tmp_path: Path) -> None:
    """``promised`` reads the reply before any redirect (the Hub's resolve, not its CDN)."""
    target = file_server.add("/cdn/f.bin", Served(PAYLOAD))
    url = file_server.add("/resolve/f.bin", Served(location=target))
    seen: list[str | None] = []

    def promise(sha: str | None, size: int | None):  # type: ignore[no-untyped-def]
        def read(headers) -> tuple[str | None, int | None]:  # type: ignore[no-untyped-def]
            seen.append(headers.get("Location"))
            return sha, size

        return read

    with pytest.raises(SourceError, match="sha256 mismatch"):
        download(url, tmp_path, filename="f.bin", promised=promise("0" * 64, None))
    with pytest.raises(SourceError, match="size mismatch"):
        download(url, tmp_path, filename="f.bin", promised=promise(SHA, len(PAYLOAD) + 1))
    assert not (tmp_path / "f.bin").exists() and leftovers(tmp_path) == []

    def refuse(headers) -> tuple[str | None, int | None]:  # type: ignore[no-untyped-def]
        raise SourceError("wrong commit")

    with pytest.raises(SourceError, match="wrong commit"):
        download(url, tmp_path, filename="f.bin", promised=refuse)
    assert not (tmp_path / "f.bin").exists() and leftovers(tmp_path) == []
    got = download(url, tmp_path, filename="f.bin", promised=promise(SHA.upper(), len(PAYLOAD)))
    assert got.path.read_bytes() == PAYLOAD and seen == [target] * 3


def test_html_instead_of_file(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD), "html")
    with pytest.raises(SourceError, match="HTML page"):
        download(url, tmp_path)
    assert not (tmp_path / "f.bin").exists() and leftovers(tmp_path) == []


def test_size_cap_from_header_and_while_streaming(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/big.bin", Served(PAYLOAD))
    with pytest.raises(SourceError, match="limit"):
        download(url, tmp_path, max_bytes=1000)
    assert leftovers(tmp_path) == []


def test_error_status_carries_code(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add(
        "/gone", Served(b'{"error":"nope"}', status=403, content_type="application/json")
    )
    with pytest.raises(HttpStatusError) as info:
        download(url, tmp_path)
    assert info.value.status == 403 and "nope" in info.value.body


def test_cached_file_with_known_hash_makes_no_request(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD))
    download(url, tmp_path, filename="f.bin", expected_sha256=SHA)
    download(url, tmp_path, filename="f.bin", expected_sha256=SHA)
    assert file_server.hits("/f.bin") == 1


def test_offline_uses_cache_and_says_when_missing(
    file_server: FileServer, tmp_path: Path, monkeypatch
) -> None:
    url = file_server.add("/f.bin", Served(PAYLOAD))
    download(url, tmp_path / "a")
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    assert download(url, tmp_path / "a").path.read_bytes() == PAYLOAD
    with pytest.raises(SourceError, match="offline"):
        download(url, tmp_path / "b")
    assert file_server.hits("/f.bin") == 1


def test_lock_files_do_not_pile_up(file_server: FileServer, tmp_path: Path) -> None:
    """Many downloads, some of one URL at once: only the finished files are left."""
    urls = [file_server.add(f"/f{i}.bin", Served(PAYLOAD[i:])) for i in range(6)]
    for url in urls:
        download(url, tmp_path)
    file_server.latency = 0.05  # the same URL four times at once: one lock holder, three not
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: download(urls[0], tmp_path, expected_sha256=SHA), range(4)))
    assert {g.path for g in got} == {tmp_path / "f0.bin"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{i}.bin" for i in range(6)]


def test_lock_is_deleted_on_release_and_never_shared(tmp_path: Path) -> None:
    partial = _Partial.for_url("http://127.0.0.1/x", tmp_path)
    lock_path = tmp_path / partial.data.name.replace(".part", ".lock")
    with _locked(partial) as first:
        assert first and lock_path.is_file()
        with _locked(partial) as second:
            assert not second  # a second download of the URL gets its own partial file
        early = lock_path.open("ab")  # opened before the holder lets go, as a racing process
    assert not lock_path.exists()
    fcntl = pytest.importorskip("fcntl")
    fcntl.flock(early.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # locks the deleted file...
    assert not _same_file(early, lock_path)  # ...which _locked notices, and takes a fresh one
    with _locked(partial) as again, lock_path.open("ab") as current:
        assert again and _same_file(current, lock_path)
    early.close()
    assert list(tmp_path.iterdir()) == []


def test_get_json_retries_and_detects_html(file_server: FileServer) -> None:
    url = file_server.add(
        "/api", Served(b'{"a": 1}', content_type="application/json"), "429", "503"
    )
    assert get_json(url) == {"a": 1}
    file_server.add(
        "/cf", Served(b"<!DOCTYPE html><title>Just a moment...</title>", content_type="text/html")
    )
    with pytest.raises(SourceError, match="HTML page"):
        get_json(file_server.url + "/cf")


def test_get_json_sends_params_and_user_agent(file_server: FileServer) -> None:
    url = file_server.add("/q", Served(b"[1]", content_type="application/json"))
    assert get_json(url, params={"query": "cat girl", "tag": ["a", "b"], "none": None}) == [1]
    [(_, path, headers)] = file_server.requests
    assert path == "/q?query=cat+girl&tag=a&tag=b"
    assert headers["User-Agent"] == USER_AGENT and headers["Accept"] == "application/json"


def test_authorization_is_dropped_when_a_redirect_leaves_the_host(
    file_server: FileServer, tmp_path: Path
) -> None:
    # 127.0.0.1 and localhost are two hosts to a client, and one server here
    elsewhere = file_server.url.replace("127.0.0.1", "localhost")
    file_server.add("/cdn/f.bin", Served(PAYLOAD))
    same_host = file_server.add("/api/same", Served(location=file_server.url + "/cdn/f.bin"))
    other_host = file_server.add("/api/other", Served(location=elsewhere + "/cdn/f.bin"))
    key = {"Authorization": "Bearer secret"}
    download(same_host, tmp_path / "a", headers=key, expected_sha256=SHA)
    download(other_host, tmp_path / "b", headers=key, expected_sha256=SHA)
    sent = [h.get("Authorization") for _, p, h in file_server.requests if p == "/cdn/f.bin"]
    assert sent == ["Bearer secret", None]
    first = [h.get("Authorization") for _, p, h in file_server.requests if p.startswith("/api")]
    assert first == ["Bearer secret", "Bearer secret"]


def test_netrc_credentials_are_sent_without_an_authorization_header(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password pass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    url = file_server.add("/private.bin", Served(PAYLOAD))
    download(url, tmp_path / "a", expected_sha256=SHA)
    download(url, tmp_path / "b", headers={"Authorization": "Bearer mine"}, expected_sha256=SHA)
    sent = [h.get("Authorization") for _, _, h in file_server.requests]
    assert sent == ["Basic dXNlcjpwYXNz", "Bearer mine"]


def test_proxy_from_the_environment(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://tireg-proxied.invalid/f.bin"  # no such host: only the proxy answers
    file_server.add(url, Served(PAYLOAD))  # a plain-HTTP proxy is asked for the whole URL
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", file_server.url)
    got = download(url, tmp_path / "a", expected_sha256=SHA)
    assert got.path.name == "f.bin" and [p for _, p, _ in file_server.requests] == [url]
    monkeypatch.setenv("NO_PROXY", "tireg-proxied.invalid")
    monkeypatch.setenv("TIREG_HTTP_RETRIES", "1")
    with pytest.raises(SourceError, match="connection failed"):
        download(url, tmp_path / "b")
    assert len(file_server.requests) == 1


def test_html_sniffing() -> None:
    assert looks_like_html(b"\n  <!DOCTYPE HTML><html>")
    assert looks_like_html(b"<div>", "text/html; charset=utf-8")
    assert not looks_like_html(b"PK\x03\x04", "text/html")
    assert not looks_like_html(b"\x08\x00\x00\x00\x00\x00\x00\x00{", None)


def test_a_small_file_of_unknown_size_takes_no_lock_and_matches_the_resumable_path(
    file_server: FileServer, tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply that turns out small is written to a private file of its own (no lock, no
    validator file beside it); the same bytes as the resumable path it shortcuts, file by file
    of the corpus, and a big reply still takes the resumable path."""

    def fetch(name: str, url: str, into: Path) -> tuple[Downloaded, set[str]]:
        seen: set[str] = set()  # what the folder held while the body was written

        def progress(done: int, total: int | None) -> None:
            seen.update(p.name.split(".")[-2] for p in into.iterdir() if p.name.startswith("."))

        return download(url, into, filename=name, progress=progress), seen

    files = sorted(p for p in corpus.iterdir() if p.is_file())
    for path in files:
        data = path.read_bytes()
        url = file_server.add(f"/c/{path.name}", Served(data))
        fast, kinds = fetch(path.name, url, tmp_path / "fast")
        if len(data) <= SMALL_FILE:
            assert kinds == {"part"}, path.name  # the private partial file alone
        else:
            assert kinds == {"part", "meta", "lock"}, path.name
        assert (fast.path.read_bytes(), fast.size) == (data, len(data))
        assert fast.sha256 == hashlib.sha256(data).hexdigest()
    assert any(p.stat().st_size <= SMALL_FILE for p in files)
    assert any(p.stat().st_size > SMALL_FILE for p in files)
    monkeypatch.setattr(http, "SMALL_FILE", 0)  # every file resumable, as before the shortcut
    for path in files:
        slow, kinds = fetch(path.name, file_server.url + f"/c/{path.name}", tmp_path / "slow")
        assert kinds == {"part", "meta", "lock"}
        fast = tmp_path / "fast" / path.name
        assert (slow.path.read_bytes(), slow.sha256) == (fast.read_bytes(), sha256_file(fast))
    for folder in ("fast", "slow"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [p.name for p in files]


def test_a_small_reply_dropped_is_fetched_again_into_its_own_file(
    file_server: FileServer, tmp_path: Path
) -> None:
    """The private file the first try created is reused (emptied) by the next try, and
    nothing but the finished file is left."""
    small = PAYLOAD[:4000]
    url = file_server.add("/s.bin", Served(small), "drop", "drop")
    got = download(url, tmp_path / "new")  # its folder is made by the first try
    assert got.path.read_bytes() == small and got.size == len(small)
    # the half a dropped reply sent is lost inside urllib3's one read of a small body: each
    # try starts over (a big body's received chunks are kept and resumed: see above)
    ranges = [h.get("Range") for m, p, h in file_server.requests if p == "/s.bin"]
    assert ranges == [None, None, None]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["s.bin"]


def test_netrc_is_looked_up_once_per_host_within_a_sync(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within ``netrc_per_host`` (a sync) the first answer for a host stands; outside it, and
    after it, every request looks again (requests' own rule), so no answer outlives a sync."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password pass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    url = file_server.add("/private.bin", Served(PAYLOAD))
    with http.netrc_per_host():
        download(url, tmp_path / "a", expected_sha256=SHA)
        netrc.write_text("machine 127.0.0.1 login other password word\n")
        download(url, tmp_path / "b", expected_sha256=SHA)
    download(url, tmp_path / "c", expected_sha256=SHA)
    sent = [h.get("Authorization") for _, _, h in file_server.requests]
    assert sent == ["Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz", "Basic b3RoZXI6d29yZA=="]
