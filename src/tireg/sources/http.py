"""One careful HTTP downloader, shared by every source (plain URLs, Civitai, MEGA, git hosts).

Embedding files are small, but the hosts that serve them are not always kind: rate limits, 5xx
bursts, connections dropped mid-body, login or quota pages served with status 200, redirects to
short-lived signed URLs. :func:`download` handles all of that in one place so each source only
says *what* to fetch:

* bytes go to a temporary file beside the target (hidden, named as ``tireg.files`` names them),
  are sha256-hashed while streaming, verified, fsynced and renamed into place;
* an interrupted transfer resumes with ``Range`` (guarded by ``If-Range`` so a changed file is
  never spliced onto an old prefix), within one call and across calls;
* 429, 5xx, time-outs and dropped connections are retried with exponential backoff and jitter,
  honouring ``Retry-After``, a bounded number of times;
* redirects are followed a bounded number of times; sizes are capped before and while reading;
* an HTML page (a login, quota or error page) is recognised by its Content-Type or its doctype /
  ``<html`` root and refused;
* the file name from ``Content-Disposition`` or the URL is made safe by
  :func:`tireg.paths.safe_part` and joined with :func:`tireg.paths.join_under`.

Offline (``TIREG_OFFLINE`` / ``HF_HUB_OFFLINE``) nothing is requested: a file already in the
destination folder is returned, anything else is a :class:`SourceError` saying so.
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import hashlib
import http.client
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.sessions import SessionRedirectMixin
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_auth_from_url,
    get_environ_proxies,
    get_netrc_auth,
    requote_uri,
    select_proxy,
)

from tireg import __version__
from tireg.config import offline
from tireg.errors import ends_early
from tireg.files import (
    MAX_FILE_BYTES,
    TMP_SUFFIX,
    fsync_dir,
    sha256_file,
    unique_part,
    write_all,
)
from tireg.paths import join_under, safe_part
from tireg.progress import DownloadProgress
from tireg.sources import SourceError

#: redirects followed before giving up (Civitai uses one, to a signed storage URL)
MAX_REDIRECTS = 10
#: statuses worth another try: rate limits and server trouble
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: seconds to wait for a connection / between bytes of a reply
TIMEOUT = (10.0, 60.0)
_TIMEOUT = urllib3.Timeout(connect=TIMEOUT[0], read=TIMEOUT[1])
#: pooled keep-alive connections per host: a sync runs 32 downloads at once
POOL_SIZE = 64
USER_AGENT = f"tireg/{__version__} (textual-inversion registry; urllib3/{urllib3.__version__})"
CHUNK = 64 * 1024


_OFFLINE_HINT = "unset TIREG_OFFLINE and HF_HUB_OFFLINE to download"


class HttpStatusError(SourceError):
    """The server answered with an error status; sources map ``status`` to their own advice."""

    def __init__(
        self, message: str, *, status: int, url: str, body: str = "", hint: str | None = None
    ):
        super().__init__(message, path=url, hint=hint)
        self.status = status
        self.url = url
        self.body = body


@dataclass(frozen=True)
class Downloaded:
    """A complete, verified file in its final place."""

    path: Path
    sha256: str
    size: int
    url_final: str  # after redirects


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures.

    ``TIREG_HTTP_RETRIES`` and ``TIREG_HTTP_BACKOFF`` (base seconds) override the defaults, so a
    user on a flaky line can be more patient and a test can be quick.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        default = cls()
        try:
            attempts = int(os.environ.get("TIREG_HTTP_RETRIES", default.attempts))
            base = float(os.environ.get("TIREG_HTTP_BACKOFF", default.base_delay))
        except ValueError:
            return default
        return cls(
            attempts=max(1, attempts), base_delay=max(0.0, base), max_delay=default.max_delay
        )

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before try ``attempt + 1``: ``Retry-After`` if given, else backoff."""
        if retry_after:
            wanted = _parse_retry_after(retry_after)
            if wanted is not None:
                return min(wanted, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * (2**attempt))
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_local = threading.local()


