"""``--compatible-with`` and ``install --model`` through the real CLI, with models named the ways
users name them: an A1111 old hash, a file name from the shipped table, a SHA-256."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.registry.make_files import random_embedding, write_one

SD14_OLD_HASH = "7460a6fa"
SDXL_FILE = "sd_xl_base_1.0.safetensors"
SDXL_SHA256 = "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"
SD20_OLD_HASH = "09dd2ae4"


@pytest.fixture
def three_families(tireg_cli, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """cat-sd1, cat-sd2, cat-sdxl (and dog-sd1) added from generated files."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "embeddings"
    for name, family, fmt in (
        ("cat-sd1", "sd1", "a1111-pt"),
        ("cat-sd2", "sd2", "diffusers-bin"),
        ("cat-sdxl", "sdxl", "safetensors"),
        ("dog-sd1", "sd1", "png"),
    ):
        write_one(random_embedding(rng, name, family), folder, name, fmt)
    result = tireg_cli("add", folder)
    assert result.code == 0, result.stderr
    return folder


def _names(stdout: str) -> list[str]:
    return sorted(r["name"] for r in json.loads(stdout))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (SD14_OLD_HASH, ["cat-sd1", "dog-sd1"]),
        (SD20_OLD_HASH, ["cat-sd2"]),
        (SDXL_FILE, ["cat-sdxl"]),
        (SDXL_SHA256, ["cat-sdxl"]),
        ("Stable Diffusion XL base 1.0", ["cat-sdxl"]),
    ],
)
def test_list_compatible_with(
    three_families: Path, tireg_cli, model: str, expected: list[str]
) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli("list", "--compatible-with", model, "--json")
    assert result.code == 0, result.stderr
    assert _names(result.stdout) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [(SD14_OLD_HASH, ["cat-sd1"]), (SDXL_FILE, ["cat-sdxl"]), (SDXL_SHA256, ["cat-sdxl"])],
)
def test_search_compatible_with(
    three_families: Path, tireg_cli, model: str, expected: list[str]
) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli("search", "cat", "--compatible-with", model, "--json")
    assert result.code == 0, result.stderr
    assert _names(result.stdout) == expected


def test_unfiltered_list_has_all(three_families: Path, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    assert _names(tireg_cli("list", "--json").stdout) == [
        "cat-sd1",
        "cat-sd2",
        "cat-sdxl",
        "dog-sd1",
    ]


def test_compatible_with_an_unknown_name_fails_in_one_line(three_families: Path, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    result = tireg_cli("list", "--compatible-with", "no such model", "--json")
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such model" in lines[0] and "tireg model add" in lines[0]


def test_compatible_with_an_unknown_hash_keeps_exact_matches(
    three_families: Path, tireg_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A hash no table knows has no family, so only embeddings recorded as trained on it match."""
    rng = np.random.default_rng(8)
    trained = random_embedding(rng, "trained-here", "sd1").with_meta(trained_on_hash="deadbeef")
    write_one(trained, tmp_path / "more", "trained-here", "a1111-pt")
    assert tireg_cli("add", tmp_path / "more").code == 0
    result = tireg_cli("list", "--compatible-with", "DEADBEEF", "--json")
    assert result.code == 0, result.stderr
    assert _names(result.stdout) == ["trained-here"]
    assert _names(tireg_cli("list", "--compatible-with", "0badcafe", "--json").stdout) == []


def test_install_model_refuses_wrong_family_unless_forced(
    three_families: Path, tireg_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    refused = tireg_cli("install", "cat-sd2", "--to", out, "--model", SDXL_FILE)
    assert refused.code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--force" in lines[0] and "cat-sd2" in lines[0]
    assert not out.exists() or not any(out.iterdir())

    forced = tireg_cli("install", "cat-sd2", "--to", out, "--model", SDXL_FILE, "--force", "--json")
    assert forced.code == 0, forced.stderr
    assert [p.name for p in out.iterdir()] == ["cat-sd2.safetensors"]


def test_install_model_lets_the_right_family_through(
    three_families: Path, tireg_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    result = tireg_cli("install", "cat-sdxl", "--to", out, "--model", SDXL_SHA256)
    assert result.code == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["cat-sdxl.safetensors"]
    sd1_on_xl = tireg_cli("install", "cat-sd1", "--to", out, "--model", SDXL_SHA256)
    assert sd1_on_xl.code == 1 and "--force" in sd1_on_xl.stderr
    assert "SD 1.x embedding on SDXL" in sd1_on_xl.stderr
