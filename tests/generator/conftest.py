"""Fixtures of the generator tests: tiny single files of every family, and a network guard."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.generator import tiny

_LOOPBACK = ("127.", "::1", "localhost")


@dataclass
class TinyModels:
    pipes: dict[str, Any]  # family -> the diffusers pipeline the files were written from
    files: dict[str, Path]  # family -> its single .safetensors file (fp16, LDM layout)
    configs: Path  # a root laid out like tireg's shipped configs/, for these tiny architectures
    scratch: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    root = tmp_path_factory.mktemp("tiny-models")
    pipes = {family: tiny.build(family, root / "scratch" / family) for family in tiny.CLASS_NAMES}
    configs = tiny.write_config_root(root / "configs", pipes)
    return TinyModels(pipes, tiny.write_files(root / "files", pipes), configs, root / "scratch")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every connection to anything but loopback raises, and is recorded: the test fails if
    one was even tried (a caller might have caught the error and carried on)."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create = socket.create_connection

    def allowed(address: Any) -> bool:
        host = address[0] if isinstance(address, tuple) else str(address)
        if isinstance(address, (str, bytes)):  # a Unix socket path
            return True
        if str(host).startswith(_LOOPBACK):
            return True
        attempts.append(str(address))
        return False

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(address):
            raise OSError(f"test blocks network access to {address}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(address):
            raise OSError(f"test blocks network access to {address}")
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not allowed(address):
            raise OSError(f"test blocks network access to {address}")
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield attempts
    assert not attempts, f"network access was attempted: {attempts}"
