"""The numba backend's augmentation: each call's rows, moved (shifted, flipped) as the epoch's
``fastnn.data.augment.Augmenter`` says, written into a batch-ordered CSR for the fused step.
``fastnn/backends/cython/augment.pyx`` is the same algorithm, loop for loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from fastnn.backends.fused_interface import check_augment, raise_bad_image
from fastnn.backends.numba._shared import _prefetch_row, _row_ascending

AUGMENT_PREFETCH_ROWS = 8   # rows ahead whose non-zeros are prefetched (random rows come from DRAM)


@njit(cache=True)
def _augment_rows(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, j0, j1, k, out_indptr,
                  out_indices, out_pixels, bad):
    """Rows j0..j1-1 of ``augment_csr``, their non-zeros written from position k on; sets
    out_indptr[j + 1] for those rows (in these positions) and returns the end position. An image
    that ``_image_fits`` refuses (checked here, as its row arrives, before any index of it is
    used) stops the share: its number into bad[0].

    An unflipped image whose bounding box stays on the canvas (most of them) is one vectorized
    loop of additions; the others test each pixel (a store past the share's end would land in
    the next thread's share, so a dropped pixel is never stored). Positions and indices are
    unsigned: Numba then indexes without its negative-index fix-up, and a pixel moved past
    either edge wraps to a huge value, so one compare tests both edges."""
    size = np.uint64(height * width)
    w = np.uint64(width)
    k = np.uint64(k)
    for j in range(j0, min(j0 + AUGMENT_PREFETCH_ROWS, j1)):
        _prefetch_row(indptr, indices, pixels, order[lo + j])
    for j in range(j0, j1):
        if j + AUGMENT_PREFETCH_ROWS < j1:
            _prefetch_row(indptr, indices, pixels, order[lo + j + AUGMENT_PREFETCH_ROWS])
        i = order[lo + j]
        dx, dy, flip = np.int64(moves[j, 0]), np.int64(moves[j, 1]), moves[j, 2]
        if not _image_fits(indices, indptr[i], indptr[i + 1], boxes[i], height, width):
            bad[0] = i
            return k
        a, b = np.uint64(indptr[i]), np.uint64(indptr[i + 1])
        if (flip == 0 and boxes[i, 0] + dy >= 0 and boxes[i, 1] + dy < height and boxes[i, 2] + dx >= 0
                and boxes[i, 3] + dx < width):              # the whole image stays on the canvas
            shift16 = np.uint16((dy * width + dx) & 0xFFFF)         # added modulo 2**16
            for t in range(np.int64(b - a)):                        # vectorized: no compaction
                out_indices[k + np.uint64(t)] = np.uint16(indices[a + np.uint64(t)] + shift16)
                out_pixels[k + np.uint64(t)] = pixels[a + np.uint64(t)]
            k += b - a
        elif flip == 0:
            shift = np.uint64(dy * width + dx)                      # added modulo 2**64: -1 wraps
            udx = np.uint64(dx)
            for q in range(a, b):
                c = np.uint64(col_of[indices[q]]) + udx             # the new column
                p = np.uint64(indices[q]) + shift                   # the new index
                if c < w and p < size:
                    out_indices[k] = np.uint16(p & np.uint64(0xFFFF))
                    out_pixels[k] = pixels[q]
                    k += np.uint64(1)
        else:
            q = a
            while q < b:                                 # one image row [q, e) at a time
                row_start = np.uint64(indices[q]) - np.uint64(col_of[indices[q]])
                e = q + np.uint64(1)
                while e < b and np.uint64(indices[e]) < row_start + w:
                    e += np.uint64(1)
                new_row = np.int64(row_start) + dy * width          # where the image row lands
                if new_row >= 0 and new_row < np.int64(size):
                    base = np.uint64(new_row + width - 1 + dx)      # p' = base - c, c' = W - 1 - c + dx
                    cmax = np.uint64(width - 1 + dx)
                    for t in range(np.int64(e - q)):                # v = e - 1 .. q: backwards
                        v = e - np.uint64(1) - np.uint64(t)
                        c = np.uint64(col_of[indices[v]])
                        if cmax - c < w:                            # 0 <= W - 1 - c + dx < W
                            out_indices[k] = np.uint16((base - c) & np.uint64(0xFFFF))
                            out_pixels[k] = pixels[v]
                            k += np.uint64(1)
                q = e
        out_indptr[j + 1] = k
    return k


@njit(cache=True)
def _image_fits(indices, a, b, box, height, width):
    """Whether image indices[a:b] rises strictly below H W and lies in its box (first row, last
    row, first column, last column): what the moves below rely on. A row's first and last pixel
    give its rows; the columns come pixel by pixel as p - W floor(p m / 2^32), m = floor(2^32 / W)
    + 1 (exact for p, W <= 2^16; a loop LLVM vectorizes, where a table lookup would not be)."""
    if b <= a:
        return True
    if not _row_ascending(indices, a, b, height * width):
        return False
    w = np.uint64(width)
    m = np.uint64(2 ** 32) // w + np.uint64(1)
    first_row = np.int64((np.uint64(indices[a]) * m) >> np.uint64(32))
    last_row = np.int64((np.uint64(indices[b - 1]) * m) >> np.uint64(32))
    if first_row < box[0] or last_row > box[1] or box[2] < 0 or box[3] < 0:
        return False
    lo_col, hi_col = w, np.uint64(0)
    for q in range(np.uint64(a), np.uint64(b)):
        p = np.uint64(indices[q])
        col = p - ((p * m) >> np.uint64(32)) * w
        lo_col = min(col, lo_col)
        hi_col = max(col, hi_col)
    return lo_col >= np.uint64(box[2]) and hi_col <= np.uint64(box[3])


@njit(cache=True)
def _kept(indptr, indices, boxes, i, dx, dy, flip, col_of, height, width):
    """How many of image i's non-zeros stay on the canvas after the move (dx, dy, flip): all of
    them when its bounding box does (the usual case: no pixel read here; ``_augment_rows`` checks
    the image as it moves it), else counted pixel by pixel; -1 when the image does not fit its box
    or its indices do not rise below H W (``_image_fits``)."""
    a, b = indptr[i], indptr[i + 1]
    c0, c1 = (width - 1 - boxes[i, 3], width - 1 - boxes[i, 2]) if flip else (boxes[i, 2], boxes[i, 3])
    if boxes[i, 0] + dy >= 0 and boxes[i, 1] + dy < height and c0 + dx >= 0 and c1 + dx < width:
        return b - a
    if not _image_fits(indices, a, b, boxes[i], height, width):
        return -1
    size = np.uint64(height * width)
    w = np.uint64(width)
    n = 0
    for q in range(a, b):
        col = np.int64(col_of[indices[q]])
        new_row = np.uint64(np.int64(indices[q]) - col + dy * width)     # negative wraps: fails < size
        new_col = np.uint64((width - 1 - col if flip else col) + dx)
        n += (new_row < size) & (new_col < w)
    return n


def augment_csr(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, n_threads, out_indptr,
                out_indices, out_pixels):
    """Rows order[lo + j] of a CSR image set, each moved by moves[j] = (dx, dy, flip), into a
    batch-ordered CSR (row j); returns the non-zeros written. Arguments: ``fastnn.data.augment``;
    checked by ``fastnn.backends.fused_interface.check_augment`` first, each image by the
    kernel's first pass (ValueError, ``raise_bad_image``). The algorithm: ``_augment_csr``."""
    check_augment(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, n_threads, out_indptr,
                  out_indices, out_pixels)
    k = _augment_csr(indptr, indices, pixels, boxes, order, np.int64(lo), moves, col_of, np.int64(height),
                     np.int64(width), np.int64(n_threads), out_indptr, out_indices, out_pixels)
    if k < -1:
        raise_bad_image(int(-2 - k))
    if k == -1:
        raise ValueError("augment_csr: out_indices/out_pixels have no room for the rows' non-zeros")
    return k


@njit(cache=True, parallel=True)
def _augment_csr(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, n_threads, out_indptr,
                 out_indices, out_pixels):
    """The core of ``augment_csr``; returns the non-zeros written, -1 when the out arrays have
    no room for them, or -2 - i for an image i that ``_image_fits`` refused (the out arrays then
    incomplete).

    Pixel p (row r, column c) goes to (r + dy) * W + c' + dx, c' = c or W - 1 - c (flipped),
    dropped where the column or the row leaves the canvas. Indices stay ascending within a row:
    a flipped image row is walked backwards. Integer index arithmetic only, no division.
    Two passes over the threads' shares of rows (j0 = k t / T .. j1): how many non-zeros each
    share keeps (``_kept``: the bounding box answers for most images), then thread t moves its
    rows into the out arrays from where its share starts."""
    n_rows = moves.shape[0]
    starts = np.zeros(n_threads + 1, dtype=np.int64)      # (T+1,) where share t is written
    rows = np.zeros(n_threads + 1, dtype=np.int64)        # (T+1,) share t = rows rows[t]:rows[t+1]
    for t in range(n_threads + 1):
        rows[t] = (n_rows * t) // n_threads
    totals = np.zeros(n_threads, dtype=np.int64)          # (T,) non-zeros share t keeps
    bad = np.full(n_threads, -1, dtype=np.int64)          # (T,) an image share t refused
    for t in prange(n_threads):
        total = 0
        for j in range(rows[t], rows[t + 1]):
            kept = _kept(indptr, indices, boxes, order[lo + j], np.int64(moves[j, 0]), np.int64(moves[j, 1]),
                         moves[j, 2] != 0, col_of, height, width)
            if kept < 0:
                bad[t] = order[lo + j]
                break
            total += kept
        totals[t] = total
    for t in range(n_threads):
        if bad[t] >= 0:
            return -2 - bad[t]
        starts[t + 1] = starts[t] + totals[t]
    out_indptr[0] = 0
    if starts[n_threads] > out_indices.size or starts[n_threads] > out_pixels.size:
        return -1
    for t in prange(n_threads):
        _augment_rows(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, rows[t], rows[t + 1],
                      starts[t], out_indptr, out_indices, out_pixels, bad[t:t + 1])
    for t in range(n_threads):
        if bad[t] >= 0:
            return -2 - bad[t]
    return starts[n_threads]
