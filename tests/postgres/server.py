"""A throwaway PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary folder.

Why this shape: the catalogue suite must run against a real server, and CI machines are fresh
Debian boxes where tests run as root. PostgreSQL refuses to run as root, so when we are root the
server's folder is handed to the unprivileged ``postgres`` user (Debian's package creates it)
and every server command runs through ``runuser``. The server listens on 127.0.0.1 on a free
port, trusts local connections (nothing else can reach it) and skips fsync: the tests need its
semantics (transactions, locks, MVCC), not its durability.

Each test gets its own database, cloned from a template migrated once (``CREATE DATABASE ...
TEMPLATE``), so tests never see each other's rows and the migrations' cost is paid once.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

#: the server's unprivileged account when tests run as root (Debian's package creates it)
SERVER_USER = "postgres"
TEMPLATE = "tireg_template"


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest Debian version first), or ``None``."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server and what it takes to make databases on it."""

    bin_dir: Path
    data_dir: Path
    port: int
    user: str
    _numbers: Iterator[int] = field(default_factory=itertools.count)
    #: drops databases in the background: DROP DATABASE waits for a checkpoint (about half a
    #: second), which no test needs to wait for
    _dropper: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str) -> None:
        """Run statements on the maintenance database, outside any transaction."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]  # our own literal SQL

    def fresh_database(self) -> str:
        """A new database cloned from the migrated template; returns its name."""
        name = f"tireg_test_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def drop_database(self, name: str) -> None:
        self._dropper.submit(self.admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _as_server_user(command: list[str], *, root: bool) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if root else command


def _run(command: list[str], *, root: bool) -> None:
    """Run a server command; a failure shows what the command said, not just its exit code."""
    done = subprocess.run(
        _as_server_user(command, root=root), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def running_server(bin_dir: Path) -> Iterator[Server]:
    """Start a server in a new temporary folder; stop it and delete the folder on exit."""
    root = os.geteuid() == 0
    # /tmp itself, not pytest's per-user folder: the server user must be able to reach it
    base = Path(tempfile.mkdtemp(prefix="tireg-pg-"))
    data_dir = base / "data"
    if root:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(base, account.pw_uid, account.pw_gid)
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{base}' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "--pgdata", str(data_dir)]
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",  # pg_trgm sees CJK letters as letters only in a UTF-8 ctype
                "--username",
                SERVER_USER,
                "--no-sync",
            ],
            root=root,
        )
        _run(
            [*pg_ctl, "--log", str(base / "server.log"), "--options", options, "--wait", "start"],
            root=root,
        )
        server = Server(bin_dir=bin_dir, data_dir=data_dir, port=port, user=SERVER_USER)
        try:
            yield server
        finally:
            server._dropper.shutdown(wait=True)
            _run([*pg_ctl, "-m", "immediate", "stop"], root=root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