def http_session() -> requests.Session:
    """This thread's session: a real User-Agent, pooled connections, bounded redirects.

    Sessions are per thread because ``requests.Session`` is not documented as thread-safe and
    downloads run in thread pools.
    """
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        session.max_redirects = MAX_REDIRECTS
        _local.session = session
    return session


# ------------------------------------------------------------------------------------ transport
#
# Downloads and JSON calls (a sync makes three per repo) go straight to urllib3, the library
# requests sends through: ``Session.request`` spent more CPU per call than the transfer itself
# (merging settings, preparing, hooks, adapters). The environment is read per request with
# requests' own functions, so the rules stay requests' rules: proxies and ``NO_PROXY``
# (``get_environ_proxies``, ``select_proxy``), ``.netrc`` credentials (``get_netrc_auth``),
# ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` else certifi, and which redirects drop the
# ``Authorization`` header (``SessionRedirectMixin.should_strip_auth``).

_REDIRECT_RULES = SessionRedirectMixin()
#: one urllib3 manager per (proxy, CA bundle): its connection pools are thread-safe and shared
_managers: dict[tuple[str | None, str], urllib3.PoolManager] = {}
_managers_lock = threading.Lock()


def _manager(url: str) -> urllib3.PoolManager:
    """The connection pools for ``url``: through the proxy the environment names, if any."""
    proxy = select_proxy(url, get_environ_proxies(url)) or None
    bundle = (
        os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or DEFAULT_CA_BUNDLE_PATH
    )
    key = (proxy, bundle)
    manager = _managers.get(key)
    if manager is None:
        with _managers_lock:
            manager = _managers.get(key) or _new_manager(proxy, bundle)
            _managers[key] = manager
    return manager


def _new_manager(proxy: str | None, bundle: str) -> urllib3.PoolManager:
    """A manager set up as requests' ``HTTPAdapter.proxy_manager_for`` sets its own up."""
    where = {"ca_cert_dir": bundle} if Path(bundle).is_dir() else {"ca_certs": bundle}
    pools: dict[str, Any] = {"maxsize": POOL_SIZE, "cert_reqs": "CERT_REQUIRED", **where}
    if proxy is None:
        return urllib3.PoolManager(**pools)
    username, password = get_auth_from_url(proxy)
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager

        return SOCKSProxyManager(proxy, username=username, password=password, **pools)
    auth = urllib3.make_headers(proxy_basic_auth=f"{username}:{password}") if username else {}
    return urllib3.proxy_from_url(proxy, proxy_headers=auth, **pools)


@dataclass
class _Reply:
    """A server's answer, after any redirects; its body is still to be read."""

    raw: urllib3.BaseHTTPResponse
    url: str  # after redirects
    first_headers: Mapping[str, str]  # the first reply's, before any redirect

    @property
    def status(self) -> int:
        return self.raw.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.raw.headers

    def error(self, content: bytes | None = None) -> HttpStatusError:
        """The status as an error, with the body's first 2 KB (unless it is an HTML page);
        ``content`` is the body where it was read already."""
        if content is None:
            content = b""
            with contextlib.suppress(Exception):
                content = self.raw.read(2048, decode_content=True)
        html = looks_like_html(content, self.headers.get("Content-Type"))
        body = "" if html else content[:2048].decode("utf-8", "replace")
        return HttpStatusError(
            f"HTTP {self.status} {self.raw.reason or ''}".strip(),
            status=self.status,
            url=self.url,
            body=body,
        )

    def close(self) -> None:
        """Give the connection back: kept alive if the body was read, else closed."""
        self.raw.close()
        self.raw.release_conn()


