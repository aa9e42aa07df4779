"""The grid PNG of a validation run, labelled along its edges like A1111's X/Y/Z plot.

Rows are "without embedding" then one per embedding, repeated per model; columns are seeds. The
layout follows A1111's ``modules/images.py`` ``draw_grid_annotations`` (as ``scripts/xyz_grid.py``
``draw_xyz_grid`` uses it): a white margin above the images holds one centred label per column,
a margin to their left (three quarters of an image wide) one label per row, each wrapped at word
boundaries to its cell, with a font size of ``(width + height) // 25``. A1111 ships a TrueType
font; tireg uses Pillow's built-in default font at that size, so nothing is downloaded and the
grid looks the same on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.ImageDraw import ImageDraw
    from PIL.ImageFont import FreeTypeFont, ImageFont

    Font = FreeTypeFont | ImageFont

BACKGROUND = (255, 255, 255)
#: renders smaller than this (pixels, either side) are enlarged by a whole factor in the grid
MIN_TILE = 128
#: below this A1111's ``(width + height) // 25`` is unreadable (small validation renders)
MIN_FONT_SIZE = 12
#: row labels may wrap no narrower than this many font sizes
MIN_LABEL_EMS = 8
TEXT = (0, 0, 0)


def _wrap(draw: ImageDraw, text: str, font: Font, width: int) -> list[str]:
    """Words of each paragraph of ``text`` packed greedily into lines no wider than ``width``
    (one long word stays whole, as in A1111's ``wrap``)."""
    lines = []
    for paragraph in text.split("\n"):
        lines.append("")
        for word in paragraph.split():
            line = f"{lines[-1]} {word}".strip()
            if draw.textlength(line, font=font) <= width or not lines[-1]:
                lines[-1] = line
            else:
                lines.append(word)
    return lines


def _block_height(draw: ImageDraw, lines: Sequence[str], font: Font, spacing: int) -> int:
    heights = [int(draw.textbbox((0, 0), line or " ", font=font)[3]) for line in lines]
    return sum(heights) + spacing * (len(lines) - 1)


def _draw_block(
    draw: ImageDraw, lines: Sequence[str], font: Font, centre: tuple[float, float], spacing: int
) -> None:
    """Draw ``lines`` centred on ``centre``, one under the other."""
    x, y = centre
    top = y - _block_height(draw, lines, font, spacing) / 2
    for line in lines:
        height = draw.textbbox((0, 0), line or " ", font=font)[3]
        draw.text((x, top + height / 2), line, font=font, fill=TEXT, anchor="mm")
        top += height + spacing


def make_grid(
    rows: Sequence[Sequence[Image]], row_labels: Sequence[str], column_labels: Sequence[str]
) -> Image:
    """One image: ``rows`` of equally sized images, labelled on the left and along the top.

    1. Measure: cell size from the first image (small renders enlarged, pixel for pixel, to
       at least :data:`MIN_TILE` so their labels fit beside them), font size and spacing as
       A1111 computes them (never below :data:`MIN_FONT_SIZE`).
    2. Wrap every label to its cell and size the margins to the widest row label and the
       tallest column label.
    3. Paste the images on a white canvas and draw the labels centred in their margins.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    # 1.
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one image")
    width, height = rows[0][0].size
    scale = max(1, math.ceil(MIN_TILE / min(width, height)))
    width, height = width * scale, height * scale
    fontsize = max(MIN_FONT_SIZE, (width + height) // 25)
    spacing = fontsize // 2
    font = ImageFont.load_default(size=fontsize)

    # 2. row labels wrap to A1111's margin, widened for small images so a word fits whole
    scratch = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    wrap_at = max(width * 3 // 4, MIN_LABEL_EMS * fontsize)
    row_lines = [_wrap(scratch, label, font, wrap_at) for label in row_labels]
    widest = max(scratch.textlength(line, font=font) for lines in row_lines for line in lines)
    pad_left = max(width * 3 // 4, int(widest) + 2 * spacing) if widest else 0
    column_lines = [_wrap(scratch, label, font, width) for label in column_labels]
    pad_top = max(_block_height(scratch, lines, font, spacing) for lines in column_lines)
    pad_top += spacing * 2

    columns = max(len(row) for row in rows)
    canvas = PILImage.new(
        "RGB", (pad_left + width * columns, pad_top + height * len(rows)), BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    # 3.
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            tile = image.convert("RGB").resize((width, height), PILImage.Resampling.NEAREST)
            canvas.paste(tile, (pad_left + c * width, pad_top + r * height))
    for c, lines in enumerate(column_lines):
        _draw_block(draw, lines, font, (pad_left + c * width + width / 2, pad_top / 2), spacing)
    for r, lines in enumerate(row_lines):
        _draw_block(draw, lines, font, (pad_left / 2, pad_top + r * height + height / 2), spacing)
    return canvas
