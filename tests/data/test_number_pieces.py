"""A number reader's training data (``fastnn.data.number_pieces``): pieces of composed numbers,
labelled a digit when whole and clean, NOT_A_DIGIT when a part or a pair; seeded; bad arguments refused."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn.data.datasets import Dataset
from fastnn.data.number_pieces import label_piece, number_pieces
from fastnn.data.numbers import NOT_A_DIGIT
from tests.data.test_corruptions import digits as made_up_digits


def _digits(n=20):
    images = made_up_digits(n, seed=3)
    return Dataset(images, (np.arange(n) % 10).astype(np.uint8), tuple(str(d) for d in range(10)), "made-up")


def test_label_piece_tells_whole_digits_from_parts_and_pairs():
    owner = np.full((10, 20), -1, np.int16)
    owner[:, 0:8], owner[:, 10:18] = 0, 1                               # digit 0 left, digit 1 right
    ink = owner >= 0
    digit_ink = np.array([80, 80])
    labels = np.array([7, 3])
    left = ink.copy()
    left[:, 10:] = False
    assert label_piece(left, owner, digit_ink, labels) == 7             # digit 0 whole and alone
    half = left.copy()
    half[:, 4:] = False
    assert label_piece(half, owner, digit_ink, labels) == -1            # half a digit
    assert label_piece(ink, owner, digit_ink, labels) == -1             # two digits
    most = left.copy()
    most[:, 7] = False                                                  # 7 of 8 columns: between, left out
    assert label_piece(most, owner, digit_ink, labels) is None
    assert label_piece(np.zeros_like(ink), owner, digit_ink, labels) is None


def test_number_pieces_are_labelled_images_and_seeded():
    pieces = number_pieces(_digits(), 30, seed=1)
    assert pieces.class_names == tuple(str(d) for d in range(10)) + (NOT_A_DIGIT,)
    assert pieces.images.dtype == np.uint8 and pieces.images.shape[1:] == (28, 28)
    assert pieces.labels.max() <= 10 and (pieces.labels == 10).any() and (pieces.labels < 10).any()
    again = number_pieces(_digits(), 30, seed=1)
    assert np.array_equal(again.images, pieces.images) and np.array_equal(again.labels, pieces.labels)
    other = number_pieces(_digits(), 30, seed=2)
    assert len(other) != len(pieces) or not np.array_equal(other.images, pieces.images)
    assert (number_pieces(_digits(), 30, seed=1, keep_none=0.0).labels < 10).all()


def test_printed_numbers_add_pieces_of_their_own():
    handwritten = number_pieces(_digits(), 20, seed=5, fonts=0.0)
    printed = number_pieces(_digits(), 20, seed=5, fonts=1.0)
    assert len(printed) and (printed.labels < 10).any()
    assert len(printed) != len(handwritten) or not np.array_equal(printed.images, handwritten.images)


@pytest.mark.parametrize("kwargs, match", [({"n": 0}, "positive number"), ({"keep_none": 1.5}, r"\[0, 1\]"),
                                           ({"fonts": -0.1}, r"fonts must be in \[0, 1\]")])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        number_pieces(_digits(), **{"n": 5, **kwargs})


def test_only_digits_are_cut_into_pieces():
    clothes = Dataset(made_up_digits(5), np.zeros(5, np.uint8), ("shirt",) * 10, "clothes")
    with pytest.raises(ValueError, match="from digits 0-9"):
        number_pieces(clothes, 5)


def test_the_same_pieces_whatever_the_number_of_processes(monkeypatch):
    import fastnn.data.number_pieces as module

    monkeypatch.setattr(module, "CHUNK", 10)                            # three pieces of work
    alone = number_pieces(_digits(), 30, seed=4, jobs=1)
    shared = number_pieces(_digits(), 30, seed=4, jobs=2)
    assert np.array_equal(alone.images, shared.images) and np.array_equal(alone.labels, shared.labels)