def _send(url: str, headers: Mapping[str, str], *, stream: bool) -> urllib3.BaseHTTPResponse:
    """One request, its target sent as the URL spells it (as requests sends it: urllib3's
    ``PoolManager.urlopen`` would first drop ``.`` and ``..`` segments, asking for another path).
    A plain-HTTP proxy is sent the whole URL, by its manager."""
    manager = _manager(url)
    options: dict[str, Any] = {
        "headers": headers,
        "redirect": False,
        "retries": False,
        "preload_content": not stream,
        "timeout": _TIMEOUT,
    }
    if isinstance(manager, urllib3.ProxyManager) and url.startswith("http:"):
        return manager.urlopen("GET", url, **options)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return manager.connection_from_url(url).urlopen("GET", target, **options)


#: ``.netrc`` answers per (``NETRC``, home folder, host) while :func:`netrc_per_host` is on
_netrc_memo: dict[tuple[str | None, str, str | None], tuple[str, str] | None] | None = None
_netrc_users = 0
_netrc_lock = threading.Lock()


@contextlib.contextmanager
def netrc_per_host() -> Iterator[None]:
    """Within this block, ``.netrc`` is looked up once per host, not once per request.

    requests looks it up for every request it prepares (``sessions.py``
    ``Session.prepare_request``: ``get_netrc_auth(url)`` when ``trust_env`` and no auth was
    given), and ``get_netrc_auth`` answers from ``NETRC`` (else ``~/.netrc``, ``~/_netrc``) and
    the URL's host alone: a file-system look at both names per request, a few thousand in a
    sync. A sync (one command) asks the same few hosts thousands of times; it takes the answer
    its first request got for each host, as it takes the proxy settings and the token once.
    Nested and concurrent blocks share one memo, dropped when the last one ends.
    """
    global _netrc_memo, _netrc_users
    with _netrc_lock:
        _netrc_users += 1
        if _netrc_memo is None:
            _netrc_memo = {}
    try:
        yield
    finally:
        with _netrc_lock:
            _netrc_users -= 1
            if not _netrc_users:
                _netrc_memo = None


def _netrc_auth(url: str) -> tuple[str, str] | None:
    """requests' ``get_netrc_auth(url)``, once per host inside :func:`netrc_per_host`."""
    memo = _netrc_memo
    if memo is None:
        return get_netrc_auth(url)
    home = os.path.expanduser("~")  # noqa: PTH111 - what get_netrc_auth expands
    key = (os.environ.get("NETRC"), home, urlsplit(url).hostname)
    if key not in memo:
        memo[key] = get_netrc_auth(url)
    return memo[key]


