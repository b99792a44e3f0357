"""Text labels drawn into uint8 image arrays with a built-in 5x7 bitmap font (numpy only).

Every glyph is ``GLYPH_HEIGHT`` x ``GLYPH_WIDTH`` pixels (in the style of the HD44780 LCD
font: capitals and digits fill the cell, lowercase letters keep their descenders inside it);
glyphs are set ``SPACING`` blank columns apart, and everything is upscaled ``scale`` times by
pixel repetition. ``label_grid`` frames an image grid (as ``png.image_grid`` makes) with a
left margin naming its rows and a header naming its columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CHARACTERS",
    "GLYPH_HEIGHT",
    "GLYPH_WIDTH",
    "PAD",
    "SPACING",
    "draw_text",
    "fit_label",
    "glyph",
    "label_grid",
    "render_text",
    "text_height",
    "text_width",
]

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
SPACING = 1  # blank columns between neighbouring glyphs
PAD = 2  # blank pixels (times scale) around the labels of `label_grid`

# One string per glyph, its 7 rows top to bottom, '#' ink and '.' blank.
_FONT = {
    " ": "..... ..... ..... ..... ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "-": "..... ..... ..... ##### ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "_": "..... ..... ..... ..... ..... ..... #####",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# #...# ##### #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# #...# .#.#. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "a": "..... ..... .###. ....# .#### #...# .####",
    "b": "#.... #.... #.##. ##..# #...# #...# ####.",
    "c": "..... ..... .###. #.... #.... #...# .###.",
    "d": "....# ....# .##.# #..## #...# #...# .####",
    "e": "..... ..... .###. #...# ##### #.... .###.",
    "f": "..##. .#..# .#... ###.. .#... .#... .#...",
    "g": "..... ..... .#### #...# .#### ....# .###.",
    "h": "#.... #.... #.##. ##..# #...# #...# #...#",
    "i": "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",
    "j": "...#. ..... ..##. ...#. ...#. #..#. .##..",
    "k": "#.... #.... #..#. #.#.. ##... #.#.. #..#.",
    "l": ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "m": "..... ..... ##.#. #.#.# #.#.# #...# #...#",
    "n": "..... ..... #.##. ##..# #...# #...# #...#",
    "o": "..... ..... .###. #...# #...# #...# .###.",
    "p": "..... ..... ####. #...# ####. #.... #....",
    "q": "..... ..... .##.# #..## .#### ....# ....#",
    "r": "..... ..... #.##. ##..# #.... #.... #....",
    "s": "..... ..... .###. #.... .###. ....# ####.",
    "t": ".#... .#... ###.. .#... .#... .#..# ..##.",
    "u": "..... ..... #...# #...# #...# #..## .##.#",
    "v": "..... ..... #...# #...# #...# .#.#. ..#..",
    "w": "..... ..... #...# #...# #.#.# #.#.# .#.#.",
    "x": "..... ..... #...# .#.#. ..#.. .#.#. #...#",
    "y": "..... ..... #...# #...# .#### ....# .###.",
    "z": "..... ..... ##### ...#. ..#.. .#... #####",
}

CHARACTERS = "".join(_FONT)  # every character the font can draw

_GLYPHS = {
    char: np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool)
    for char, rows in _FONT.items()
}


def glyph(char: str) -> np.ndarray:
    """The ``(GLYPH_HEIGHT, GLYPH_WIDTH)`` boolean ink mask of one character (a copy).

    Raises ValueError naming the character if the font has no glyph for it.
    """
    if char not in _GLYPHS:
        raise ValueError(f"no glyph for character {char!r}; the font draws {CHARACTERS!r}")
    return _GLYPHS[char].copy()


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text``: ``scale * (len(text) * (GLYPH_WIDTH + SPACING) - SPACING)``,
    0 for the empty string (no spacing after the last glyph). Checks every character."""
    _check_scale(scale)
    for char in text:
        glyph(char)
    return scale * (len(text) * (GLYPH_WIDTH + SPACING) - SPACING) if text else 0


def text_height(scale: int = 1) -> int:
    """Height in pixels of a line of text: ``scale * GLYPH_HEIGHT``."""
    _check_scale(scale)
    return scale * GLYPH_HEIGHT


def render_text(text: str, scale: int = 1) -> np.ndarray:
    """The boolean ink mask of ``text``, shape ``(text_height(scale), text_width(text, scale))``.

    Raises ValueError naming the first character the font has no glyph for.
    """
    _check_scale(scale)
    mask = np.zeros((GLYPH_HEIGHT, text_width(text)), dtype=bool)
    for i, char in enumerate(text):
        left = i * (GLYPH_WIDTH + SPACING)
        mask[:, left : left + GLYPH_WIDTH] = _GLYPHS[char]
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)


