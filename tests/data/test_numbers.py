"""Finding the digits of a number (``fastnn.data.numbers``): composed and drawn numbers with known
digit positions, fragments joined, specks dropped, touching digits cut, bad images refused."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn.data.images import BlankImage, ImageError
from fastnn.data.numbers import (
    candidate_pieces,
    choose_pieces,
    compose_number,
    number_fonts,
    render_number,
    segment_digits,
)
from tests.data.test_corruptions import digits as made_up_digits


def test_composed_digits_are_found_left_to_right():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 4):
        gray = compose_number(made_up_digits(k, seed=k), rng, gap=(3, 6), noise=0.05)
        found = segment_digits(gray)
        assert len(found) == k
        lefts = [d.box[1] for d in found]
        assert lefts == sorted(lefts)
        for d in found:
            assert d.image.shape == (784,) and d.image.dtype == np.float32
            assert 0 <= d.image.min() and d.image.max() <= 1 and d.image.max() > 0.5


def test_either_polarity_gives_the_same_digits():
    gray = compose_number(made_up_digits(3), np.random.default_rng(1), gap=(3, 5))
    dark_on_light = segment_digits(1.0 - gray)
    light_on_dark = segment_digits(gray)
    assert [d.box for d in dark_on_light] == [d.box for d in light_on_dark]


def test_a_detached_bar_joins_its_digit_and_specks_are_dropped():
    gray = np.zeros((40, 60), np.float32)
    gray[10:30, 10:13] = 1.0          # a tall stroke
    gray[8:10, 10:20] = 1.0           # a short bar above it, overlapping its columns: one digit
    gray[10:30, 35:38] = 1.0          # a second digit
    gray[38, 55] = 1.0                # a speck of noise
    found = segment_digits(gray)
    assert [d.box for d in found] == [(8, 10, 30, 20), (10, 35, 30, 38)]


def test_touching_digits_are_cut_by_width():
    gray = np.zeros((40, 80), np.float32)
    gray[10:30, 10:25] = np.where(np.random.default_rng(2).random((20, 15)) < 0.9, 1.0, 0.0)
    gray[10:30, 2:5] = 1.0            # a tall neighbour apart: the line's height is 20
    gray[18:20, 25:29] = 1.0          # a thin bridge ...
    gray[10:30, 29:44] = 1.0          # ... to a second block: one component 34 wide, cut at the bridge
    found = segment_digits(gray)
    assert len(found) == 3
    assert 25 <= found[1].box[3] <= 29 and 25 <= found[2].box[1] <= 29


@pytest.mark.parametrize("font", number_fonts(), ids=lambda f: f.name)
def test_font_numbers_split_into_their_digits(font):
    gray = render_number("4721", font, rng=np.random.default_rng(0), noise=0.05)
    assert len(segment_digits(gray)) == 4


def test_bad_images_are_refused():
    with pytest.raises(BlankImage, match="blank"):
        segment_digits(np.zeros((20, 20), np.float32))
    with pytest.raises(ImageError, match=r"\(H, W\)"):
        segment_digits(np.zeros((3, 20, 20), np.float32))
    with pytest.raises(ImageError, match="NaN"):
        segment_digits(np.full((20, 20), np.nan, np.float32))
    stripes = np.zeros((20, 400), np.float32)
    stripes[5:15, ::4] = 1.0                                  # 100 vertical bars: not a number
    with pytest.raises(ImageError, match="more than 32 digits"):
        segment_digits(stripes)


# ---------------------------------------------------------------- recognition-based segmentation
def _bridged_blocks():
    """Two 20-tall blocks joined by a thin bridge at columns 25-28: one component, 34 wide."""
    gray = np.zeros((40, 60), np.float32)
    gray[10:30, 10:25] = 1.0
    gray[18:20, 25:29] = 1.0
    gray[10:30, 29:44] = 1.0
    return gray


def test_candidate_pieces_cover_each_part_and_include_it_whole():
    gray = compose_number(made_up_digits(3, seed=4), np.random.default_rng(0), gap=(3, 5), noise=0.05)
    all_cuts, pieces = candidate_pieces(gray)
    for part, cuts in enumerate(all_cuts):
        assert cuts == sorted(cuts) and len(cuts) >= 2
        whole = [p for p in pieces if p.part == part and p.start == 0 and p.stop == len(cuts) - 1]
        assert len(whole) == 1                                         # every part offered whole
    for p in pieces:
        assert p.image.shape == (784,) and p.image.dtype == np.float32 and p.mask.shape == gray.shape
        top, left, bottom, right = p.box
        assert p.mask[top:bottom, left:right].sum() == p.mask.sum() > 0  # the box holds the piece's ink


def test_a_touching_pair_is_offered_cut_at_its_bridge():
    all_cuts, pieces = candidate_pieces(_bridged_blocks())
    assert len(all_cuts) == 1
    assert any(25 <= c <= 29 for c in all_cuts[0][1:-1])
    halves = [p for p in pieces if p.box[3] <= 29 or p.box[1] >= 25]
    assert {p.box[1] for p in halves} >= {10} and any(p.box[3] == 44 and p.box[1] >= 25 for p in halves)


def test_choose_pieces_takes_the_best_scoring_cover():
    all_cuts, pieces = candidate_pieces(_bridged_blocks())
    last = len(all_cuts[0]) - 1
    whole = next(k for k, p in enumerate(pieces) if p.start == 0 and p.stop == last)
    bridge = next(c for c in range(1, last) if 25 <= all_cuts[0][c] <= 29)
    left = next(k for k, p in enumerate(pieces) if p.start == 0 and p.stop == bridge)
    right = next(k for k, p in enumerate(pieces) if p.start == bridge and p.stop == last)
    scores = np.full(len(pieces), -10.0)
    scores[[left, right]] = -0.1                                        # two good halves beat ...
    scores[whole] = -1.0                                                # ... a poor whole
    assert choose_pieces(all_cuts, pieces, scores) == [left, right]
    scores[whole] = -0.05                                               # a good whole beats two halves
    assert choose_pieces(all_cuts, pieces, scores) == [whole]
    with pytest.raises(ValueError, match="scores of shape"):
        choose_pieces(all_cuts, pieces, scores[:-1])
    no_end = [k for k, p in enumerate(pieces) if p.stop != last]       # nothing reaches the part's end
    with pytest.raises(ValueError, match="no pieces cover"):
        choose_pieces(all_cuts, [pieces[k] for k in no_end], scores[no_end])


def test_composed_numbers_know_which_digit_owns_each_pixel():
    images = made_up_digits(3, seed=2)
    gray, owner = compose_number(images, np.random.default_rng(3), gap=(-2, 0), owners=True)
    assert owner.shape == gray.shape and owner.dtype == np.int16
    assert ((owner >= 0) == (gray > 0)).all()                          # no noise: ink exactly where owned
    assert set(np.unique(owner)) == {-1, 0, 1, 2}
    again = compose_number(images, np.random.default_rng(3), gap=(-2, 0))
    assert np.array_equal(again, gray)                                  # owners change nothing else


def test_font_groups_are_disjoint_and_printed_numbers_know_their_characters():
    groups = {g: {f.name for f in number_fonts(g)} for g in ("test", "training", "validation")}
    assert len(groups["test"]) == 6 and groups["training"] and groups["validation"]
    assert not (groups["test"] & groups["training"] or groups["test"] & groups["validation"]
                or groups["training"] & groups["validation"])
    with pytest.raises(ValueError, match="no font group"):
        number_fonts("italic")
    font = number_fonts("training")[0]
    gray, owner = render_number("4721", font, owners=True)
    assert np.abs(gray - render_number("4721", font)).max() < 1e-3       # the same line, drawn per character
    assert set(np.unique(owner)) == {-1, 0, 1, 2, 3} and ((owner >= 0) == (gray < 1)).all()
    lefts = [np.flatnonzero((owner == i).any(axis=0))[0] for i in range(4)]
    assert lefts == sorted(lefts)                                        # characters left to right
