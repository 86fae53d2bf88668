"""Multi-digit numbers: finding the digits in an image, and making images of numbers to test on.

Contract: ``segment_digits(gray)`` finds the digits of a number in a gray image (H, W) in [0, 1]
and returns them left to right as ``Digit``s: each one's box in the image and its 28 x 28 image
prepared like an MNIST digit (``fastnn.data.images.preprocess``), ready for a classifier.
``compose_number`` and ``render_number`` make test images: numbers composed from MNIST digits,
and numbers drawn in a font. Errors are ``fastnn.data.images.ImageError``.

Finding the digits (scipy.ndimage; no hand-written filters):

1. the ink: gray as displayed, inverted when the background is light, the background level
   subtracted, scaled to a peak of 1; ink = pixels over ``INK_THRESHOLD``;
2. its connected components (``scipy.ndimage.label``, 8-connected), minus specks smaller than
   ``MIN_AREA_FRACTION`` of the largest (noise);
3. pieces of one digit joined: a component less than half as tall as the tallest (a 5's
   detached bar, a broken stroke) joins the component whose columns it overlaps most, and is
   dropped if it overlaps none; two tall components sharing more than half the narrower one's
   columns are one digit too;
4. touching digits split: a component wider than ``MAX_ASPECT`` times the tallest one's height
   (``MAX_ASPECT_ALONE`` when it is alone: an MNIST digit is at most 20 pixels wide and 20 tall,
   wide ones 14 tall or more) is cut at the column of least ink (the column projection) in its
   middle 60 %, again while too wide;
5. each digit's own ink (other components masked out, its mask grown by ``EDGE_PIXELS`` to keep
   the faint edges of the strokes) cropped, fitted into 20 x 20 and centred in 28 x 28 by
   centre of mass, as ``preprocess`` does for one digit.

Recognition-based segmentation (for a number reader: a classifier with a "not one digit" class,
``NOT_A_DIGIT``): steps 1-3 as above, then ``candidate_pieces`` offers every stretch of a part
between two candidate cuts (the part's ends and the columns where its column ink is a local
minimum) up to ``MAX_PIECE_ASPECT`` times the tallest part's height wide, each as a 28 x 28
image made as in step 5; ``choose_pieces`` keeps, per part, the pieces that cover it end to end
with the highest total score, by dynamic programming over the cuts (Viterbi): the classic
over-segment-then-recognise scheme of handwritten digit strings (Casey & Lecolinet, "A survey of
methods and strategies in character segmentation", IEEE PAMI 1996). With the classifier's log
probability of its best digit as the score, a piece it calls "not a digit" (half a digit, two
joined) scores low, so touching digits are cut where the pieces read best.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastnn.data.images import BlankImage, ImageError, preprocess

__all__ = ["Digit", "Piece", "NOT_A_DIGIT", "TEST_FONTS", "TRAINING_FONTS", "VALIDATION_FONTS",
           "segment_digits", "digit_parts", "ink_of", "candidate_pieces", "choose_pieces", "compose_number",
           "render_number", "number_fonts"]

INK_THRESHOLD = 0.3          # of the peak ink level
MIN_AREA_FRACTION = 0.08     # components smaller than this share of the largest are specks
MAX_ASPECT = 1.2             # wider than this times the tallest part's height: digits touching
MAX_ASPECT_ALONE = 1.5       # the same for a part alone in its image (its own height is all there is)
FRAGMENT_HEIGHT = 0.5        # parts shorter than this share of the tallest are pieces of a digit
SAME_DIGIT_OVERLAP = 0.5     # tall parts sharing more than this share of the narrower's columns: one digit
MAX_DIGITS = 32
EDGE_PIXELS = 1              # a digit's mask grown by this, to keep the faint edges of its strokes
NOT_A_DIGIT = "none"         # a number reader's extra class: a piece that is not one whole digit
MAX_PIECE_ASPECT = 1.3       # candidate pieces at most this times the tallest part's height wide
CUT_WINDOW = 2               # a candidate cut: a column with the least ink within this many each side
MIN_CUT_ASPECT = 0.5         # parts narrower than this times the tallest part's height are never cut
MAX_PIECES = 4096            # candidate pieces per image, at most (an image of a number, not a page)


@dataclass(frozen=True)
class Digit:
    """One digit found in an image: ``box`` (top, left, bottom, right) in the image's pixels
    (bottom and right exclusive); ``image`` (784,) float32 in [0, 1], MNIST-style."""
    box: tuple
    image: np.ndarray


@dataclass(frozen=True)
class Piece:
    """A candidate digit (``candidate_pieces``): the ink of part ``part`` (parts numbered left to
    right) between its cuts ``start`` and ``stop`` (indices into the part's cuts); ``box`` (top,
    left, bottom, right) its ink's box; ``image`` (784,) float32 in [0, 1], MNIST-style;
    ``mask`` (H, W) bool, its ink pixels in the image."""
    part: int
    start: int
    stop: int
    box: tuple
    image: np.ndarray
    mask: np.ndarray


def ink_of(gray: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> ink level (H, W) float32 in [0, 1]: bright ink on black, the
    background subtracted, the peak at 1. Raises BlankImage when there is no ink."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(f"a gray image must be (H, W), got {gray.shape}")
    if not np.isfinite(gray).all():
        raise ImageError("the image holds NaN or infinite values")

    def background(img):
        return float(np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])))

    if background(gray) > 0.5:                                                  # light background: invert
        gray = 1.0 - gray
    ink = np.clip(gray - background(gray), 0.0, None)
    peak = float(ink.max())
    if peak <= 0.05:
        raise BlankImage("the image is blank: no ink to read")
    return ink / peak


def _components(mask: np.ndarray):
    """Labels (H, W) and the [(label, top, left, bottom, right, area)] of the mask's
    8-connected components, specks dropped."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        raise BlankImage("the image is blank: no ink to read")
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    boxes = ndimage.find_objects(labels)
    keep = []
    for k, (sl, area) in enumerate(zip(boxes, areas), start=1):
        if area >= MIN_AREA_FRACTION * areas.max():
            keep.append([{k}, sl[0].start, sl[1].start, sl[0].stop, sl[1].stop])
    return labels, keep


