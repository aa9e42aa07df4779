"""Where tireg keeps its state: TIREG_HOME, else the platform's user data folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tireg import config

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="XDG folders are the Linux convention"
)


@linux_only
def test_home_without_tireg_home_follows_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIREG_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert config.home() == tmp_path / "data" / "tireg"
    assert config.store_dir() == tmp_path / "data" / "tireg" / "store"
    assert config.cache_dir() == tmp_path / "data" / "tireg" / "cache"
    assert config.database_url() == f"sqlite:///{tmp_path / 'data' / 'tireg' / 'catalogue.sqlite'}"


@linux_only
def test_home_without_any_setting_is_under_the_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIREG_HOME")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.home() == tmp_path / ".local" / "share" / "tireg"


def test_tireg_home_wins_and_expands_the_tilde(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TIREG_HOME", "~/state")
    assert config.home() == tmp_path / "state"


def test_database_url_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIREG_DATABASE_URL", "sqlite:///elsewhere.sqlite")
    assert config.database_url() == "sqlite:///elsewhere.sqlite"
    assert config.database_url("sqlite:///given.sqlite") == "sqlite:///given.sqlite"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TIREG_OFFLINE", "1", True),
        ("TIREG_OFFLINE", " Yes ", True),
        ("HF_HUB_OFFLINE", "true", True),
        ("TIREG_OFFLINE", "0", False),
        ("TIREG_OFFLINE", "", False),
    ],
)
def test_offline(monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: bool) -> None:
    monkeypatch.setenv(name, value)
    assert config.offline() is expected


def test_tireg_store_moves_the_store_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A team shares one store folder (TIREG_STORE) while each machine keeps its own home."""
    monkeypatch.setenv("TIREG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TIREG_STORE", "~/shared/store")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.store_dir() == tmp_path / "shared" / "store"
    assert config.cache_dir() == tmp_path / "home" / "cache"
