"""Git repositories made by tests, served on 127.0.0.1 the ways real hosts serve them.

* :class:`GitHost`: smart HTTP through ``git http-backend`` (what GitLab and GitHub speak), plus
  GitLab's raw-file route ``/NS/PROJ/-/raw/SHA/PATH``, which serves Git LFS content in place of
  pointer files (from an in-memory LFS store), like gitlab.com does.
* :func:`git_daemon`: the ``git://`` protocol via ``git daemon --export-all --base-path``.

Repositories are real: a working copy per project, pushed to a bare repository that is served.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.sources.servers import serve_in_background

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True
    ).stdout


def lfs_pointer(data: bytes) -> bytes:
    oid = hashlib.sha256(data).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()
    )


class Project:
    """A working copy plus the bare repository a server exposes (``<root>/<name>.git``)."""

    def __init__(self, root: Path, name: str, branch: str = "main") -> None:
        self.bare = root / f"{name}.git"
        self.work = root.parent / "work" / name
        self.work.mkdir(parents=True)
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", "-b", branch, str(self.bare), cwd=root)
        git("config", "uploadpack.allowFilter", "true", cwd=self.bare)
        git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=self.bare)
        git("init", "-q", "-b", branch, cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self.branch = branch
        self.lfs: dict[str, bytes] = {}  # LFS store: sha256 -> content

    def commit(self, files: dict[str, bytes | None], message: str = "update") -> str:
        """Write (or delete, for None) files, commit, push; returns the commit sha."""
        for name, data in files.items():
            path = self.work / name
            if data is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", self.branch, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def commit_lfs(self, name: str, data: bytes) -> str:
        """Commit ``name`` as a Git LFS pointer, with the object in this project's LFS store."""
        self.lfs[hashlib.sha256(data).hexdigest()] = data
        return self.commit({name: lfs_pointer(data)}, f"lfs {name}")


class GitHost:
    """Smart HTTP git plus GitLab raw URLs, for the bare repositories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.projects: dict[str, Project] = {}
        self.requests: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                host.requests.append(f"GET {self.path}")
                if "/-/raw/" in self.path:
                    return host.raw(self)
                host.backend(self, b"")

            def do_POST(self) -> None:
                host.requests.append(f"POST {self.path}")
                if self.headers.get("Transfer-Encoding") == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if not size:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                host.backend(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def project(self, name: str, branch: str = "main") -> Project:
        self.projects[name] = Project(self.root, name, branch)
        return self.projects[name]

    def repo_url(self, name: str) -> str:
        return f"{self.url}/{name}.git"

    def backend(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        parts = urlsplit(handler.path)
        env = {
            **ENV,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": unquote(parts.path),
            "QUERY_STRING": parts.query,
            "REQUEST_METHOD": handler.command,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        if handler.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = handler.headers["Git-Protocol"]
        if handler.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = handler.headers["Content-Encoding"]
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        handler.send_response(status)
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def raw(self, handler: BaseHTTPRequestHandler) -> None:
        """``/NAME/-/raw/SHA/PATH``: the file at that commit, LFS pointers resolved."""
        name, _, rest = urlsplit(handler.path).path.strip("/").partition("/-/raw/")
        sha, _, path = rest.partition("/")
        project = self.projects.get(name)
        data = None
        if project:
            try:
                data = subprocess.run(
                    ["git", "cat-file", "blob", f"{sha}:{unquote(path)}"],
                    cwd=project.bare,
                    capture_output=True,
                    check=True,
                ).stdout
            except subprocess.CalledProcessError:
                data = None
        if data is not None and data.startswith(b"version https://git-lfs"):
            oid = data.split(b"oid sha256:")[1][:64].decode()
            data = project.lfs.get(oid) if project else None
        if data is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@contextmanager
def serving(host: GitHost) -> Iterator[GitHost]:
    with serve_in_background(host.httpd):
        yield host


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def git_daemon(base_path: Path) -> Iterator[str]:
    """``git daemon`` on 127.0.0.1; yields the ``git://127.0.0.1:PORT`` base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            f"--base-path={base_path}",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            "--informative-errors",
            str(base_path),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("git daemon did not start") from None
                time.sleep(0.02)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