def _merge_fragments(parts):
    """Join each fragment (a part less than FRAGMENT_HEIGHT of the tallest part's height: a 5's
    detached bar, a broken stroke) to the part whose columns it overlaps most; drop a fragment
    that overlaps no part's columns (a speck of noise, not a digit)."""
    tallest = max(p[3] - p[1] for p in parts)
    digits = [p for p in parts if p[3] - p[1] >= FRAGMENT_HEIGHT * tallest]
    for f in (p for p in parts if p[3] - p[1] < FRAGMENT_HEIGHT * tallest):
        overlaps = [min(d[4], f[4]) - max(d[2], f[2]) for d in digits]
        if overlaps and max(overlaps) > 0:
            d = digits[int(np.argmax(overlaps))]
            d[0] = d[0] | f[0]
            d[1:] = [min(d[1], f[1]), min(d[2], f[2]), max(d[3], f[3]), max(d[4], f[4])]
    digits.sort(key=lambda p: p[2])
    i = 0
    while i + 1 < len(digits):              # one digit in two tall pieces (a broken stroke): columns shared
        a, b = digits[i], digits[i + 1]
        if min(a[4], b[4]) - max(a[2], b[2]) > SAME_DIGIT_OVERLAP * min(a[4] - a[2], b[4] - b[2]):
            digits[i] = [a[0] | b[0], min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]), max(a[4], b[4])]
            del digits[i + 1]
        else:
            i += 1
    return digits, tallest


