"""Training data for a number reader: the candidate pieces of generated numbers, labelled.

Contract: ``number_pieces(digits, n, seed)`` composes ``n`` numbers of 1-4 digits from ``digits``
(a digit ``Dataset``: MNIST's training split to train, its test split to test), offers each one's
candidate pieces (``fastnn.data.numbers.candidate_pieces``, exactly what ``read_number`` offers
its model) and labels them: a piece holding one digit whole and little else is that digit; a
piece that holds a part of a digit, or two digits, or a digit and a large part of another, is
``NOT_A_DIGIT``; pieces between the two are left out. A number reader trained on them
(``python -m fastnn.train --number-pieces N``) learns to tell a whole digit from the pieces a
cut in the wrong place makes, which a digit classifier reads as digits with confidence.

Labelling (counts of ink pixels, ink over ``INK_THRESHOLD``, each pixel owned by the digit whose
ink it shows, ``compose_number(owners=True)``): the digit that owns most of the piece's ink is
its digit; *cover* is the share of that digit's ink in the piece, *purity* the share of the
piece's ink that is that digit's. Cover and purity >= ``WHOLE`` (0.9): the digit; cover <
``PART_COVER`` (0.75) or purity < ``PART_PURITY`` (0.8): not a digit; else left out.

The numbers: 1-4 digits, the gaps between them drawn from -2..6, -2..1 and -1..6 pixels in turn
(so a third have every pair touching or overlapping), moved up or down by up to 2 pixels,
Gaussian noise of a standard deviation drawn from 0..0.12; a share ``fonts`` of them printed
instead: random digits drawn in one of the training fonts (``number_fonts("training")``, none of
the evaluation's), 24-71 pixels high, with the same noise. ``keep_none`` of the not-a-digit
pieces are kept (there are about six for every digit).
"""
from __future__ import annotations

import numpy as np

from fastnn.data.datasets import Dataset
from fastnn.data.images import ImageError
from fastnn.data.numbers import (
    INK_THRESHOLD,
    NOT_A_DIGIT,
    candidate_pieces,
    compose_number,
    ink_of,
    number_fonts,
    render_number,
)

__all__ = ["WHOLE", "PART_COVER", "PART_PURITY", "GAPS", "FONT_SIZES", "CHUNK", "number_pieces", "label_piece"]

WHOLE = 0.9            # cover and purity at least this: the piece is the digit
PART_COVER = 0.75      # cover below this: part of a digit
PART_PURITY = 0.8      # purity below this: more than one digit
GAPS = ((-2, 6), (-2, 1), (-1, 6))   # the numbers' gaps between digits (pixels), in turn
MAX_NOISE = 0.12
FONT_SIZES = (24, 72)  # printed numbers' heights in pixels: drawn from [24, 72)


def label_piece(piece_ink: np.ndarray, owner: np.ndarray, digit_ink: np.ndarray, digit_labels) -> int | None:
    """The label of one piece (module docstring): its digit's label, -1 for NOT_A_DIGIT, or None
    (left out). ``piece_ink`` (H, W) bool the piece's ink pixels; ``owner`` (H, W) int the digit index
    per pixel (-1: none); ``digit_ink`` (k,) each digit's ink pixel count; ``digit_labels`` (k,)."""
    counts = np.bincount(owner[piece_ink] + 1, minlength=len(digit_ink) + 1)[1:]   # (k,)
    total = int(piece_ink.sum())
    if total == 0:
        return None
    d = int(counts.argmax())
    cover, purity = counts[d] / max(int(digit_ink[d]), 1), counts[d] / total
    if cover >= WHOLE and purity >= WHOLE:
        return int(digit_labels[d])
    if cover < PART_COVER or purity < PART_PURITY:
        return -1
    return None


CHUNK = 500            # numbers per piece of work (each seeded by its index: the same set for any jobs)