class _ConnectionFailed(Exception):
    """No answer: the connection failed or timed out (``kind`` says which, for messages)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _get(url: str, headers: Mapping[str, str], *, stream: bool) -> _Reply:
    """GET ``url``, following at most :data:`MAX_REDIRECTS` redirects.

    Redirects are followed here rather than by urllib3 so that the first reply's headers are
    kept (the Hub states a file's sha256 there, before sending it to its CDN), and so that
    ``Authorization`` is dropped where requests drops it. Nothing is retried here: the callers'
    loops retry, with backoff.
    """
    sent = {
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "gzip, deflate",
        "Accept": "*/*",
        "Connection": "keep-alive",
        **headers,
    }
    if not any(name.lower() == "authorization" for name in sent):
        netrc = _netrc_auth(url)
        if netrc:
            basic = urllib3.make_headers(basic_auth=":".join(netrc))
            sent["Authorization"] = basic["authorization"]
    first: Mapping[str, str] | None = None
    asked = url = requote_uri(url)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            raw = _send(url, sent, stream=stream)
        except (urllib3.exceptions.LocationValueError, ValueError):
            raise SourceError("not a valid http(s) URL", path=url) from None
        except urllib3.exceptions.TimeoutError:
            raise _ConnectionFailed("Timeout") from None
        except urllib3.exceptions.HTTPError:
            raise _ConnectionFailed("ConnectionError") from None
        first = raw.headers if first is None else first
        location = raw.get_redirect_location()
        if not location:
            return _Reply(raw, url, first)
        raw.drain_conn()
        raw.release_conn()
        target = requote_uri(urljoin(url, location))
        if _REDIRECT_RULES.should_strip_auth(url, target):
            sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
        url = target
    raise SourceError(f"more than {MAX_REDIRECTS} redirects", path=asked)


# ---------------------------------------------------------------------------------------- names


def filename_from_response(response: _Reply) -> str | None:
    """The name a server suggests: ``Content-Disposition`` (``filename*`` first), else the URL."""
    disposition = response.headers.get("Content-Disposition")
    if disposition:
        message = email.message.Message()
        message["Content-Disposition"] = disposition
        suggested = message.get_filename()
        if suggested:
            return safe_part(suggested, fallback="download")
    tail = unquote(urlsplit(response.url).path.rsplit("/", 1)[-1])
    return safe_part(tail, fallback="download") if tail else None


# ------------------------------------------------------------------------------------- sniffing

#: a real HTML document's start: a doctype or the ``<html`` root element itself. ``<meta``,
#: ``<head``, ``<!--`` and the like are not enough: a trigger file such as the real concept
#: ``<metagabe>``'s ``token_identifier.txt`` starts with them.
_HTML_ROOT = re.compile(rb"<!doctype\s+html[\s>]|<html[\s>]")
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def looks_like_html(first_bytes: bytes, content_type: str | None = None) -> bool:
    """True for an HTML page where a file was expected (login, quota, Cloudflare, error pages).

    A page is what the server calls ``text/html`` (and that starts like markup), or anything
    whose first bytes are a doctype or an ``<html`` root; never a file's first tag alone.
    """
    head = first_bytes[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if _HTML_ROOT.match(head):
        return True
    is_html_type = (content_type or "").split(";")[0].strip().lower() in _HTML_TYPES
    return is_html_type and head.startswith(b"<")


def _html_error(url: str) -> SourceError:
    return SourceError(
        "got an HTML page (login/quota/error?) instead of a file",
        path=url,
        hint="open the URL in a browser; the host may need a login, an API key, or a pause",
    )


# ------------------------------------------------------------------------------------ download


class _Transient(Exception):
    """A failure worth retrying (after ``retry_after`` seconds, if the server said)."""

    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class _Partial:
    """The temporary file of one download, with what validates its prefix for a resume.

    A *shared* partial is named after the URL, so a later call resumes it (its validator is
    kept in a file beside it); a private one belongs to one call and keeps its validator in
    memory, for resumes between that call's own tries.
    """

    data: Path
    meta: Path
    shared: bool = True
    held: str | None = None
    created: bool = False  # a private one: whether this call has created its file yet

    @classmethod
    def for_url(cls, url: str, dest_dir: Path) -> _Partial:
        key = hashlib.sha256(url.encode()).hexdigest()[:20]
        return cls(dest_dir / f".{key}.part{TMP_SUFFIX}", dest_dir / f".{key}.meta{TMP_SUFFIX}")

    @classmethod
    def private(cls, dest_dir: Path) -> _Partial:
        # unique to this call (this process's id, and a part no other call of it gets, as
        # ``tireg.files`` names its temporary files), so there is nothing to clear first: the
        # file is created with ``O_EXCL``. A kill may leave one behind, hidden and named as a
        # temporary file, which no cache read takes for a file.
        unique = f"{os.getpid()}-{unique_part()}"
        return cls(
            dest_dir / f".{unique}.part{TMP_SUFFIX}",
            dest_dir / f".{unique}.meta{TMP_SUFFIX}",
            shared=False,
        )

    def validator(self) -> str | None:
        if not self.shared:
            return self.held
        try:
            return str(json.loads(self.meta.read_text())["validator"]) or None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember(self, validator: str | None) -> None:
        if not self.shared:
            self.held = validator
        elif validator:
            self.meta.write_text(json.dumps({"validator": validator}))
        else:
            self.meta.unlink(missing_ok=True)

    def size(self) -> int:
        try:
            return self.data.stat().st_size
        except FileNotFoundError:
            return 0

    def open(self, *, append: bool) -> int:
        """The file to write to (a raw descriptor: a buffered file object asks the kernel for
        its size and whether it is a terminal), appended to for a resume, else empty. Its
        folder is made when missing (the first file of a new cache folder), not per call."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        if not self.shared and not self.created:
            flags |= os.O_EXCL  # a private file is new: never an existing file or a link
        try:
            try:
                fd = os.open(self.data, flags, 0o666)
            except FileNotFoundError:
                self.data.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.data, flags, 0o666)
        except OSError as exc:  # a read-only mount or an unwritable TIREG_HOME
            raise SourceError(
                f"cannot write the download: {exc.strerror or exc}",
                path=exc.filename or self.data,
                hint="check permissions, or set TIREG_HOME to a writable place",
            ) from exc
        self.created = True
        return fd

    def clear(self) -> None:
        if self.shared or self.created:
            self.data.unlink(missing_ok=True)
        if self.shared:
            self.meta.unlink(missing_ok=True)
        self.held = None


