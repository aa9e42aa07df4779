"""Fixtures for the UI loader tests: a real CLIP tokenizer for diffusers' token rules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipelines import load_clip_tokenizer


@pytest.fixture(scope="session")
def clip_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small genuine CLIPTokenizer (nothing downloaded); embeddings are never added to it."""
    return load_clip_tokenizer(tmp_path_factory.mktemp("tokenizer"))
