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


@pytest.mark.parametrize(
    "fill, finite",
    [
        (0.5, True),
        # finite values whose float32 sum overflows: the sum alone cannot settle it
        (np.finfo(np.float32).max, True),
        (-np.finfo(np.float32).max, True),
        (np.nan, False),
        (np.inf, False),
        (-np.inf, False),
    ],
)
def test_is_finite_agrees_with_the_element_test(fill: float, finite: bool) -> None:
    vectors = np.full((4, 768), 0.25, dtype=np.float32)
    vectors[2, 5] = fill
    vectors[3, 700] = fill
    embedding = Embedding(name="x", vectors={"clip_l": vectors})
    assert embedding.is_finite is finite
    assert embedding.is_finite is bool(np.isfinite(vectors).all())


def test_is_finite_with_inf_and_minus_inf_in_one_matrix() -> None:
    """+Inf and -Inf together sum to NaN: still not finite."""
    vectors = np.zeros((2, 768), dtype=np.float32)
    vectors[0, 0], vectors[1, 1] = np.inf, -np.inf
    assert not Embedding(name="x", vectors={"clip_l": vectors}).is_finite
