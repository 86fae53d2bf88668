"""On-the-fly data augmentation: per-sample random translations and horizontal flips.

Each training sample gets a fresh *move* every time it is drawn: a shift (dx, dy), each drawn
uniformly from -max_shift..max_shift pixels, and, with ``flip``, a horizontal mirror with
probability 1/2 (applied first, then the shift). Pixels moved off the canvas are dropped and
the uncovered ones are 0 (background). Translations are the classic augmentation for
handwritten digits (P. Simard, D. Steinkraus and J. Platt, "Best practices for convolutional
neural networks applied to visual document analysis", ICDAR 2003: an MLP's error on MNIST
fell from 1.6 % to 1.1 % with affine distortions and to 0.7 % with elastic ones); flips suit
clothes, not digits.

The two training paths apply the same moves, drawn from one generator (``Augmenter.moves``:
an epoch's moves at once, (n, 3), in the epoch's sample order), so they follow one trajectory:

- the kernel path moves the uint8 batch (``move_images``: (B, H, W) -> (B, H, W));
- the fused path never makes a dense image: a moved sparse image is the same non-zeros with
  new indices, p' = (r + dy) * W + (c' + dx) for the pixel at row r, column c (c' = W - 1 - c
  when flipped), those that leave the canvas dropped. The backend's ``augment_csr`` kernel
  (numba, cython; same signature) writes the call's rows that way into a batch-ordered CSR,
  index arithmetic and a copy of 3 bytes per non-zero, in the order the fused kernels need
  (ascending pixel index within a row: a flipped image row is walked backwards).

``augment_csr(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, n_threads,
out_indptr, out_indices, out_pixels)``: rows ``order[lo + j]`` for j < len(moves) of the CSR images
(``fastnn.training.fused.images_to_csr``), moved by ``moves[j]`` = (dx, dy, flip) (int32), into the
out CSR (row j); ``boxes`` (n, 4) int16 their bounding boxes (``bounding_boxes``): an unflipped
image whose box stays on the canvas is moved by one addition per index, a loop the compiler
vectorizes, and only the others go through the loop that drops pixels; ``col_of`` (D,) uint16: column of each pixel
index (a table instead of a
division per non-zero); ``n_threads`` threads share the rows. out_indptr (k+1,) int64,
out_indices/out_pixels with room for the rows' non-zeros (a move only drops pixels). Returns
the number of non-zeros written; raises ValueError for arguments it cannot rely on
(``fastnn.backends.fused_interface.check_augment``, and an image whose indices do not rise
below H W or leave its box, found as the kernel reaches it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Augmentation", "Augmenter", "parse_augment", "move_images", "bounding_boxes", "AUGMENT_HELP"]

AUGMENT_HELP = ("on-the-fly augmentation: 'none', or comma-separated 'shift=K' (random translations by up to "
                "K pixels in x and y, per sample) and 'flip' (random horizontal mirror, for clothes not digits)")


@dataclass(frozen=True)
class Augmentation:
    """What to apply to each training sample: shifts of up to ``max_shift`` pixels, ``flip``."""
    max_shift: int = 0
    flip: bool = False

    @property
    def enabled(self) -> bool:
        return self.max_shift > 0 or self.flip

    def __str__(self) -> str:
        parts = ([f"shift={self.max_shift}"] if self.max_shift else []) + (["flip"] if self.flip else [])
        return ",".join(parts) or "none"


MAX_SHIFT = 8


def parse_augment(spec: str) -> Augmentation:
    """'none' | 'shift=K' | 'flip' | 'shift=K,flip' -> Augmentation. Raises ValueError naming the
    part it cannot read (K must be 0..MAX_SHIFT)."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return Augmentation()
    shift, flip = 0, False
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"shift=(\d+)", part)
        if m:
            shift = int(m.group(1))
            if shift > MAX_SHIFT:
                raise ValueError(f"shift={shift} is more than {MAX_SHIFT} pixels; use 1-3 for 28x28 images")
        elif part == "flip":
            flip = True
        else:
            raise ValueError(f"cannot read {part!r} in {spec!r}: use 'none', 'shift=K' (K pixels), 'flip', "
                             f"or both comma-separated, e.g. 'shift=2,flip'")
    return Augmentation(shift, flip)


