# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The cython backend's augmentation: each call's rows, moved as the epoch's
``fastnn.data.augment.Augmenter`` says, into a batch-ordered CSR for the fused step
(``fastnn/backends/numba/augment.py`` is the same algorithm, loop for loop)."""
from cython.parallel cimport prange
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint64_t
from fastnn.backends.cython._shared cimport _prefetch_row, _row_ascending

import numpy as np

from fastnn.backends.fused_interface import check_augment, raise_bad_image


cdef enum:
    AUGMENT_PREFETCH_ROWS = 8      # rows ahead whose non-zeros are prefetched (random rows come from DRAM)


cdef Py_ssize_t _augment_rows(const int64_t* indptr, const uint16_t* indices, const uint8_t* pixels,
                              const int16_t* boxes, const int64_t* order, const int32_t* moves,
                              const uint16_t* col_of, Py_ssize_t height,
                              Py_ssize_t width, Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t k, int64_t* out_indptr,
                              uint16_t* out_indices, uint8_t* out_pixels, int64_t* bad) noexcept nogil:
    """Rows j0..j1-1 of ``augment_csr`` (order and moves start at the call's first row), their
    non-zeros written from position k on; sets out_indptr[j + 1] for those rows (in these
    positions) and returns the end position. An image that ``_image_fits`` refuses (checked
    here, as its row arrives, before any index of it is used) stops the share: its number into
    bad[0].

    An unflipped image whose bounding box stays on the canvas (most of them) is one vectorized
    loop of additions; the others test each pixel (a store past the share's end would land in
    the next thread's share, so a dropped pixel is never stored)."""
    cdef Py_ssize_t size = height * width, j, q, e, u, a, b, c, p, shift, row_start, new_row
    cdef int64_t i
    cdef int32_t dx, dy, flip
    cdef uint16_t shift16
    cdef const int16_t* box
    for j in range(j0, min(j0 + <Py_ssize_t>AUGMENT_PREFETCH_ROWS, j1)):
        _prefetch_row(indptr, indices, pixels, order[j])
    for j in range(j0, j1):
        if j + AUGMENT_PREFETCH_ROWS < j1:
            _prefetch_row(indptr, indices, pixels, order[j + AUGMENT_PREFETCH_ROWS])
        i = order[j]
        dx = moves[3 * j]
        dy = moves[3 * j + 1]
        flip = moves[3 * j + 2]
        a = indptr[i]
        b = indptr[i + 1]
        box = boxes + 4 * i
        if not _image_fits(indices, a, b, box, height, width):
            bad[0] = i
            return k
        if (flip == 0 and box[0] + dy >= 0 and box[1] + dy < height and box[2] + dx >= 0
                and box[3] + dx < width):                   # the whole image stays on the canvas
            shift16 = <uint16_t>(dy * width + dx)           # added modulo 2**16
            for q in range(b - a):                          # vectorized: no compaction
                out_indices[k + q] = <uint16_t>(indices[a + q] + shift16)
                out_pixels[k + q] = pixels[a + q]
            k += b - a
        elif flip == 0:
            shift = dy * width + dx
            for q in range(a, b):
                c = col_of[indices[q]] + dx                         # the new column
                p = indices[q] + shift                              # the new index
                if <size_t>c < <size_t>width and <size_t>p < <size_t>size:
                    out_indices[k] = <uint16_t>p
                    out_pixels[k] = pixels[q]
                    k += 1
        else:
            q = a
            while q < b:                                    # one image row [q, e) at a time
                row_start = indices[q] - col_of[indices[q]]
                e = q + 1
                while e < b and indices[e] < row_start + width:
                    e += 1
                new_row = row_start + dy * width            # where the image row lands
                if new_row >= 0 and new_row < size:
                    for u in range(e - 1, q - 1, -1):
                        c = width - 1 - col_of[indices[u]] + dx
                        if <size_t>c < <size_t>width:
                            out_indices[k] = <uint16_t>(new_row + c)
                            out_pixels[k] = pixels[u]
                            k += 1
                q = e
        out_indptr[j + 1] = k
    return k


cdef bint _image_fits(const uint16_t* indices, Py_ssize_t a, Py_ssize_t b, const int16_t* box, Py_ssize_t height,
                      Py_ssize_t width) noexcept nogil:
    """Whether image indices[a:b] rises strictly below H W and lies in its box (first row, last
    row, first column, last column): what the moves below rely on. A row's first and last pixel
    give its rows; the columns come pixel by pixel as p - W floor(p m / 2^32), m = floor(2^32 / W)
    + 1 (exact for p, W <= 2^16; a loop the compiler vectorizes, where a table lookup would not be)."""
    cdef Py_ssize_t q
    cdef uint64_t m = (1ULL << 32) // <uint64_t>width + 1, p, col, lo_col = width, hi_col = 0
    if b <= a:
        return True
    if not _row_ascending(indices, a, b, height * width):
        return False
    if (<int64_t>((indices[a] * m) >> 32) < box[0] or <int64_t>((indices[b - 1] * m) >> 32) > box[1]
            or box[2] < 0 or box[3] < 0):
        return False
    for q in range(a, b):
        p = indices[q]
        col = p - ((p * m) >> 32) * <uint64_t>width
        lo_col = col if col < lo_col else lo_col
        hi_col = col if col > hi_col else hi_col
    return lo_col >= <uint64_t>box[2] and hi_col <= <uint64_t>box[3]


cdef Py_ssize_t _kept(const int64_t* indptr, const uint16_t* indices, const int16_t* boxes, int64_t i,
                     Py_ssize_t dx, Py_ssize_t dy, bint flip, const uint16_t* col_of, Py_ssize_t height,
                     Py_ssize_t width) noexcept nogil:
    """How many of image i's non-zeros stay on the canvas after the move (dx, dy, flip): all of
    them when its bounding box does (the usual case: no pixel read here; ``_augment_rows`` checks
    the image as it moves it), else counted pixel by pixel; -1 when the image does not fit its box
    or its indices do not rise below H W (``_image_fits``)."""
    cdef const int16_t* box = boxes + 4 * i
    cdef Py_ssize_t a = indptr[i], b = indptr[i + 1], q, col, n = 0
    cdef Py_ssize_t c0 = width - 1 - box[3] if flip else box[2], c1 = width - 1 - box[2] if flip else box[3]
    if box[0] + dy >= 0 and box[1] + dy < height and c0 + dx >= 0 and c1 + dx < width:
        return b - a
    if not _image_fits(indices, a, b, box, height, width):
        return -1
    for q in range(a, b):
        col = col_of[indices[q]]
        n += ((<size_t>(indices[q] - col + dy * width) < <size_t>(height * width))
              & (<size_t>((width - 1 - col if flip else col) + dx) < <size_t>width))
    return n


def augment_csr(indptr, indices, pixels, boxes, order, Py_ssize_t lo, moves, col_of, Py_ssize_t height,
                Py_ssize_t width, int n_threads, out_indptr, out_indices, out_pixels):
    """Rows order[lo + j] of a CSR image set, each moved by moves[j] = (dx, dy, flip), into a
    batch-ordered CSR (row j); returns the non-zeros written. Arguments: ``fastnn.data.augment``;
    checked by ``fastnn.backends.fused_interface.check_augment`` first, each image by the
    kernel's first pass (ValueError, ``raise_bad_image``). The algorithm: ``_augment_csr``."""
    check_augment(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, n_threads, out_indptr,
                  out_indices, out_pixels)
    return _augment_csr(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width, n_threads,
                        out_indptr, out_indices, out_pixels)


cdef Py_ssize_t _augment_csr(const int64_t[::1] indptr, const uint16_t[::1] indices, const uint8_t[::1] pixels,
                             const int16_t[:, ::1] boxes, const int64_t[::1] order, Py_ssize_t lo,
                             const int32_t[:, ::1] moves, const uint16_t[::1] col_of, Py_ssize_t height,
                             Py_ssize_t width, int n_threads, int64_t[::1] out_indptr, uint16_t[::1] out_indices,
                             uint8_t[::1] out_pixels) except -1:
    """The core of ``augment_csr``.

    Pixel p (row r, column c) goes to (r + dy) * W + c' + dx, c' = c or W - 1 - c (flipped),
    dropped where the column or the row leaves the canvas. Indices stay ascending within a row:
    a flipped image row is walked backwards. Integer index arithmetic only, no division.
    Two passes over the threads' shares of rows (j0 = k t / T .. j1): how many non-zeros each
    share keeps (``_kept``: the bounding box answers for most images), then thread t moves its
    rows into the out arrays from where its share starts."""
    cdef Py_ssize_t n_rows = moves.shape[0], j, kept
    cdef int t
    out_indptr[0] = 0
    if n_rows == 0:
        return 0
    cdef int64_t[::1] starts = np.zeros(n_threads + 1, dtype=np.int64)   # (T+1,) where share t is written
    cdef int64_t[::1] rows = np.zeros(n_threads + 1, dtype=np.int64)     # (T+1,) share t = rows rows[t]:rows[t+1]
    cdef int64_t[::1] totals = np.zeros(n_threads, dtype=np.int64)       # (T,) non-zeros share t keeps
    cdef int64_t[::1] bad = np.full(n_threads, -1, dtype=np.int64)       # (T,) an image share t refused
    with nogil:
        for t in range(n_threads + 1):
            rows[t] = (n_rows * t) // n_threads
        for t in prange(n_threads, num_threads=n_threads, schedule="static"):
            for j in range(rows[t], rows[t + 1]):
                kept = _kept(&indptr[0], &indices[0], &boxes[0, 0], order[lo + j], moves[j, 0], moves[j, 1],
                             moves[j, 2] != 0, &col_of[0], height, width)
                if kept < 0:
                    bad[t] = order[lo + j]
                    break
                totals[t] += kept
        for t in range(n_threads):
            starts[t + 1] = starts[t] + totals[t]
    for t in range(n_threads):
        if bad[t] >= 0:
            raise_bad_image(bad[t])
    if starts[n_threads] > out_indices.shape[0] or starts[n_threads] > out_pixels.shape[0]:
        raise ValueError("augment_csr: out_indices/out_pixels have no room for the rows' non-zeros")
    with nogil:
        for t in prange(n_threads, num_threads=n_threads, schedule="static"):
            _augment_rows(&indptr[0], &indices[0], &pixels[0], &boxes[0, 0], &order[lo], &moves[0, 0],
                          &col_of[0], height, width, rows[t], rows[t + 1], starts[t], &out_indptr[0],
                          &out_indices[0], &out_pixels[0], &bad[t])
    for t in range(n_threads):
        if bad[t] >= 0:
            raise_bad_image(bad[t])
    return starts[n_threads]