#: what a server's headers promise about the file it sends: (sha256 or None, size or None)
Promise = Callable[[Mapping[str, str]], tuple[str | None, int | None]]

#: files at most this big (by ``expected_size``, ``max_bytes`` itself, or else the reply's
#: size) skip the shared, resumable partial file and its lock: one round trip fetches them, so
#: there is nothing worth resuming, and on a sync of a thousand concept repos (two text files
#: and a small embedding each) the lock and validator files were most of the file-system work
SMALL_FILE = 64 * 1024


def download(
    url: str,
    dest_dir: str | os.PathLike[str],
    *,
    filename: str | None = None,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    headers: Mapping[str, str] | None = None,
    progress: DownloadProgress | None = None,
    retry: RetryPolicy | None = None,
    durable: bool = True,
    promised: Promise | None = None,
    proven: bool = False,
) -> Downloaded:
    """Download ``url`` into ``dest_dir`` and return the verified file.

    ``filename`` (made safe) overrides the server's name. With ``expected_sha256`` an existing
    target with that hash is returned without any request, and a mismatch is an error (nothing is
    left behind). ``headers`` are sent on the first request; ``Authorization`` is dropped
    when a redirect leaves the host (requests' rule), so an API key never reaches a storage CDN.
    ``durable=False`` skips the fsyncs (the rename stays atomic), for cache entries that are
    cheap to fetch again: on many disks each fsync costs milliseconds.
    ``promised`` reads the headers of the first response (before any redirect) and returns the
    sha256 and size they promise (or raises :class:`SourceError` to refuse the reply); what it
    gives is checked like ``expected_sha256`` / ``expected_size`` where those were not passed,
    before the file is moved into place. The Hub says a file's LFS sha256 only on its resolve
    response, so a caller needs no second request to learn it.
    ``proven``: ``filename`` under ``dest_dir`` is a path the caller has just built with
    :func:`tireg.paths.join_under` itself (the Hub's cache does), so it is not proven twice.
    """
    dest = Path(dest_dir)
    expected = expected_sha256.lower() if expected_sha256 else None
    target: Path | None = None  # known before any request when the caller names the file
    if filename is not None and proven:
        target = dest / filename
    elif filename is not None:
        filename = safe_part(filename, fallback="download")
        target = join_under(dest, filename)
    if target is not None:
        cached = _cached_file(target, expected)
        if cached is not None:
            return Downloaded(cached, sha256_file(cached), cached.stat().st_size, url)
    if offline():
        return _offline_copy(url, dest, filename, expected)

    policy = retry or RetryPolicy.from_env()
    bound = max_bytes if expected_size is None else min(expected_size, max_bytes)
    with contextlib.ExitStack() as held:
        # a small file, or another download of the same URL is in flight (do not share its
        # file): a private partial file, moved into place or removed (no later call could
        # resume it). A big one resumes the URL's shared partial file, under its lock.
        job = _Job(
            url,
            dest,
            _Partial.private(dest),
            target,
            expected,
            expected_size,
            max_bytes,
            progress,
            durable,
            promised,
        )
        if bound > SMALL_FILE:
            shared = _Partial.for_url(url, dest)
            if expected_size is None and shared.validator() is None:
                job.resumable, job.held = shared, held  # taken if the reply is big (attempt)
            elif held.enter_context(_locked(shared)):
                job.partial = shared
        try:
            return job.run(dict(headers or {}), policy)
        except BaseException:
            if not job.partial.shared:
                job.partial.clear()
            raise


