"""Fixtures for converter tests: tiny real diffusers pipelines (built once per session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.pipelines import build_sd_pipeline, build_sdxl_pipeline


@pytest.fixture(scope="session")
def sd1_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny StableDiffusionPipeline with a 768-wide text encoder (SD 1.x)."""
    return build_sd_pipeline(tmp_path_factory.mktemp("sd1"), width=768)


@pytest.fixture(scope="session")
def sd2_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny StableDiffusionPipeline with a 1024-wide text encoder (SD 2.x width)."""
    return build_sd_pipeline(tmp_path_factory.mktemp("sd2"), width=1024)


@pytest.fixture(scope="session")
def sdxl_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny StableDiffusionXLPipeline: text_encoder 768 + text_encoder_2 1280."""
    return build_sdxl_pipeline(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A fresh folder for files a test writes."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show how many fuzz inputs each reader got (printing from a test would be captured)."""
    from tests.converters.fuzz_tally import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("fuzz inputs per reader")
        for line in lines:
            terminalreporter.write_line(line)
