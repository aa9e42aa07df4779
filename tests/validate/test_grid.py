"""The grid: images where the labels say, labels drawn in margins like A1111's X/Y/Z plot."""

from __future__ import annotations

from PIL import Image

from tireg.validate.grid import BACKGROUND, make_grid

COLOURS = [[(200, 30, 30), (30, 200, 30), (30, 30, 200)], [(90, 90, 0), (0, 90, 90), (90, 0, 90)]]


def test_layout_and_labels() -> None:
    rows = [[Image.new("RGB", (160, 128), c) for c in row] for row in COLOURS]
    grid = make_grid(
        rows,
        ["without embedding\nsd15 [0123456789]", "birb-style\nsd15 [0123456789]"],
        ["Seed: 1", "Seed: 2", "Seed: 3"],
    )
    pad_left = grid.width - 3 * 160
    pad_top = grid.height - 2 * 128
    assert pad_left >= 160 * 3 // 4 and pad_top > 0
    for r, row in enumerate(COLOURS):
        for c, colour in enumerate(row):
            centre = (pad_left + c * 160 + 80, pad_top + r * 128 + 64)
            assert grid.getpixel(centre) == colour
    top = grid.crop((pad_left, 0, grid.width, pad_top))
    left = grid.crop((0, pad_top, pad_left, grid.height))
    for margin in (top, left):
        colours = {colour for _, colour in margin.getcolors(1 << 16)}
        assert colours - {BACKGROUND}, "a label margin holds no text"


def test_small_renders_are_enlarged_and_labels_fit() -> None:
    """A1111's layout is unreadable on 32-pixel renders: tiles are enlarged pixel for pixel to
    128, and every row label stays inside its own row and the left margin."""
    tile = Image.new("RGB", (32, 32), (10, 20, 30))
    tile.putpixel((0, 0), (255, 0, 0))
    labels = ["without embedding\nsd15-tiny [0123456789]", "birb-style\nsd15-tiny [0123456789]"]
    grid = make_grid([[tile], [tile]], labels, ["Seed: 1"])
    pad_left, pad_top = grid.width - 128, grid.height - 2 * 128
    assert grid.getpixel((pad_left + 3, pad_top + 3)) == (255, 0, 0)  # a 4x4 block now
    assert grid.getpixel((pad_left + 4, pad_top + 4)) == (10, 20, 30)
    for r in range(2):
        row = grid.crop((0, pad_top + r * 128, pad_left, pad_top + (r + 1) * 128))
        ink = [
            (x, y)
            for x in range(row.width)
            for y in range(row.height)
            if row.getpixel((x, y)) != BACKGROUND
        ]
        assert ink
        assert min(x for x, _ in ink) > 0 and max(x for x, _ in ink) < row.width - 1
        assert min(y for _, y in ink) > 0 and max(y for _, y in ink) < row.height - 1


def test_no_row_labels_no_left_margin() -> None:
    grid = make_grid([[Image.new("RGB", (128, 128))]], [""], ["Seed: 7"])
    assert grid.width == 128