def _split_wide(mask, part, tallest, limit):
    """Cut a part wider than ``limit`` times the tallest part's height (and itself taller than
    FRAGMENT_HEIGHT of it) at the column of least ink in its middle 60 %, recursively: the pieces'
    [(top, left, bottom, right)]."""
    _, top, left, bottom, right = part
    height, width = bottom - top, right - left
    if width <= limit * max(height, tallest) or width < 6 or height < FRAGMENT_HEIGHT * tallest:
        return [(top, left, bottom, right)]
    column_ink = mask[top:bottom, left:right].sum(axis=0)                        # (width,)
    lo, hi = int(0.2 * width), int(0.8 * width)
    cut = left + lo + int(np.argmin(column_ink[lo:hi]))
    pieces = []
    for l0, r0 in ((left, cut), (cut, right)):
        cols = np.flatnonzero(mask[top:bottom, l0:r0].any(axis=0))
        rows = np.flatnonzero(mask[top:bottom, l0:r0].any(axis=1))
        if len(cols) == 0:
            continue
        sub = [None, top + rows[0], l0 + cols[0], top + rows[-1] + 1, l0 + cols[-1] + 1]
        pieces += _split_wide(mask, sub, tallest, limit)
    return pieces


def _digit_image(ink, own, box) -> np.ndarray:
    """The (784,) MNIST-style image of the ink of mask ``own`` inside ``box``."""
    from PIL import Image
    from scipy.ndimage import binary_dilation

    e = EDGE_PIXELS
    top, left = max(box[0] - e, 0), max(box[1] - e, 0)                                # the box grown by e
    bottom, right = min(box[2] + e, ink.shape[0]), min(box[3] + e, ink.shape[1])
    inside = np.zeros((bottom - top, right - left), dtype=bool)                       # (h, w): own, in box only
    inside[box[0] - top:box[2] - top, box[1] - left:box[3] - left] = own[box[0]:box[2], box[1]:box[3]]
    near = binary_dilation(inside, iterations=e)                                      # with faint edges
    crop = np.where(near, ink[top:bottom, left:right], 0.0)                           # (h, w)
    crop = np.pad(crop, max(2, (bottom - top) // 8))
    return preprocess(Image.fromarray((crop * 255).astype(np.uint8)))


def _tight(own, top, left, bottom, right):
    """The box of the ink of ``own`` inside (top, left, bottom, right), or None when it has none."""
    rows = np.flatnonzero(own[top:bottom, left:right].any(axis=1))
    cols = np.flatnonzero(own[top:bottom, left:right].any(axis=0))
    if len(rows) == 0:
        return None
    return top + rows[0], left + cols[0], top + rows[-1] + 1, left + cols[-1] + 1


def digit_parts(gray: np.ndarray):
    """Steps 1-3 of the module docstring: (ink (H, W), labels (H, W), parts, tallest height), each
    part [set of component labels, top, left, bottom, right]. Raises BlankImage."""
    ink = ink_of(gray)                                                          # (H, W), peak 1
    labels, parts = _components(ink > INK_THRESHOLD)
    parts, tallest = _merge_fragments(parts)
    return ink, labels, parts, tallest


def segment_digits(gray: np.ndarray) -> list:
    """The digits of a number in ``gray`` (H, W) in [0, 1] (either polarity), left to right, as
    ``Digit``s (see the module docstring for how). Raises BlankImage for an image without ink,
    ImageError for one with more than MAX_DIGITS digits or an unusable array."""
    ink, labels, parts, tallest = digit_parts(gray)
    digits = []
    for part in sorted(parts, key=lambda p: p[2]):
        own = np.isin(labels, list(part[0]))                                    # this digit's components
        for box in _split_wide(own, part, tallest, MAX_ASPECT if len(parts) > 1 else MAX_ASPECT_ALONE):
            image = _digit_image(ink, own, box)
            if len(digits) >= MAX_DIGITS:
                raise ImageError(f"more than {MAX_DIGITS} digits found: is this a number?")
            digits.append(Digit(tuple(int(v) for v in box), image))
    return sorted(digits, key=lambda d: d.box[1])


def _cuts(own, part, tallest) -> list:
    """The candidate cut columns of a part, its ends included: [left, c1, ..., right]. A cut at
    column c gives columns < c to the left piece. Cut candidates are the columns whose ink (the
    column projection) is least within CUT_WINDOW each side, 3 or more from either end; none in
    a part narrower than MIN_CUT_ASPECT times the tallest part's height."""
    _, top, left, bottom, right = part
    width = right - left
    if width < MIN_CUT_ASPECT * tallest:
        return [left, right]
    column_ink = own[top:bottom, left:right].sum(axis=0)                            # (width,)
    cuts = [left + c for c in range(3, width - 2)
            if column_ink[c] <= column_ink[max(0, c - CUT_WINDOW):c + CUT_WINDOW + 1].min()]
    return [left, *cuts, right]


def candidate_pieces(gray: np.ndarray) -> tuple:
    """Recognition-based segmentation's candidates (module docstring): (cuts per part (one list of
    columns per part, left to right), [Piece]). Every part's whole ink is a piece, so the pieces
    always cover the parts. Raises BlankImage for an image without ink, ImageError for one with
    more than MAX_PIECES pieces or an unusable array."""
    ink, labels, parts, tallest = digit_parts(gray)
    all_cuts, pieces = [], []
    for index, part in enumerate(sorted(parts, key=lambda p: p[2])):
        _, top, left, bottom, right = part
        own = np.isin(labels, list(part[0]))                                    # (H, W): this part's ink
        cuts = _cuts(own, part, tallest)
        all_cuts.append(cuts)
        for i in range(len(cuts) - 1):
            for j in range(i + 1, len(cuts)):
                whole = i == 0 and j == len(cuts) - 1
                if cuts[j] - cuts[i] > MAX_PIECE_ASPECT * tallest and not whole:
                    continue                                            # too wide for one digit
                mask = np.zeros_like(own)                                       # (H, W)
                mask[top:bottom, cuts[i]:cuts[j]] = own[top:bottom, cuts[i]:cuts[j]]
                box = _tight(mask, top, cuts[i], bottom, cuts[j])
                if box is None or (box[3] - box[1] < 2 and not whole):
                    continue
                if len(pieces) >= MAX_PIECES:
                    raise ImageError(f"more than {MAX_PIECES} candidate digits found: is this a number?")
                pieces.append(Piece(index, i, j, tuple(int(v) for v in box), _digit_image(ink, mask, box), mask))
    return all_cuts, pieces


def choose_pieces(all_cuts: list, pieces: list, scores) -> list:
    """The indices into ``pieces`` of the segmentation with the highest total score, left to right:
    per part, the pieces that run from its first cut to its last, chosen by dynamic programming
    over the cuts (Viterbi). ``scores`` (len(pieces),) float: each piece's score, e.g. the log
    probability of its best digit. Raises ValueError when a part has no covering (pieces made
    elsewhere than ``candidate_pieces``)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(pieces),):
        raise ValueError(f"{len(pieces)} pieces but scores of shape {scores.shape}")
    by_part = {}
    for k, piece in enumerate(pieces):
        by_part.setdefault(piece.part, []).append(k)
    chosen = []
    for index, cuts in enumerate(all_cuts):
        best = np.full(len(cuts), -np.inf)                                       # best[j]: cuts[0]..cuts[j]
        best[0] = 0.0
        came_from = [None] * len(cuts)
        for k in sorted(by_part.get(index, []), key=lambda k: pieces[k].stop):
            piece = pieces[k]
            total = best[piece.start] + scores[k]
            if total > best[piece.stop]:
                best[piece.stop], came_from[piece.stop] = total, k
        path, j = [], len(cuts) - 1
        while j > 0:
            if came_from[j] is None:
                raise ValueError(f"part {index}: no pieces cover it from its first cut to its last")
            path.append(came_from[j])
            j = pieces[came_from[j]].start
        chosen += path[::-1]
    return chosen


# ---------------------------------------------------------------- test images of numbers
def compose_number(digit_images: np.ndarray, rng, gap=(-2, 6), jitter: int = 2, noise: float = 0.0,
                   margin: int = 6, owners: bool = False):
    """One image (H, W) float32 in [0, 1] of the digits ``digit_images`` (k, 28, 28) uint8 side by
    side, left to right: each cropped to its ink, the gaps between them drawn from ``gap``
    (pixels, negative: the digits overlap, the brighter ink kept), each moved up or down by up
    to ``jitter``, then Gaussian noise of standard deviation ``noise`` added and clipped.
    With ``owners``: (image, owner), owner (H, W) int16 the index of the digit whose ink each
    pixel shows (the brighter where two overlap), -1 where none has ink."""
    crops = []
    for img in digit_images:
        rows = np.flatnonzero(img.max(axis=1) > 0)
        cols = np.flatnonzero(img.max(axis=0) > 0)
        crops.append(img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) / 255)
    gaps = rng.integers(gap[0], gap[1] + 1, size=max(0, len(crops) - 1))
    shifts = rng.integers(-jitter, jitter + 1, size=len(crops))
    height = max(c.shape[0] for c in crops) + 2 * jitter + 2 * margin
    width = sum(c.shape[1] for c in crops) + int(gaps.sum()) + 2 * margin
    canvas = np.zeros((height, max(width, 2 * margin + 1)), dtype=np.float32)
    owner = np.full(canvas.shape, -1, dtype=np.int16)                           # (H, W)
    x = margin
    for i, c in enumerate(crops):
        y = margin + jitter + shifts[i] + (height - 2 * margin - 2 * jitter - c.shape[0]) // 2
        region = canvas[y:y + c.shape[0], x:x + c.shape[1]]
        owner[y:y + c.shape[0], x:x + c.shape[1]][c > region] = i
        np.maximum(region, c, out=region)
        x += c.shape[1] + (int(gaps[i]) if i < len(gaps) else 0)
    if noise:
        canvas = np.clip(canvas + rng.normal(0.0, noise, size=canvas.shape).astype(np.float32), 0.0, 1.0)
    return (canvas, owner) if owners else canvas


# TrueType fonts that matplotlib ships, in three disjoint groups: the evaluation's (``number_fonts``),
# those a number reader learns printed digits from, and those its settings are validated on.
TEST_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
              "STIXGeneral.ttf", "cmr10.ttf")
TRAINING_FONTS = ("DejaVuSans-BoldOblique.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
                  "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
                  "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf")
VALIDATION_FONTS = ("DejaVuSans-Oblique.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneralBol.ttf", "cmss10.ttf")


def number_fonts(group: str = "test") -> list:
    """TrueType fonts to draw numbers with, from those matplotlib ships (the same on every machine
    with the same matplotlib): ``group`` "test" (DejaVu Sans, Sans Bold, Serif, Sans Mono, STIX,
    Computer Modern: ``python -m fastnn.evaluate --numbers``), "training" (11 others, for a
    number reader's pieces) or "validation" (4 more). Raises ValueError for another group."""
    from pathlib import Path

    import matplotlib

    groups = {"test": TEST_FONTS, "training": TRAINING_FONTS, "validation": VALIDATION_FONTS}
    if group not in groups:
        raise ValueError(f"no font group {group!r}; there are {', '.join(groups)}")
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in groups[group] if (folder / name).is_file()]


def render_number(text: str, font_path, size: int = 48, rng=None, noise: float = 0.0, owners: bool = False):
    """``text`` drawn in the TrueType font ``font_path`` at ``size`` pixels, dark on white, as gray
    (H, W) float32 in [0, 1] (1 = white), with Gaussian noise of ``noise`` when ``rng`` is given.
    With ``owners``: (image, owner), each character drawn on its own at its place in the line and
    owner (H, W) int16 the index of the character whose ink each pixel shows, -1 where none."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), size)
    left, top, right, bottom = font.getbbox(text)
    pad = size // 3
    shape = (right - left + 2 * pad, bottom - top + 2 * pad)
    if owners:
        layers = []
        for i, char in enumerate(text):                       # each character where the line puts it
            img = Image.new("L", shape, 0)
            ImageDraw.Draw(img).text((pad - left + font.getlength(text[:i]), pad - top), char, fill=255, font=font)
            layers.append(np.asarray(img, dtype=np.float32) / 255)                # (H, W) ink
        ink = np.stack(layers)                                                    # (k, H, W)
        owner = np.where(ink.max(axis=0) > 0, ink.argmax(axis=0), -1).astype(np.int16)
        gray = 1.0 - ink.max(axis=0)
    else:
        img = Image.new("L", shape, 255)
        ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=0, font=font)
        gray = np.asarray(img, dtype=np.float32) / 255
    if rng is not None and noise:
        gray = np.clip(gray + rng.normal(0.0, noise, size=gray.shape).astype(np.float32), 0.0, 1.0)
    return (gray, owner) if owners else gray

