"""The width -> encoder -> family table everything else (compatibility, install) relies on."""

from __future__ import annotations

import numpy as np
import pytest

from tireg.converters import Embedding, Family
from tireg.converters.embedding import encoder_for_width, family_of


@pytest.mark.parametrize(
    "widths, family",
    [
        ({"clip_l": 768}, Family.SD1),
        ({"clip_h": 1024}, Family.SD2),
        ({"clip_l": 768, "clip_g": 1280}, Family.SDXL),
        ({"clip_g": 1280, "clip_l": 768}, Family.SDXL),
        ({"clip_l": 768, "clip_h": 1024}, Family.UNKNOWN),
        ({"clip_g": 1280}, Family.UNKNOWN),
        ({"emb": 1280}, Family.UNKNOWN),
        ({"emb": 320}, Family.UNKNOWN),
        ({"emb": 768}, Family.UNKNOWN),
        ({"clip_l": 1024}, Family.UNKNOWN),
        ({}, Family.UNKNOWN),
    ],
)
def test_family_of(widths: dict[str, int], family: Family) -> None:
    assert family_of(widths) is family


@pytest.mark.parametrize(
    "width, encoder", [(768, "clip_l"), (1024, "clip_h"), (1280, "emb"), (320, "emb"), (0, "emb")]
)
def test_encoder_for_width(width: int, encoder: str) -> None:
    assert encoder_for_width(width) == encoder


@pytest.mark.parametrize(
    "width, family",
    [(768, Family.SD1), (1024, Family.SD2), (1280, Family.UNKNOWN), (320, Family.UNKNOWN)],
)
def test_single_matrix_family_follows_its_width(width: int, family: Family) -> None:
    """A one-matrix file is keyed by encoder_for_width, then judged by family_of."""
    emb = Embedding(name="x", vectors={encoder_for_width(width): np.ones((2, width), np.float32)})
    assert emb.family is family


def test_family_labels() -> None:
    assert [f.label for f in Family] == ["SD 1.x", "SD 2.x", "SDXL", "unknown"]
