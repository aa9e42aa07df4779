"""Local stand-ins for remote services, on 127.0.0.1, spoken to by the real client libraries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    value: object,
    headers: dict[str, str] | None = None,
) -> bool:
    """Answer with a JSON body (no body for HEAD); returns True so that handlers can return it."""
    body = json.dumps(value).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for key, val in (headers or {}).items():
        handler.send_header(key, val)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
    return True


@contextmanager
def serve_in_background(httpd: HTTPServer) -> Iterator[None]:
    """Serve ``httpd`` from a daemon thread for the duration of the block, then close it."""
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()