@dataclass
class _Job:
    """One download in progress: where it goes and what it must turn out to be."""

    url: str
    dest: Path
    partial: _Partial
    target: Path | None  # the caller's file name joined under ``dest``; else the server's
    expected: str | None
    expected_size: int | None
    max_bytes: int
    progress: DownloadProgress | None
    durable: bool
    promised: Promise | None = None
    #: the URL's shared partial file, when the size was unknown and there was nothing to
    #: resume: taken (under its lock, kept in ``held`` until the download ends) once a reply
    #: shows a big file or hides its size, else left alone (:meth:`_resumable_if_big`)
    resumable: _Partial | None = None
    held: contextlib.ExitStack | None = None

    def run(self, headers: dict[str, str], policy: RetryPolicy) -> Downloaded:
        """Try until the file is complete and verified, a permanent error, or tries run out."""
        restarted_after_mismatch = False
        attempt = 0
        while True:
            try:
                name, url_final, resumed, sha, size = self.attempt(headers)
            except _Transient as exc:
                attempt += 1
                if attempt >= policy.attempts:
                    if self.partial.validator() is None:
                        self.partial.clear()  # keep only a prefix the next call can resume
                    raise SourceError(
                        f"download failed after {attempt} tries: {exc}",
                        path=self.url,
                        hint="the server is busy or the connection is unreliable; try again later",
                    ) from None
                time.sleep(policy.delay(attempt - 1, exc.retry_after))
                continue
            except SourceError:
                self.partial.clear()  # refused (HTML, too big, error status): nothing to resume
                raise
            except BaseException:
                if self.partial.validator() is None:
                    self.partial.clear()  # interrupted, and the prefix cannot be validated
                raise
            if self.expected and sha != self.expected:
                self.partial.clear()
                if resumed and not restarted_after_mismatch:
                    restarted_after_mismatch = True  # the old prefix may be stale: start over
                    continue
                raise SourceError(
                    f"sha256 mismatch: expected {self.expected}, got {sha}",
                    path=self.url,
                    hint="the file changed on the server or was corrupted; nothing was kept",
                )
            if self.expected_size is not None and size != self.expected_size:
                self.partial.clear()
                raise SourceError(
                    f"size mismatch: expected {self.expected_size} bytes, got {size}",
                    path=self.url,
                )
            target = self.target or join_under(self.dest, name)
            self.partial.data.replace(target)
            if self.partial.shared:
                self.partial.meta.unlink(missing_ok=True)
            if self.durable:
                fsync_dir(self.dest)
            return Downloaded(target, sha, size, url_final)

    def attempt(self, headers: dict[str, str]) -> tuple[str, str, bool, str, int]:
        """One request into the partial file; returns (final name, final URL, resumed?, the
        partial file's sha256 and size)."""
        request_headers = {"Accept-Encoding": "identity", **headers}  # ranges of the real bytes
        validator = self.partial.validator()
        have = self.partial.size() if validator else 0  # a prefix without one is never resumed
        if have and validator and (self.expected_size is None or have < self.expected_size):
            request_headers["Range"] = f"bytes={have}-"
            request_headers["If-Range"] = validator
        else:
            have = 0
        try:
            response = _get(self.url, request_headers, stream=True)
        except _ConnectionFailed as exc:
            raise _Transient(f"connection failed ({exc.kind})") from None
        with contextlib.closing(response):
            status = response.status
            if status in RETRY_STATUSES:
                raise _Transient(f"HTTP {status}", response.headers.get("Retry-After"))
            if status == 416 and have:
                self.partial.clear()  # our prefix is not a prefix of this file: start again
                raise _Transient("range not satisfiable, restarting", "0")
            if status >= 400:
                raise response.error()
            if self.promised is not None:
                sha, size = self.promised(response.first_headers)
                if self.expected is None and sha:
                    self.expected = sha.lower()
                if self.expected_size is None:
                    self.expected_size = size
            resumed = status == 206 and have > 0 and _range_start(response) == have
            if not resumed:
                have = 0
            total = _total_size(response, have)
            if total is not None and total > self.max_bytes:
                raise SourceError(
                    f"refusing a {total}-byte download (limit {self.max_bytes} bytes)",
                    path=self.url,
                    hint="embeddings are KB to a few MB; is this the right URL?",
                )
            self._resumable_if_big(total)
            self.partial.remember(_validator(response))
            name = self.target.name if self.target else None
            name = name or filename_from_response(response) or "download"
            sha, size = self.stream_body(response, have, total)
            return name, response.url, resumed, sha, size

    def _resumable_if_big(self, total: int | None) -> None:
        """Write a big file (over :data:`SMALL_FILE`, or of unknown size) to the URL's shared
        partial file, so that a later call can resume it, if its lock is free; decided on the
        first reply. Most files of unknown size (a Hub repo's embedding: the listing gives no
        sizes) are small, and skip the lock and validator files that resuming needs."""
        shared, self.resumable = self.resumable, None
        if shared is None or self.held is None or (total is not None and total <= SMALL_FILE):
            return
        if self.held.enter_context(_locked(shared)):
            self.partial = shared

    def stream_body(self, response: _Reply, have: int, total: int | None) -> tuple[str, int]:
        """Append the body to the partial file, sniffing its start and counting its size;
        return the whole file's sha256 (a resumed prefix hashed first, from the file) and
        size."""
        done = have
        first = have == 0
        digest = hashlib.sha256()
        if have:
            with self.partial.data.open("rb") as prefix:
                while block := prefix.read(CHUNK):
                    digest.update(block)
        out = self.partial.open(append=bool(have))
        try:
            for chunk in response.raw.stream(CHUNK, decode_content=True):
                if first:
                    first = False
                    if looks_like_html(chunk, response.headers.get("Content-Type")):
                        raise _html_error(response.url)
                done += len(chunk)
                if done > self.max_bytes:
                    raise SourceError(
                        f"download exceeds the {self.max_bytes}-byte limit", path=response.url
                    )
                write_all(out, chunk)
                digest.update(chunk)
                if self.progress:
                    self.progress(done, total)
            if self.durable:
                os.fsync(out)
        except urllib3.exceptions.ReadTimeoutError:
            raise _Transient(f"read timed out after {done} bytes") from None
        except urllib3.exceptions.HTTPError as exc:
            got = done + _read_before_drop(exc)
            if total is not None and got < total:
                raise _Transient(f"connection dropped; {ends_early(got, total)}") from None
            raise _Transient(
                f"connection dropped after {done} bytes ({type(exc).__name__})"
            ) from None
        finally:
            os.close(out)
        if total is not None and done != total:
            too_long = f"the body has {done} bytes, not {total}"
            raise _Transient(ends_early(done, total) if done < total else too_long)
        return digest.hexdigest(), done


