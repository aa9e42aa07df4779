"""A plain HTTP file server on 127.0.0.1 with Range support and scripted failures.

Real sockets, real HTTP: the clients under test (requests, huggingface_hub) cannot tell it from a
remote host. Each path can be given a queue of faults consumed one request at a time, so a test
says "429, then a dropped connection, then success" and checks the client's behaviour.

Faults (strings):
  ``"429"``, ``"500"``, ``"503"`` ... an error status (429 carries ``Retry-After: 0``);
  ``"drop"``   send headers for the full body, half of the body, then close the connection;
  ``"html"``   a 200 ``text/html`` login page instead of the file;
  ``"short"``  a ``Content-Length`` larger than the bytes sent (then close).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.sources.servers import serve_in_background

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Log in</title></head><body>Sign in</body></html>"


@dataclass
class Served:
    """A file the server offers (or a redirect, when ``location`` is set)."""

    data: bytes = b""
    content_type: str = "application/octet-stream"
    disposition: str | None = None
    location: str | None = None  # answer 302 to here instead
    status: int = 200
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.data).hexdigest() + '"'


#: a handler for a dynamic path: (handler, path with query) -> True if it answered
Dynamic = Callable[[BaseHTTPRequestHandler, str], bool]


class FileServer:
    """Serve :class:`Served` entries by path; record every request."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.dynamic: list[Dynamic] = []
        self.latency = 0.0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, served: Served, *faults: str) -> str:
        """Serve ``served`` at ``path`` after the given faults; returns its absolute URL."""
        self.files[path] = served
        self.faults[path] = list(faults)
        return self.url + path

    def hits(self, path: str, method: str = "GET") -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.split("?")[0] == path)

    def next_fault(self, path: str) -> str | None:
        with self._lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def do_POST(self) -> None:  # API calls; the dynamic handlers read the body
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                server.requests.append((self.command, self.path, dict(self.headers.items())))
                if server.latency:
                    threading.Event().wait(server.latency)
                for handler in server.dynamic:
                    if handler(self, self.path):
                        return
                path = self.path.split("?")[0]
                served = server.files.get(path)
                if served is None:
                    return self.reply(404, b"not found", "text/plain")
                fault = server.next_fault(path)
                if fault and fault.isdigit():
                    extra = {"Retry-After": "0"} if fault == "429" else {}
                    return self.reply(int(fault), b"try later", "text/plain", extra)
                if fault == "html":
                    return self.reply(200, LOGIN_PAGE, "text/html; charset=utf-8")
                if served.location:
                    return self.reply(302, b"", "text/plain", {"Location": served.location})
                if served.status >= 400:
                    return self.reply(served.status, served.data, served.content_type)
                self.send_file(served, head, fault)

            def send_file(self, served: Served, head: bool, fault: str | None) -> None:
                data = served.data
                start = 0
                status = 200
                wanted = self.headers.get("Range", "")
                if_range = self.headers.get("If-Range")
                if wanted.startswith("bytes=") and (if_range is None or if_range == served.etag):
                    start = int(wanted[6:].split("-")[0])
                    if start >= len(data):
                        return self.reply(416, b"", "text/plain")
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", served.content_type)
                self.send_header("ETag", served.etag)
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if served.disposition:
                    self.send_header("Content-Disposition", served.disposition)
                for key, value in served.extra_headers.items():
                    self.send_header(key, value)
                length = len(body) + (100 if fault == "short" else 0)
                self.send_header("Content-Length", str(length))
                if fault in ("drop", "short"):
                    self.send_header("Connection", "close")
                self.end_headers()
                if head:
                    return
                if fault == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)
                if fault == "short":
                    self.close_connection = True

            def reply(
                self,
                status: int,
                body: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler


@contextmanager
def running(server: FileServer) -> Iterator[FileServer]:
    """Serve in a background thread for the duration of the block."""
    with serve_in_background(server.httpd):
        yield server
