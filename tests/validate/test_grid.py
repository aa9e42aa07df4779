"""The grid: images where the labels say, labels drawn in margins like A1111's X/Y/Z plot."""

from __future__ import annotations

from PIL import Image

from tireg.validate.grid import BACKGROUND, make_grid

COLOURS = [[(200, 30, 30), (30, 200, 30), (30, 30, 200)], [(90, 90, 0), (0, 90, 90), (90, 0, 90)]]


def test_layout_and_labels() -> None:
    rows = [[Image.new("RGB", (64, 48), c) for c in row] for row in COLOURS]
    grid = make_grid(
        rows,
        ["without embedding\nsd15 [0123456789]", "birb-style\nsd15 [0123456789]"],
        ["Seed: 1", "Seed: 2", "Seed: 3"],
    )
    pad_left = 64 * 3 // 4
    pad_top = grid.height - 2 * 48
    assert grid.width == pad_left + 3 * 64 and pad_top > 0
    for r, row in enumerate(COLOURS):
        for c, colour in enumerate(row):
            centre = (pad_left + c * 64 + 32, pad_top + r * 48 + 24)
            assert grid.getpixel(centre) == colour
    top = grid.crop((pad_left, 0, grid.width, pad_top))
    left = grid.crop((0, pad_top, pad_left, grid.height))
    for margin in (top, left):
        colours = {colour for _, colour in margin.getcolors(1 << 16)}
        assert colours - {BACKGROUND}, "a label margin holds no text"


def test_no_row_labels_no_left_margin() -> None:
    grid = make_grid([[Image.new("RGB", (16, 16))]], [""], ["Seed: 7"])
    assert grid.width == 16