def _read_before_drop(exc: BaseException) -> int:
    """Bytes urllib3 had read in the failed call before the body ended early (then dropped).

    A body shorter than its ``Content-Length`` raises ``IncompleteRead(partial, expected)``
    (wrapped in urllib3's ``ProtocolError``) and the partial chunk is lost with it; its count is
    what makes "ends after N of M bytes" true.
    """
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if isinstance(item, http.client.IncompleteRead):
            return len(item.partial) if isinstance(item.partial, bytes) else int(item.partial)
        if isinstance(item, BaseException):
            pending.extend(item.args)
    return 0


def _range_start(response: _Reply) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _total_size(response: _Reply, have: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes \d+-\d+/(\d+)", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None


def _validator(response: _Reply) -> str | None:
    """A strong ETag or Last-Modified: what makes a later ``If-Range`` resume safe."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


@contextlib.contextmanager
def _locked(partial: _Partial) -> Iterator[bool]:
    """Lock the URL's partial file; yields False when another download holds it.

    The lock file is deleted on release, while still locked, so lock files do not pile up in
    the caches (one per URL ever fetched). That is safe with ``flock`` only because a taker
    checks, once it holds the lock, that the path still names the file it locked: a process
    that opened the file just before the holder deleted it would otherwise lock a file no one
    else can see, and two downloads would share one partial file. A kill while holding leaves
    the lock file behind; its name is fixed per URL, so the next download of that URL reuses it.
    """
    partial.data.parent.mkdir(parents=True, exist_ok=True)
    lock_path = partial.data.with_name(partial.data.name.replace(".part", ".lock"))
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; resume still works for one process
        yield True
        return
    while True:
        handle: IO[bytes] = lock_path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            yield False
            return
        if _same_file(handle, lock_path):
            break
        handle.close()  # locked a file its holder had just deleted: take the current one
    try:
        yield True
    finally:
        lock_path.unlink(missing_ok=True)  # before unlocking: see the docstring
        handle.close()  # closing releases the lock


def _same_file(handle: IO[bytes], path: Path) -> bool:
    """Whether ``path`` still names the open file ``handle`` (same device and inode)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


# ---------------------------------------------------------------------------------- cache, JSON


def _cached_file(target: Path, expected: str | None) -> Path | None:
    """``target`` if it is already there and has the hash known for it (none: not reused)."""
    if expected is None or not target.is_file():
        return None
    return target if sha256_file(target) == expected else None


def _offline_copy(url: str, dest: Path, filename: str | None, expected: str | None) -> Downloaded:
    """Offline: the one finished file already in ``dest`` (sources give each URL its own folder)."""
    candidates = (
        [join_under(dest, filename)]
        if filename
        else sorted(p for p in dest.glob("*") if p.is_file() and not p.name.startswith("."))
        if dest.is_dir()
        else []
    )
    found = [p for p in candidates if p.is_file()]
    if len(found) == 1:
        sha = sha256_file(found[0])
        if expected is None or sha == expected:
            return Downloaded(found[0], sha, found[0].stat().st_size, url)
    raise SourceError("offline, and this file is not in the cache", path=url, hint=_OFFLINE_HINT)


def get_json(
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
) -> Any:
    """GET a JSON API with the same retries and HTML detection as downloads.

    Error statuses raise :class:`HttpStatusError` (with the body's first KB) so each source can
    turn 401/403/404 into its own advice.
    """
    if offline():
        raise SourceError("offline: not asking the server", path=url, hint=_OFFLINE_HINT)
    policy = retry or RetryPolicy.from_env()
    request_headers = {"Accept": "application/json", **(headers or {})}
    query = urlencode([(k, v) for k, v in (params or {}).items() if v is not None], doseq=True)
    if query:
        url += ("&" if urlsplit(url).query else "?") + query
    for attempt in range(policy.attempts):
        retry_after: str | None = None
        try:
            response = _get(url, request_headers, stream=False)
        except _ConnectionFailed as exc:
            reason = f"connection failed ({exc.kind})"
        else:
            with contextlib.closing(response):
                content = response.raw.data
                if response.status not in RETRY_STATUSES:
                    if response.status >= 400:
                        raise response.error(content)
                    if looks_like_html(content, response.headers.get("Content-Type")):
                        raise _html_error(response.url)
                    try:
                        return json.loads(content)
                    except ValueError:
                        raise SourceError(
                            "the server's reply is not JSON", path=response.url
                        ) from None
                reason = f"HTTP {response.status}"
                retry_after = response.headers.get("Retry-After")
        if attempt + 1 < policy.attempts:
            time.sleep(policy.delay(attempt, retry_after))
    raise SourceError(
        f"request failed after {policy.attempts} tries: {reason}",
        path=url,
        hint="the server is busy or unreachable; try again later",
    )
