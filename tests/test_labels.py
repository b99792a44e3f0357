"""The built-in 5x7 font and the labelled grid of `dpmsolver.cli.labels`."""

from __future__ import annotations

import re
import string

import numpy as np
import pytest

from dpmsolver.cli.labels import (
    CHARACTERS,
    GLYPH_HEIGHT,
    GLYPH_WIDTH,
    PAD,
    SPACING,
    draw_text,
    fit_label,
    glyph,
    label_grid,
    render_text,
    text_height,
    text_width,
)

PROMISED = string.ascii_letters + string.digits + "+-.,=()/_: #"


def test_the_font_covers_letters_digits_and_the_label_punctuation() -> None:
    assert set(PROMISED) <= set(CHARACTERS)
    assert len(set(CHARACTERS)) == len(CHARACTERS)


@pytest.mark.parametrize("char", list(CHARACTERS))
def test_every_character_has_a_glyph_of_the_stated_size(char: str) -> None:
    mask = glyph(char)
    assert mask.shape == (GLYPH_HEIGHT, GLYPH_WIDTH) == (7, 5) and mask.dtype == bool
    assert mask.any() == (char != " ")


def test_glyphs_are_pairwise_distinct() -> None:
    seen = {glyph(c).tobytes(): c for c in CHARACTERS}
    assert len(seen) == len(CHARACTERS)


@pytest.mark.parametrize("text", ["", "a", "ddim", "dpm++3m+c-taylor", "5 steps", "seed 0"])
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_text_width_is_as_documented(text: str, scale: int) -> None:
    expected = scale * (len(text) * (GLYPH_WIDTH + SPACING) - SPACING) if text else 0
    assert text_width(text, scale) == expected
    assert render_text(text, scale).shape == (text_height(scale), expected) == (7 * scale, expected)


def test_rendering_sets_glyphs_apart_and_upscales_by_repetition() -> None:
    mask = render_text("ab")
    assert np.array_equal(mask[:, :5], glyph("a")) and np.array_equal(mask[:, 6:], glyph("b"))
    assert not mask[:, 5].any()
    assert np.array_equal(render_text("ab", 3), mask.repeat(3, axis=0).repeat(3, axis=1))


def test_rendering_is_deterministic_and_glyphs_are_copies() -> None:
    assert np.array_equal(render_text("dpm++2m (x0)", 2), render_text("dpm++2m (x0)", 2))
    mask = glyph("x")
    mask[:] = True
    assert not np.array_equal(glyph("x"), mask)


@pytest.mark.parametrize("bad", ["é", "!", "\n", "dpm++2m*"])
def test_an_unsupported_character_raises_naming_it(bad: str) -> None:
    char = next(c for c in bad if c not in CHARACTERS)
    for call in (lambda: glyph(char), lambda: text_width(bad), lambda: render_text(bad)):
        with pytest.raises(ValueError, match=re.escape(f"no glyph for character {char!r}")):
            call()


@pytest.mark.parametrize("scale", [0, -1, 1.5, True])
def test_a_bad_scale_raises(scale: object) -> None:
    with pytest.raises(ValueError, match="scale must be an int >= 1"):
        text_width("a", scale)  # type: ignore[arg-type]


def test_draw_text_writes_ink_only_where_the_glyphs_are() -> None:
    image = np.full((20, 30, 3), 200, dtype=np.uint8)
    draw_text(image, "Hi", 3, 4, scale=2, ink=7)
    mask = np.zeros((20, 30), dtype=bool)
    mask[3:17, 4:26] = render_text("Hi", 2)
    assert (image[mask] == 7).all() and (image[~mask] == 200).all()
    with pytest.raises(ValueError, match="does not fit"):
        draw_text(image, "Hi", 10, 4, scale=2)


def test_fit_label_takes_the_longest_form_that_fits() -> None:
    forms = ["5 steps", "5 st", "5"]
    assert fit_label(forms, 41) == "5 steps" and fit_label(forms, 40) == "5 st"
    assert fit_label(forms, 1) == "5"


def test_label_grid_frames_the_grid_with_its_labels() -> None:
    grid = (np.arange(17 * 47) % 250).astype(np.uint8).reshape(17, 47) | 1  # odd: never ink 0
    out = label_grid(
        grid, ["a", "bbb"], ["x", "y", "z", "w"], cell=(8, 11), gap=1, group_labels=["g", "h"],
        corner="c", scale=1,
    )  # fmt: skip
    header = PAD + 7 + PAD + 7 + 2 * PAD
    margin = PAD + text_width("bbb") + PAD
    assert out.shape == (header + 17, margin + 47)
    assert np.array_equal(out[header:, margin:], grid)
    assert np.array_equal(out[header : header + 7, PAD : PAD + 5] == 0, glyph("a"))
    assert np.array_equal(out[header + 9 : header + 16, PAD : PAD + 17] == 0, render_text("bbb"))
    # The column labels centred over their 11-pixel tiles, groups over runs of two.
    assert np.array_equal(out[PAD + 7 + 2 * PAD :, margin + 3 :][:7, :5] == 0, glyph("x"))
    assert np.array_equal(out[PAD : PAD + 7, margin + 9 : margin + 14] == 0, glyph("g"))
    assert (out[PAD + 7 + PAD, margin : margin + 23] == 0).all()  # the group's rule
    assert out[PAD + 7 + PAD, margin + 23] == 255
    rgb = label_grid(
        np.stack([grid] * 3, axis=-1), ["a", "bbb"], list("xyzw"), cell=(8, 11), gap=1, scale=1
    )
    assert rgb.shape == (PAD + 7 + PAD + 17, margin + 47, 3)


def test_label_grid_refuses_labels_that_do_not_fit_and_mismatched_grids() -> None:
    grid = np.zeros((8, 23), dtype=np.uint8)
    with pytest.raises(ValueError, match="label 'wide' is 23 pixels wide"):
        label_grid(grid, ["r"], ["wide", "x"], cell=(8, 11), gap=1, scale=1)
    with pytest.raises(ValueError, match="does not hold 1 rows x 3 columns"):
        label_grid(grid, ["r"], ["x", "y", "z"], cell=(8, 11), gap=1, scale=1)
    with pytest.raises(ValueError, match="rows of 8 pixels are too low for 14-pixel labels"):
        label_grid(grid, ["r"], ["x", "y"], cell=(8, 11), gap=1, scale=2)
    with pytest.raises(ValueError, match="do not divide"):
        label_grid(grid, ["r"], ["x", "y"], cell=(8, 11), gap=1, group_labels=["a", "b", "c"])