def _chunk(digits: Dataset, first: int, count: int, seed: int, keep_none: float, fonts: float):
    """Images (m, 784) uint8 and labels (m,) of numbers ``first`` .. ``first + count - 1``."""
    rng = np.random.default_rng([seed, 7, first])
    font_paths = number_fonts("training") if fonts else []
    images, labels = [], []
    for t in range(first, first + count):
        if font_paths and rng.random() < fonts:                   # a printed number
            text = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(1, 5))))
            gray, owner = render_number(text, font_paths[int(rng.integers(len(font_paths)))],
                                        size=int(rng.integers(*FONT_SIZES)), rng=rng,
                                        noise=float(rng.uniform(0.0, MAX_NOISE)), owners=True)
            digit_labels = np.array([int(c) for c in text])
        else:                                                     # handwritten: MNIST digits side by side
            idx = rng.integers(0, len(digits), size=int(rng.integers(1, 5)))
            gray, owner = compose_number(digits.images[idx], rng, gap=GAPS[t % len(GAPS)],
                                         noise=float(rng.uniform(0.0, MAX_NOISE)), owners=True)
            digit_labels = digits.labels[idx]
        try:
            _, pieces = candidate_pieces(gray)
        except ImageError:                                    # noise can hide a faint digit: no pieces
            continue
        inked = ink_of(gray) > INK_THRESHOLD                                      # (H, W)
        digit_ink = np.bincount(owner[inked] + 1, minlength=len(digit_labels) + 1)[1:]   # (k,)
        keep = rng.random(len(pieces)) < keep_none
        for piece, kept in zip(pieces, keep):
            label = label_piece(piece.mask & inked, owner, digit_ink, digit_labels)
            if label is None or (label < 0 and not kept):
                continue
            images.append(np.round(piece.image * 255).astype(np.uint8))
            labels.append(10 if label < 0 else label)
    return (np.stack(images) if images else np.zeros((0, 784), np.uint8)), np.asarray(labels, dtype=np.uint8)


def number_pieces(digits: Dataset, n: int, seed: int = 0, keep_none: float = 0.3, fonts: float = 0.25,
                  progress: bool = False, jobs: int = 1) -> Dataset:
    """A ``Dataset`` of the labelled candidate pieces of ``n`` numbers composed from ``digits``
    (module docstring): images (N, 28, 28) uint8, labels (N,) uint8, classes "0".."9" and
    NOT_A_DIGIT (label 10). Seeded per ``CHUNK`` numbers: the same arguments give the same set,
    whatever ``jobs`` (processes, joblib; -1: one per core).

    Raises:
        ValueError: ``n`` < 1, ``keep_none`` or ``fonts`` (the share of numbers printed) outside
            [0, 1], or ``digits`` not ten digit classes.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    if n < 1:
        raise ValueError(f"n must be a positive number of numbers, got {n}")
    if not 0.0 <= keep_none <= 1.0:
        raise ValueError(f"keep_none must be in [0, 1], got {keep_none}")
    if not 0.0 <= fonts <= 1.0:
        raise ValueError(f"fonts must be in [0, 1], got {fonts}")
    if [str(c) for c in digits.class_names] != [str(d) for d in range(10)]:
        raise ValueError(f"number pieces are cut from digits 0-9; {digits.name} has classes "
                         f"{', '.join(map(str, digits.class_names[:4]))}...")
    starts = range(0, n, CHUNK)
    work = (delayed(_chunk)(digits, first, min(CHUNK, n - first), seed, keep_none, fonts) for first in starts)
    if jobs == 1 or len(starts) == 1:
        parts = (_chunk(digits, first, min(CHUNK, n - first), seed, keep_none, fonts) for first in starts)
    else:
        parts = Parallel(n_jobs=jobs, return_as="generator")(work)
    images, labels = [], []
    with tqdm(total=n, desc="number pieces", unit="number", disable=not progress, leave=False) as bar:
        for first, (chunk_images, chunk_labels) in zip(starts, parts):
            images.append(chunk_images)
            labels.append(chunk_labels)
            bar.update(min(CHUNK, n - first))
    classes = tuple(str(d) for d in range(10)) + (NOT_A_DIGIT,)
    return Dataset(np.concatenate(images).reshape(-1, 28, 28), np.concatenate(labels), classes,
                   f"{digits.name} number pieces")