def draw_text(
    image: np.ndarray, text: str, top: int, left: int, *, scale: int = 1, ink: int = 0
) -> None:
    """Draw ``text`` into a uint8 ``(H, W)`` or ``(H, W, 3)`` image in place, its top-left
    corner at pixel ``(top, left)``: ink pixels are set to ``ink`` (every channel), the
    others are left as they are. The text must lie inside the image (else ValueError)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("image must be a uint8 numpy array of shape (H, W) or (H, W, 3)")
    mask = render_text(text, scale)
    height, width = mask.shape
    if top < 0 or left < 0 or top + height > image.shape[0] or left + width > image.shape[1]:
        raise ValueError(
            f"text {text!r} ({height}x{width} pixels at ({top}, {left})) does not fit in an "
            f"image of {image.shape[0]}x{image.shape[1]} pixels"
        )
    image[top : top + height, left : left + width][mask] = ink


def fit_label(candidates: Sequence[str], width: int, scale: int = 1) -> str:
    """The first of ``candidates`` (longest form first) at most ``width`` pixels wide at
    ``scale``, else the last (shortest) one."""
    if not candidates:
        raise ValueError("fit_label needs at least one candidate")
    return next((c for c in candidates if text_width(c, scale) <= width), candidates[-1])


def label_grid(
    grid: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    *,
    cell: tuple[int, int],
    gap: int,
    group_labels: Sequence[str] = (),
    corner: str = "",
    scale: int = 2,
    background: int = 255,
    ink: int = 0,
) -> np.ndarray:
    """Return ``grid`` framed by a left margin naming each row and a header naming each column.

    ``grid`` is a uint8 ``(H, W)`` or ``(H, W, 3)`` image of tiles ``cell = (height, width)``
    pixels, ``gap`` pixels apart (as ``png.image_grid`` makes them), ``len(row_labels)`` rows
    by ``len(column_labels)`` columns. ``group_labels`` (optional) name runs of equally many
    consecutive columns on a header line above the column labels, each underlined across its
    run; ``corner`` is written left of the column labels, above the row labels.

    Layout, with ``p = PAD * scale`` and ``h = text_height(scale)``: the margin is
    ``p + max(text_width(label, scale)) + p`` pixels wide (over the row labels and ``corner``);
    the header is ``p + h + p`` pixels high, plus ``h + 2 * p`` for the group line if any (its
    rule lies ``p`` below the group labels, ``max(1, scale // 2)`` pixels thick). Row labels
    are left-aligned at ``x = p`` and centred vertically on their row; column and group
    labels are centred over their tiles (kept within the grid's width). Text is ``ink`` on
    ``background``; the grid is copied unchanged to the bottom-right. A column (group) label
    wider than its tile (run) plus ``gap`` raises ValueError, as do rows lower than the text
    and a grid whose size does not match the labels.
    """
    _check_scale(scale)
    if not isinstance(grid, np.ndarray) or grid.dtype != np.uint8 or grid.ndim not in (2, 3):
        raise ValueError("grid must be a uint8 numpy array of shape (H, W) or (H, W, 3)")
    rows, cols = len(row_labels), len(column_labels)
    cell_h, cell_w = cell
    expected = (rows * cell_h + (rows - 1) * gap, cols * cell_w + (cols - 1) * gap)
    if rows < 1 or cols < 1 or grid.shape[:2] != expected:
        raise ValueError(
            f"grid of {grid.shape[0]}x{grid.shape[1]} pixels does not hold {rows} rows x "
            f"{cols} columns of {cell_h}x{cell_w} tiles {gap} pixels apart"
        )
    if group_labels and cols % len(group_labels):
        raise ValueError(f"{len(group_labels)} group labels do not divide {cols} columns")
    per_group = cols // len(group_labels) if group_labels else 0
    pad, line = PAD * scale, text_height(scale)
    if cell_h < line:
        raise ValueError(f"rows of {cell_h} pixels are too low for {line}-pixel labels")
    margin = pad + max(text_width(t, scale) for t in [*row_labels, corner]) + pad
    header = pad + line + pad + (line + 2 * pad if group_labels else 0)
    out = np.full((header + grid.shape[0], margin + grid.shape[1], *grid.shape[2:]), background)
    out = out.astype(np.uint8)
    out[header:, margin:] = grid

    def centred(text: str, first: int, count: int, top: int) -> int:
        """Draw `text` centred over `count` columns from `first`; return its span's left."""
        left = margin + first * (cell_w + gap)
        span = count * cell_w + (count - 1) * gap
        width = text_width(text, scale)
        if width > span + gap:
            raise ValueError(
                f"label {text!r} is {width} pixels wide, more than the {span + gap} pixels "
                f"of its {'column' if count == 1 else 'columns'}"
            )
        # A label up to `gap` wider than its span spills into the gaps, kept inside the grid.
        x = min(max(left + (span - width) // 2, margin), out.shape[1] - width)
        draw_text(out, text, top, x, scale=scale, ink=ink)
        return left

    top = pad
    if group_labels:
        for g, text in enumerate(group_labels):
            left = centred(text, g * per_group, per_group, top)
            rule = top + line + pad
            right = left + per_group * (cell_w + gap) - gap
            out[rule : rule + max(1, scale // 2), left:right] = ink
        top += line + 2 * pad
    for c, text in enumerate(column_labels):
        centred(text, c, 1, top)
    draw_text(out, corner, top, pad, scale=scale, ink=ink)
    for r, text in enumerate(row_labels):
        row_top = header + r * (cell_h + gap) + (cell_h - line) // 2
        draw_text(out, text, row_top, pad, scale=scale, ink=ink)
    return out