def move_images(images: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """Apply ``moves`` (B, 3) int (dx, dy, flip) to uint8 ``images`` (B, H, W) -> new (B, H, W).

    out[i, r, c] = src[i, r - dy, c - dx] (0 off the canvas), src = the image mirrored
    left-right where flip is 1. dx > 0 moves the content right, dy > 0 down. Done as a window
    of the zero-padded batch per image: one copy of the batch, no per-pixel index arrays."""
    B, H, W = images.shape
    flip = moves[:, 2] != 0                                            # (B,)
    src = images.copy() if flip.any() else images
    src[flip] = src[flip][:, :, ::-1]                                  # (B, H, W) mirrored where asked
    dx = np.clip(moves[:, 0], -W, W)                                   # (B,) beyond the size: empty anyway
    dy = np.clip(moves[:, 1], -H, H)                                   # (B,)
    k = int(max(np.abs(dx).max(initial=0), np.abs(dy).max(initial=0)))
    padded = np.zeros((B, H + 2 * k, W + 2 * k), dtype=images.dtype)  # (B, H + 2k, W + 2k)
    padded[:, k:k + H, k:k + W] = src
    windows = np.lib.stride_tricks.sliding_window_view(padded, (H, W), axis=(1, 2))  # (B, 2k+1, 2k+1, H, W)
    return windows[np.arange(B), k - dy, k - dx]                       # (B, H, W): padded[k - dy + r, k - dx + c]


def bounding_boxes(indptr: np.ndarray, indices: np.ndarray, width: int) -> np.ndarray:
    """(n, 4) int16: each CSR image's non-zero rows and columns, (first row, last row, first
    column, last column); zeros for an empty image. ``augment_csr`` moves an image whose box
    stays on the canvas by adding one number to every index (nothing to drop)."""
    n = len(indptr) - 1
    boxes = np.zeros((n, 4), dtype=np.int16)
    counts = np.diff(indptr)                                            # (n,)
    full = np.flatnonzero(counts)                                       # images with non-zeros
    if full.size == 0:
        return boxes
    starts = indptr[full]                                               # (m,) first non-zero of each
    rows = indices // np.uint16(width)                                  # (nnz,) ascending within an image
    cols = indices - rows * np.uint16(width)                            # (nnz,)
    boxes[full, 0] = rows[starts]
    boxes[full, 1] = rows[indptr[full + 1] - 1]
    boxes[full, 2] = np.minimum.reduceat(cols, starts)
    boxes[full, 3] = np.maximum.reduceat(cols, starts)
    return boxes


class Augmenter:
    """Draws each epoch's moves from its own seeded generator (``moves``; applied by the trainers).

    Args:
        augmentation: an ``Augmentation`` (what to draw).
        image_shape: (H, W) of the images.
        seed: the run's seed; the generator is ``np.random.default_rng([seed, 2])`` (the shuffle
            uses [seed, 1], the model's init and dropout ``seed``).
    Raises:
        ValueError: a flip or shift on images that are not 2-D.
    """

    def __init__(self, augmentation: Augmentation, image_shape, seed: int = 0):
        if len(image_shape) != 2:
            raise ValueError(f"augmentation needs 2-D images, got shape {tuple(image_shape)}")
        self.augmentation = augmentation
        self.height, self.width = (int(s) for s in image_shape)
        self.rng = np.random.default_rng([seed, 2])
        self._epoch = None                                                # (n, 3) this epoch's moves
        self.col_of = np.tile(np.arange(self.width, dtype=np.uint16), self.height)   # (D,) column of pixel p

    def draw(self, n: int) -> np.ndarray:
        """(n, 3) int32 moves (dx, dy, flip) for ``n`` samples: the shifts (n, 2), then the flips."""
        a = self.augmentation
        moves = np.zeros((n, 3), dtype=np.int32)
        if a.max_shift:
            moves[:, :2] = self.rng.integers(-a.max_shift, a.max_shift + 1, size=(n, 2))
        if a.flip:
            moves[:, 2] = self.rng.integers(0, 2, size=n)
        return moves

    def moves(self, n: int, first_step: int, n_steps: int, batch_size: int) -> np.ndarray:
        """(k, 3) moves for steps first_step .. first_step + n_steps - 1 of an epoch of ``n``
        samples (k samples, in the epoch's order). An epoch's moves are drawn at its first step,
        all at once, so any split of the epoch into calls sees the same moves."""
        if first_step == 0 or self._epoch is None or len(self._epoch) != n:
            self._epoch = self.draw(n)                                   # (n, 3)
        lo = min(first_step * batch_size, n)
        return self._epoch[lo:min((first_step + n_steps) * batch_size, n)]

    def __str__(self) -> str:
        return str(self.augmentation)
