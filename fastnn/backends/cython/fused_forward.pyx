# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The cython backend's fused forward: every layer of a batch in one call
(``fastnn/backends/numba/fused_forward.py`` is the same algorithm)."""
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_release_lock, PyThread_type_lock,
)
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset
from cython cimport floating
from fastnn.backends.cython._shared cimport (
    _activate, _gather, _now, _sigmoid, _softmax_row, _sparse_row, relu_gather_double, relu_gather_float,
)

import numpy as np

from fastnn.backends.fused_interface import ForwardOptions, ForwardParameters, ForwardWork

FIELD_ORDER = {ForwardParameters: ("weights", "biases"), ForwardWork: ("work_f", "work_i"),
               ForwardOptions: ("act", "mode", "unit_range")}
for _group, _fields in FIELD_ORDER.items():
    if _group._fields != _fields:
        raise ImportError(f"fused_forward.pyx reads {_group.__name__} as {_fields}; the interface now has "
                          f"{_group._fields}: update the positions in fused_forward")
cdef type _PARAMS = ForwardParameters, _WORK = ForwardWork, _OPTIONS = ForwardOptions   # C-level, for the type checks


# ---------------------------------------------------------------- the fused forward pass
# The same arguments and results as fastnn/backends/numba/fused_forward.py (documented in
# fastnn.inference): every layer of X in one call. Each layer's input row is gathered into its
# non-zeros, then z = b + the matching rows of W (sparse_row.h: sums held in registers,
# column block by column block). Two ways through layer 0, decided per thread:
# - row by row (_forward_rows): every row through all the layers; for small batches;
# - blocked (_forward_block), FORWARD_BLOCK_ROWS rows at a time, layer by layer: the row path
#   is bound by bringing rows of W from L2 (W0: 512 bytes per non-zero pixel, ~16-20 bytes per
#   cycle measured on Zen 3 whether the pixels are random or consecutive; W1 is evicted from L1
#   by W0's rows at every image), so the block's rows go through W_l a block of
#   FORWARD_BLOCK_BYTES of its rows at a time, which stays in L1 while every row adds its
#   non-zeros of those inputs. Each output is summed in the same order as on the row path, so
#   both give the same bits.
# Rows are split evenly between the threads for N >= FORWARD_PARALLEL_ROWS, else the calling
# thread runs them (no OpenMP wake-up at batch 1). Nothing is allocated.
cimport numpy as cnp

cnp.import_array()

cdef enum:
    FORWARD_PARALLEL_ROWS = 16     # rows from which the threads share a batch
    FORWARD_MAX_LAYERS = 64
    FORWARD_MAX_THREADS = 256      # threads whose first bad row fused_forward keeps
    FORWARD_BLOCK_ROWS = 32        # rows that go through W0 together (fastnn.backends.fused_interface.FORWARD_BLOCK_ROWS)
    FORWARD_BLOCK_BYTES = 16384    # W0's rows per pixel block: half of a 32 KB L1


# AVX-512 float32 row kernels (the header documents them); FASTNN_FORWARD512 is 0 and they are
# stubs where the build has no AVX-512F.
cdef extern from "forward512.h" nogil:
    int FASTNN_FORWARD512
    Py_ssize_t gather_check_f512(const float* a, Py_ssize_t n, int check, int32_t* idx, float* val,
                                 int32_t* bounds, Py_ssize_t every, int* bad)
    Py_ssize_t relu_gather_f512(float* z, Py_ssize_t n, int32_t* idx, float* val, int32_t* bounds,
                                Py_ssize_t every)
    void sparse_row_f512(const float* W, Py_ssize_t n_out, const int32_t* idx, const float* val, Py_ssize_t m,
                         const float* z_in, float* z)

# The batch's threads (the header says why not an OpenMP loop): chunks claimed by whichever
# thread is ready; the caller never waits for a thread that has not started.
cdef extern from "forward_pool.h" nogil:
    ctypedef void (*fastnn_chunk_fn)(void* args, int slot, Py_ssize_t chunk) noexcept nogil
    void fastnn_pool_run(int width, fastnn_chunk_fn fn, void* args, Py_ssize_t n_chunks)

cdef extern from "unistd.h" nogil:
    long sysconf(int name)
    int _SC_LEVEL1_DCACHE_SIZE


cdef Py_ssize_t _l1_block_bytes():
    """Bytes of W's rows that one block of the AVX-512 path keeps in L1: two thirds of this CPU's
    L1 data cache (32 KB on a 48 KB Zen 5 L1, where 64 pixels of W0 per block ran 0.53 us an image
    against 0.57 for 32), FORWARD_BLOCK_BYTES where the C library does not say."""
    cdef long size = sysconf(_SC_LEVEL1_DCACHE_SIZE)
    return size * 2 // 3 if size >= 3 * FORWARD_BLOCK_BYTES // 2 else FORWARD_BLOCK_BYTES


cdef Py_ssize_t L1_BLOCK_BYTES = _l1_block_bytes()
cdef inline Py_ssize_t _chunk_rows(Py_ssize_t n, Py_ssize_t n_threads) noexcept nogil:
    """Rows per chunk when the threads share a batch (forward_pool.h: each chunk goes to whichever
    thread is ready): whole blocks of FORWARD_BLOCK_ROWS, about four chunks per thread, at most
    256 rows, so that a thread that starts late leaves its share to the others."""
    cdef Py_ssize_t rows = n // (4 * n_threads)
    rows = (rows + FORWARD_BLOCK_ROWS - 1) // FORWARD_BLOCK_ROWS * FORWARD_BLOCK_ROWS
    return min(256, max(<Py_ssize_t>FORWARD_BLOCK_ROWS, rows))


FORWARD512 = bool(FASTNN_FORWARD512)      # whether float32 rows take the AVX-512 path (tests read it)
BLOCK_BYTES = L1_BLOCK_BYTES               # the AVX-512 path's block of W's rows, in bytes


cdef inline Py_ssize_t _activate_gather(floating* z, Py_ssize_t n, int act, int32_t* nz_index,
                                        floating* nz_value) noexcept nogil:
    """z = act(z) in place and its non-zeros into (nz_index, nz_value); returns their count. ReLU
    in the same pass, branch-free (half its outputs are zeros; sparse_row.h), the others
    then ``_gather``."""
    if act != 0:
        _activate(z, z, n, act)
        return _gather(z, 1, n, nz_index, nz_value)
    if floating is float:
        return relu_gather_float(z, n, nz_index, nz_value)
    else:
        return relu_gather_double(z, n, nz_index, nz_value)


cdef inline void _write_output(Py_ssize_t i, const floating* logits, Py_ssize_t c, int mode, floating* out_f,
                               int64_t* out_i) noexcept nogil:
    """Row i's output from its logits (c,): mode 0 logits, 1 probs (as softmax_xent), 2 labels (the
    first maximum)."""
    cdef Py_ssize_t j, best
    cdef double row_max
    if mode == 2:
        best = 0
        for j in range(1, c):
            if logits[j] > logits[best]:
                best = j
        out_i[i] = best
    elif mode == 1:
        _softmax_row(logits, c, out_f + i * c, &row_max)
    else:
        for j in range(c):
            out_f[i * c + j] = logits[j]


cdef void _finish_row(Py_ssize_t i, Py_ssize_t first, Py_ssize_t n_layers, const Py_ssize_t* sizes,
                      const void** W_ptr, const void** b_ptr, Py_ssize_t m, int act, int mode, floating* out_f,
                      int64_t* out_i, floating* hidden, int32_t* nz_index, floating* nz_value) noexcept nogil:
    """Layers first.. (first < n_layers) of row i, whose input to layer ``first`` has the m non-zeros
    (nz_index, nz_value), then its output. hidden (S,): the layers' outputs."""
    cdef Py_ssize_t l, off = 0
    cdef floating* z = hidden
    for l in range(1, first + 1):
        off += sizes[l]
    for l in range(first, n_layers):
        z = hidden + off                                                  # (n_out,)
        _sparse_row(<const floating*>W_ptr[l], sizes[l + 1], nz_index, nz_value, m, <const floating*>b_ptr[l], z)
        if l < n_layers - 1:
            m = _activate_gather(z, sizes[l + 1], act, nz_index, nz_value)
        off += sizes[l + 1]
    _write_output(i, z, sizes[n_layers], mode, out_f, out_i)


cdef inline bint _inputs_ok(const floating* a, Py_ssize_t stride, Py_ssize_t n, bint unit_range) noexcept nogil:
    """Whether every input of a row is in [0, 1] (``unit_range``: a model of pixels) or finite (any
    other model): NaN fails every comparison, and v - v is 0 only for a finite v. The policy for
    garbage in (``fastnn.inference``): an error, never a confident label."""
    cdef Py_ssize_t k
    cdef int bad = 0                                       # an int, so that GCC vectorizes the contiguous loops
    if stride != 1:
        for k in range(n):
            bad |= not ((a[k * stride] >= 0) & (a[k * stride] <= 1) if unit_range else a[k * stride] - a[k * stride] == 0)
        return bad == 0
    if unit_range:
        for k in range(n):
            bad |= (a[k] < 0) | (a[k] > 1) | (a[k] != a[k])
    else:
        for k in range(n):
            bad |= (a[k] - a[k]) != 0
    return bad == 0


cdef Py_ssize_t _forward_rows(Py_ssize_t n_layers, const Py_ssize_t* sizes, const void** W_ptr, const void** b_ptr,
                              const floating* X, Py_ssize_t x_row, Py_ssize_t x_col, int act, int mode,
                              bint unit_range, floating* out_f, int64_t* out_i, floating* hidden, int32_t* nz_index,
                              floating* nz_value, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """Rows i0:i1 of X (strides x_row, x_col elements), each through every layer. Returns -1, or
    the first row with an input outside [0, 1] (it stops there)."""
    cdef Py_ssize_t i, m
    for i in range(i0, i1):
        if not _inputs_ok(X + i * x_row, x_col, sizes[0], unit_range):
            return i
        m = _gather(X + i * x_row, x_col, sizes[0], nz_index, nz_value)
        _finish_row(i, 0, n_layers, sizes, W_ptr, b_ptr, m, act, mode, out_f, out_i, hidden, nz_index, nz_value)
    return -1


cdef Py_ssize_t _forward_block(Py_ssize_t n_layers, const Py_ssize_t* sizes, const void** W_ptr,
                               const void** b_ptr, const floating* X, Py_ssize_t x_row, Py_ssize_t x_col, int act,
                               int mode, bint unit_range, floating* out_f, int64_t* out_i, floating* Z,
                               int32_t* row_index,
                               floating* row_value, Py_ssize_t n_hidden_total, Py_ssize_t d_max, Py_ssize_t i0,
                               Py_ssize_t rows) noexcept nogil:
    """Rows i0:i0+rows (rows <= FORWARD_BLOCK_ROWS) layer by layer: each layer's inputs (every
    row's non-zeros, in unit order) go through W_l a block of FORWARD_BLOCK_BYTES of its rows at a
    time, which stays in L1 while every row adds its non-zeros of those units. Z (rows, S): the
    rows' layer outputs; row_index, row_value (rows, Dmax): each row's non-zeros of the current
    layer's input. Returns -1, or the first row with an input outside [0, 1] (nothing computed)."""
    cdef Py_ssize_t S = n_hidden_total, r, l, p0, p1, q0, q1, n_in, n_out, per_block, off = 0
    cdef Py_ssize_t count[FORWARD_BLOCK_ROWS]
    cdef Py_ssize_t done[FORWARD_BLOCK_ROWS]
    cdef const floating* W
    cdef floating* z
    cdef int32_t* idx
    for r in range(rows):
        if not _inputs_ok(X + (i0 + r) * x_row, x_col, sizes[0], unit_range):
            return i0 + r
    for r in range(rows):                                                 # layer 0's inputs: the pixels
        count[r] = _gather(X + (i0 + r) * x_row, x_col, sizes[0], row_index + r * d_max, row_value + r * d_max)
    for l in range(n_layers):
        n_in, n_out = sizes[l], sizes[l + 1]
        W = <const floating*>W_ptr[l]                                     # (n_in, n_out)
        per_block = FORWARD_BLOCK_BYTES // (n_out * sizeof(floating))
        if per_block < 1:
            per_block = 1
        for r in range(rows):                                             # z = b
            memcpy(Z + r * S + off, b_ptr[l], n_out * sizeof(floating))
            done[r] = 0
        p0 = 0
        while p0 < n_in:                                                  # W[p0:p1] stays in L1
            p1 = min(p0 + per_block, n_in)
            for r in range(rows):
                idx = row_index + r * d_max
                q0 = done[r]
                q1 = q0
                while q1 < count[r] and idx[q1] < p1:
                    q1 += 1
                if q1 > q0:
                    z = Z + r * S + off
                    _sparse_row(W, n_out, idx + q0, row_value + r * d_max + q0, q1 - q0, z, z)
                    done[r] = q1
            p0 = p1
        if l < n_layers - 1:                                              # the next layer's inputs
            for r in range(rows):
                count[r] = _activate_gather(Z + r * S + off, n_out, act, row_index + r * d_max,
                                            row_value + r * d_max)
            off += n_out
    for r in range(rows):
        _write_output(i0 + r, Z + r * S + off, sizes[n_layers], mode, out_f, out_i)
    return -1


cdef inline Py_ssize_t _every(Py_ssize_t n_out) noexcept nogil:
    """Chunks of 16 inputs per block of the AVX-512 path: as many of W's rows (n_out floats each)
    as fill L1_BLOCK_BYTES, at least one chunk."""
    cdef Py_ssize_t every = L1_BLOCK_BYTES // (16 * n_out * <Py_ssize_t>sizeof(float))
    return every if every > 1 else 1


cdef inline Py_ssize_t _activate_gather512(float* z, Py_ssize_t n, int act, int32_t* idx, float* val,
                                           int32_t* bounds, Py_ssize_t every) noexcept nogil:
    """z = act(z) in place and its non-zeros (with block bounds, if any) gathered: ReLU fused with
    the gather, the others applied first."""
    cdef int unused
    if act != 0:
        _activate(z, z, n, act)
        return gather_check_f512(z, n, 0, idx, val, bounds, every, &unused)
    return relu_gather_f512(z, n, idx, val, bounds, every)


cdef Py_ssize_t _forward_rows512(Py_ssize_t n_layers, const Py_ssize_t* sizes, const void** W_ptr,
                                 const void** b_ptr, const float* X, Py_ssize_t x_row, int act, int mode,
                                 bint unit_range, float* out_f, int64_t* out_i, float* hidden, int32_t* nz_index,
                                 float* nz_value, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """_forward_rows on the AVX-512 kernels (float32, contiguous rows): each row's inputs checked
    and gathered in one pass, then every layer. Returns -1, or the first bad row (it stops there)."""
    cdef Py_ssize_t i, l, m, off
    cdef int bad
    cdef float* z = hidden
    for i in range(i0, i1):
        m = gather_check_f512(X + i * x_row, sizes[0], 2 if unit_range else 1, nz_index, nz_value, NULL, 1, &bad)
        if bad:
            return i
        off = 0
        for l in range(n_layers):
            z = hidden + off                                              # (n_out,)
            sparse_row_f512(<const float*>W_ptr[l], sizes[l + 1], nz_index, nz_value, m, <const float*>b_ptr[l], z)
            if l < n_layers - 1:
                m = _activate_gather512(z, sizes[l + 1], act, nz_index, nz_value, NULL, 1)
            off += sizes[l + 1]
        _write_output(i, z, sizes[n_layers], mode, out_f, out_i)
    return -1


cdef Py_ssize_t _forward_block512(Py_ssize_t n_layers, const Py_ssize_t* sizes, const void** W_ptr,
                                  const void** b_ptr, const float* X, Py_ssize_t x_row, int act, int mode,
                                  bint unit_range, float* out_f, int64_t* out_i, float* Z, int32_t* row_index,
                                  float* row_value, int32_t* bounds, Py_ssize_t S, Py_ssize_t D16, Py_ssize_t d_max,
                                  Py_ssize_t n_bounds, Py_ssize_t i0, Py_ssize_t rows) noexcept nogil:
    """_forward_block on the AVX-512 kernels (float32, contiguous rows): each layer's input rows are
    gathered with the bounds of their blocks of ``16 _every(n_out)`` inputs (so a row's non-zeros in
    a block are a slice found without a search), then W_l goes a block of its rows at a time
    through every row that has non-zeros there, the block in L1. Z (rows, S), row_index (rows, Dmax),
    row_value (rows, D16), bounds (rows, n_bounds). The sums are the row path's, in its order.
    Returns -1, or the first bad row (the rows before it in the block are not written)."""
    cdef Py_ssize_t r, l, b, q0, q1, n_in, n_out, every, n_blocks, off = 0
    cdef int bad
    cdef const float* W
    cdef float* z
    cdef int32_t* bnd
    every = _every(sizes[1])
    for r in range(rows):                                                 # layer 0's inputs: the pixels
        gather_check_f512(X + (i0 + r) * x_row, sizes[0], 2 if unit_range else 1, row_index + r * d_max,
                          row_value + r * D16, bounds + r * n_bounds, every, &bad)
        if bad:
            return i0 + r
    for l in range(n_layers):
        n_in, n_out = sizes[l], sizes[l + 1]
        W = <const float*>W_ptr[l]                                        # (n_in, n_out)
        every = _every(n_out)
        n_blocks = ((n_in + 15) // 16 + every - 1) // every
        for r in range(rows):                                             # z = b
            memcpy(Z + r * S + off, b_ptr[l], n_out * sizeof(float))
        for b in range(n_blocks):                                         # W[16 every b : 16 every (b + 1)] in L1
            for r in range(rows):
                bnd = bounds + r * n_bounds
                q0, q1 = bnd[b], bnd[b + 1]
                if q1 > q0:
                    z = Z + r * S + off                                   # (n_out,)
                    sparse_row_f512(W, n_out, row_index + r * d_max + q0, row_value + r * D16 + q0, q1 - q0, z, z)
        if l < n_layers - 1:                                              # the next layer's inputs
            every = _every(sizes[l + 2])
            for r in range(rows):
                _activate_gather512(Z + r * S + off, n_out, act, row_index + r * d_max, row_value + r * D16,
                                    bounds + r * n_bounds, every)
            off += n_out
    for r in range(rows):
        _write_output(i0 + r, Z + r * S + off, sizes[n_layers], mode, out_f, out_i)
    return -1


cdef Py_ssize_t _forward_thread(Py_ssize_t n_layers, const Py_ssize_t* sizes, const void** W_ptr,
                                const void** b_ptr, const floating* X, Py_ssize_t x_row, Py_ssize_t x_col, int act,
                                int mode, bint unit_range, floating* out_f, int64_t* out_i, floating* work_f,
                                int32_t* work_i,
                                Py_ssize_t wf_row, Py_ssize_t wi_row, Py_ssize_t n_hidden_total, Py_ssize_t d_max,
                                Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """One thread's rows i0:i1 with its work rows: work_f = [hidden (S,) | nz_value (Dmax,) | Z (R, S) |
    row_value (R, Dmax)], work_i = [nz_index (Dmax,) | row_index (R, Dmax)], R = FORWARD_BLOCK_ROWS;
    blocks of R rows when the thread has 8 rows or more and the buffers hold a block, else row by row.
    Returns -1, or the first row with an input outside [0, 1]."""
    cdef Py_ssize_t S = n_hidden_total, R = FORWARD_BLOCK_ROWS, i, bad
    cdef floating* hidden = work_f
    cdef floating* nz_value = work_f + S                                  # (Dmax,)
    cdef int32_t* nz_index = work_i                                       # (Dmax,)
    cdef bint blocked = i1 - i0 >= 8 and wf_row >= (S + d_max) * (R + 1) and wi_row >= d_max * (R + 1)
    # the AVX-512 path's block: Z (R, S16) from the first 64-byte boundary after nz_value, then
    # row_value (R, D16), rows padded to whole cache lines; the bounds (R, n_bounds) after row_index
    cdef Py_ssize_t n_bounds = d_max // 16 + 2, S16 = (S + 15) // 16 * 16, D16 = (d_max + 15) // 16 * 16
    cdef float* Z512
    if floating is float:
        if FASTNN_FORWARD512 and x_col == 1:
            if (not blocked or wi_row < d_max * (R + 1) + R * n_bounds
                    or wf_row < S + d_max + 16 + R * (S16 + D16)):
                return _forward_rows512(n_layers, sizes, W_ptr, b_ptr, X, x_row, act, mode, unit_range, out_f, out_i,
                                        hidden, nz_index, nz_value, i0, i1)
            Z512 = nz_value + d_max
            Z512 += (-(<size_t>Z512 // sizeof(float))) % 16                 # (R, S16), 64-byte aligned
            i = i0
            while i < i1:
                bad = _forward_block512(n_layers, sizes, W_ptr, b_ptr, X, x_row, act, mode, unit_range, out_f, out_i,
                                        Z512, nz_index + d_max, Z512 + R * S16, nz_index + d_max * (R + 1),
                                        S16, D16, d_max, n_bounds, i, min(R, i1 - i))
                if bad >= 0:
                    return bad
                i += R
            return -1
    if not blocked:
        return _forward_rows(n_layers, sizes, W_ptr, b_ptr, X, x_row, x_col, act, mode, unit_range, out_f, out_i, hidden,
                             nz_index, nz_value, i0, i1)
    cdef floating* Z = nz_value + d_max                                   # (R, S)
    cdef floating* row_value = Z + R * S                                  # (R, Dmax)
    cdef int32_t* row_index = nz_index + d_max                            # (R, Dmax)
    i = i0
    while i < i1:
        bad = _forward_block(n_layers, sizes, W_ptr, b_ptr, X, x_row, x_col, act, mode, unit_range, out_f, out_i, Z,
                             row_index,
                             row_value, S, d_max, i, min(R, i1 - i))
        if bad >= 0:
            return bad
        i += R
    return -1


cdef inline Py_ssize_t _first_bad(const Py_ssize_t* first_bad, Py_ssize_t n_slots) noexcept nogil:
    """The smallest row of first_bad[0:n_slots] that is not -1 (the first bad row of all), or -1."""
    cdef Py_ssize_t t, bad = -1
    for t in range(n_slots):
        if first_bad[t] >= 0 and (bad < 0 or first_bad[t] < bad):
            bad = first_bad[t]
    return bad


cdef inline void _take(PyThread_type_lock lock) noexcept:
    """A runner's lock, waited for without the GIL when another thread holds it."""
    if not PyThread_acquire_lock(lock, NOWAIT_LOCK):
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)


cdef struct ForwardCall:
    # one fused_forward call over the pool: _forward_thread's arguments, the batch's chunks
    Py_ssize_t n_layers
    const Py_ssize_t* sizes
    const void** W_ptr
    const void** b_ptr
    const void* X                    # (N, D) float32 or float64 (is_double)
    Py_ssize_t x_row, x_col
    int act, mode
    bint unit_range, is_double
    void* out_f                      # (N, C) or unused
    int64_t* out_i                   # (N,) or unused
    void* work_f                     # (T, wf_row): a slot's row
    int32_t* work_i                  # (T, wi_row)
    Py_ssize_t wf_row, wi_row, n_hidden_total, d_max, n, chunk
    Py_ssize_t* first_bad            # (T,): each slot's first bad row, or -1


cdef void _forward_chunk(void* args, int slot, Py_ssize_t c) noexcept nogil:
    """Rows of chunk c of a ForwardCall on the work rows of ``slot`` (forward_pool.h's callback)."""
    cdef ForwardCall* a = <ForwardCall*>args
    cdef Py_ssize_t i0 = c * a.chunk, i1 = min(i0 + a.chunk, a.n), row
    if a.is_double:
        row = _forward_thread(a.n_layers, a.sizes, a.W_ptr, a.b_ptr, <const double*>a.X, a.x_row, a.x_col, a.act,
                              a.mode, a.unit_range, <double*>a.out_f, a.out_i, <double*>a.work_f + slot * a.wf_row,
                              a.work_i + slot * a.wi_row, a.wf_row, a.wi_row, a.n_hidden_total, a.d_max, i0, i1)
    else:
        row = _forward_thread(a.n_layers, a.sizes, a.W_ptr, a.b_ptr, <const float*>a.X, a.x_row, a.x_col, a.act,
                              a.mode, a.unit_range, <float*>a.out_f, a.out_i, <float*>a.work_f + slot * a.wf_row,
                              a.work_i + slot * a.wi_row, a.wf_row, a.wi_row, a.n_hidden_total, a.d_max, i0, i1)
    if row >= 0 and (a.first_bad[slot] < 0 or row < a.first_bad[slot]):
        a.first_bad[slot] = row                                           # each chunk stops at its first bad row


cdef inline bint _is_array(object a, int ndim, int typenum) noexcept:
    """a is a C-contiguous ndarray of ``ndim`` dimensions and NumPy type ``typenum``."""
    return (isinstance(a, cnp.ndarray) and cnp.PyArray_NDIM(<cnp.ndarray>a) == ndim
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a))


def same_arrays(seq, tuple arrays):
    """Whether the list (or tuple) ``seq`` holds exactly the objects of ``arrays``, in order: by
    identity, never by value. ``ForwardPlan.matches``' test that a model still has the arrays its
    plan was made for, at every batch-1 ``predict``: ~40 ns here against ~300 in Python.
    Raises TypeError for a ``seq`` that is neither a list nor a tuple."""
    if type(seq) is not list and type(seq) is not tuple:
        raise TypeError("same_arrays: seq must be a list or a tuple")
    cdef Py_ssize_t i, n = len(arrays)
    if PySequence_Fast_GET_SIZE(seq) != n:                   # a list's or a tuple's own items: no copy
        return False
    for i in range(n):
        if PySequence_Fast_GET_ITEM(seq, i) != <PyObject*>arrays[i]:
            return False
    return True


def fused_forward(params, work, options, cnp.ndarray X, cnp.ndarray out_f, cnp.ndarray out_i):
    """Every layer of X (N, D) in one call: logits (``options.mode`` 0) or probs (1) into out_f
    (N, C), labels (2) into out_i (N,) int64. The groups (``ForwardParameters``, ``ForwardWork``,
    ``ForwardOptions``) are documented in ``fastnn.backends.fused_interface``; X may have any
    strides, everything else is C-contiguous of X's dtype (float32 or float64; out_i int64,
    work_i int32). Every size the loops rely on is checked here, once per call (ValueError).
    Returns -1, or the first row of X with an input outside [0, 1] (``unit_range``: a model of
    pixels) or not finite (any model): the outputs are then incomplete and the caller raises."""
    return _fused_forward(params, work, options, X, out_f, out_i)



cdef class ForwardRunner:
    """One model's fused forward with its work buffers and their lock: ``fastnn.inference.forward.
    ForwardPlan``'s calls in compiled code (at batch 1 the Python around ``fused_forward`` cost
    half as much as the forward pass itself: the output array, the lock, the options looked up).

    ``ForwardRunner(params, work, options, on_bad)``: the ``ForwardParameters`` and ``ForwardWork``
    of ``fused_forward``; ``options`` a tuple of six ``ForwardOptions``, index 2 mode + unit_range
    (mode 0 logits, 1 probs, 2 labels); ``on_bad(X, row, unit_range)`` raises the error for a
    row that fails the input check. ``labels(X, unit_range)`` -> (N,) int64 and ``run(X, mode,
    unit_range)`` -> (N, C) of X's dtype, or labels; a new array each call. Raises as
    ``fused_forward`` (TypeError, ValueError) and what ``on_bad`` raises. One call at a time runs
    on the work buffers: a second thread waits for the lock with the GIL released."""
    cdef object params, work, on_bad
    cdef tuple options
    cdef Py_ssize_t num_classes, num_features
    cdef object no_floats, no_labels, dtype
    cdef PyThread_type_lock lock

    def __cinit__(self, params, work, tuple options, on_bad):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError("ForwardRunner: no lock")

    def __init__(self, params, work, tuple options, on_bad):
        if type(params) is not _PARAMS or type(work) is not _WORK or len(options) != 6:
            raise TypeError("ForwardRunner takes a ForwardParameters, a ForwardWork and 6 ForwardOptions")
        for o in options:
            if type(o) is not _OPTIONS:
                raise TypeError("ForwardRunner: options must be ForwardOptions")
        if not callable(on_bad):
            raise TypeError("ForwardRunner: on_bad must be callable")
        weights = params[0]
        if (type(weights) is not tuple or len(weights) < 1
                or not all(isinstance(W, np.ndarray) and W.ndim == 2 for W in weights)):
            raise TypeError("ForwardRunner: params.weights must be a tuple of one or more (n_in, n_out) arrays")
        self.params, self.work, self.options, self.on_bad = params, work, options, on_bad
        W_last = weights[len(weights) - 1]                # (checked non-empty: no wraparound here)
        self.num_classes = W_last.shape[1]
        self.num_features = weights[0].shape[0]
        self.dtype = W_last.dtype
        self.no_floats = np.zeros((0, self.num_classes), dtype=W_last.dtype)
        self.no_labels = np.zeros(0, dtype=np.int64)

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef object _call(self, cnp.ndarray X, int mode, bint unit_range):
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray out_f, out_i
        cdef Py_ssize_t bad
        if not 0 <= mode <= 2:
            raise ValueError("ForwardRunner: mode must be 0 (logits), 1 (probs) or 2 (labels)")
        if cnp.PyArray_NDIM(X) < 1:
            raise ValueError("fused_forward: X must be (N, D) float32 or float64")
        dims[0] = cnp.PyArray_DIM(X, 0)
        dims[1] = self.num_classes
        if mode == 2:
            out_f, out_i = self.no_floats, cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        else:
            out_f, out_i = cnp.PyArray_EMPTY(2, dims, cnp.PyArray_TYPE(self.no_floats), 0), self.no_labels
        _take(self.lock)
        try:
            bad = _fused_forward(self.params, self.work, self.options[2 * mode + unit_range], X, out_f, out_i)
        finally:
            PyThread_release_lock(self.lock)
        if bad >= 0:
            self.on_bad(X, bad, unit_range)
            raise RuntimeError("ForwardRunner: on_bad returned instead of raising")
        return out_i if mode == 2 else out_f

    def labels(self, cnp.ndarray X not None, bint unit_range):
        """Labels (N,) int64 of X (N, D): the first maximum of each row's logits."""
        return self._call(X, 2, unit_range)

    def try_labels(self, X, bint unit_range):
        """``labels(X, unit_range)`` when X is already what the forward runs on, an ndarray (N, D)
        of the weights' dtype (the same dtype object: native byte order), else None: the caller
        converts and checks X first. ``predict``'s batch-1 path, its tests of X made here."""
        if not cnp.PyArray_CheckExact(X):
            return None
        cdef cnp.ndarray A = <cnp.ndarray>X
        if (cnp.PyArray_NDIM(A) != 2 or cnp.PyArray_DIM(A, 1) != self.num_features
                or <object>cnp.PyArray_DESCR(A) is not self.dtype):
            return None
        return self._call(A, 2, unit_range)

    def run(self, cnp.ndarray X not None, int mode, bint unit_range):
        """Logits (mode 0) or probs (1) (N, C) of X's dtype, or labels (2) (N,) int64, of X (N, D)."""
        return self._call(X, mode, unit_range)


cdef Py_ssize_t _fused_forward(params, work, options, cnp.ndarray X, cnp.ndarray out_f,
                               cnp.ndarray out_i) except -2:
    """fused_forward's body (the runner calls it without a Python call in between)."""
    # the groups are named tuples: read by position (a C-level read; a name costs ~35 ns each at
    # batch 1), in the field order FIELD_ORDER checks when this module loads
    if type(params) is not _PARAMS or type(work) is not _WORK or type(options) is not _OPTIONS:
        raise TypeError("fused_forward takes a ForwardParameters, a ForwardWork and a ForwardOptions "
                        "(fastnn.backends.fused_interface)")
    cdef tuple p = <tuple>params, w = <tuple>work, o = <tuple>options
    cdef tuple weights = p[0], biases = p[1]
    cdef object work_f_obj = w[0], work_i_obj = w[1]
    cdef int act = o[0], mode = o[1]
    cdef bint unit_range = o[2]
    cdef Py_ssize_t n_layers = len(weights), l, t, bad = -1
    cdef Py_ssize_t first_bad[FORWARD_MAX_THREADS]
    cdef const void* W_ptr[FORWARD_MAX_LAYERS]
    cdef const void* b_ptr[FORWARD_MAX_LAYERS]
    cdef Py_ssize_t sizes[FORWARD_MAX_LAYERS + 1]
    if n_layers < 1 or n_layers > FORWARD_MAX_LAYERS or len(biases) != n_layers:
        raise ValueError(f"fused_forward: 1 to {FORWARD_MAX_LAYERS} layers, as many biases as weights")
    cdef int typenum = cnp.PyArray_TYPE(X)
    if ((typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE) or cnp.PyArray_NDIM(X) != 2
            or not cnp.PyArray_ISNOTSWAPPED(X)):
        raise ValueError("fused_forward: X must be (N, D) float32 or float64 in native byte order")
    if not 0 <= act <= 2 or not 0 <= mode <= 2:
        raise ValueError("fused_forward: act and mode must be codes of fastnn.backends.fused_interface")
    sizes[0] = cnp.PyArray_DIM(X, 1)
    for l in range(n_layers):
        W, b = weights[l], biases[l]
        if (not _is_array(W, 2, typenum) or not _is_array(b, 1, typenum)
                or cnp.PyArray_DIM(<cnp.ndarray>W, 0) != sizes[l]
                or cnp.PyArray_DIM(<cnp.ndarray>b, 0) != cnp.PyArray_DIM(<cnp.ndarray>W, 1)):
            raise ValueError(f"fused_forward: weights[{l}] must be ({sizes[l]}, n_out) and biases[{l}] (n_out,), "
                             f"C-contiguous of X's dtype")
        W_ptr[l] = cnp.PyArray_DATA(<cnp.ndarray>W)
        b_ptr[l] = cnp.PyArray_DATA(<cnp.ndarray>b)
        sizes[l + 1] = cnp.PyArray_DIM(<cnp.ndarray>W, 1)
    cdef Py_ssize_t n_hidden_total = 0, d_max = 0                      # S = sum(sizes[1:]), max(sizes[:-1])
    for l in range(1, n_layers + 1):
        n_hidden_total += sizes[l]
    for l in range(n_layers):
        d_max = max(d_max, sizes[l])
    if not _is_array(work_f_obj, 2, typenum) or not _is_array(work_i_obj, 2, cnp.NPY_INT32):
        raise ValueError("fused_forward: work_f must be (T, W) of X's dtype and work_i (T, W) int32")
    cdef cnp.ndarray work_f = <cnp.ndarray>work_f_obj, work_i = <cnp.ndarray>work_i_obj
    if (cnp.PyArray_DIM(work_f, 0) < 1
            or cnp.PyArray_DIM(work_i, 0) != cnp.PyArray_DIM(work_f, 0)
            or cnp.PyArray_DIM(work_f, 1) < n_hidden_total + d_max
            or cnp.PyArray_DIM(work_i, 1) < d_max):
        raise ValueError(f"fused_forward: work_f must be (T, >= {n_hidden_total + d_max}), work_i (T, >= {d_max})")
    if mode == 2:
        if not _is_array(out_i, 1, cnp.NPY_INT64) or cnp.PyArray_DIM(out_i, 0) != cnp.PyArray_DIM(X, 0):
            raise ValueError("fused_forward: out_i must be (N,) int64 for labels")
    elif (not _is_array(out_f, 2, typenum) or cnp.PyArray_DIM(out_f, 0) != cnp.PyArray_DIM(X, 0)
          or cnp.PyArray_DIM(out_f, 1) != sizes[n_layers]):
        raise ValueError(f"fused_forward: out_f must be (N, {sizes[n_layers]}) of X's dtype")
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(X)
    if cnp.PyArray_STRIDES(X)[0] % itemsize or cnp.PyArray_STRIDES(X)[1] % itemsize:
        X = np.ascontiguousarray(X)                                       # strides not in whole elements
    cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0)
    cdef Py_ssize_t x_row = cnp.PyArray_STRIDES(X)[0] // itemsize, x_col = cnp.PyArray_STRIDES(X)[1] // itemsize
    cdef int n_threads = <int>cnp.PyArray_DIM(work_f, 0)
    cdef Py_ssize_t wf_row = cnp.PyArray_DIM(work_f, 1), wi_row = cnp.PyArray_DIM(work_i, 1)
    cdef bint is_double = cnp.PyArray_TYPE(X) == cnp.NPY_DOUBLE
    cdef void* xp = cnp.PyArray_DATA(X)
    cdef void* ofp = cnp.PyArray_DATA(out_f)
    cdef int64_t* oip = <int64_t*>cnp.PyArray_DATA(out_i)
    cdef void* wfp = cnp.PyArray_DATA(work_f)
    cdef int32_t* wip = <int32_t*>cnp.PyArray_DATA(work_i)
    if n < FORWARD_PARALLEL_ROWS:                # the calling thread, with the GIL: a few microseconds, less
        if is_double:                            # than releasing and taking it back costs at batch 1
            return _forward_thread(n_layers, sizes, W_ptr, b_ptr, <const double*>xp, x_row, x_col, act, mode,
                                   unit_range, <double*>ofp, oip, <double*>wfp, wip, wf_row, wi_row, n_hidden_total,
                                   d_max, 0, n)
        return _forward_thread(n_layers, sizes, W_ptr, b_ptr, <const float*>xp, x_row, x_col, act, mode,
                               unit_range, <float*>ofp, oip, <float*>wfp, wip, wf_row, wi_row, n_hidden_total,
                               d_max, 0, n)
    if n_threads < 2:                                                     # the calling thread, no OpenMP region
        with nogil:
            if is_double:
                bad = _forward_thread(n_layers, sizes, W_ptr, b_ptr, <const double*>xp, x_row, x_col, act, mode,
                                      unit_range, <double*>ofp, oip, <double*>wfp, wip, wf_row, wi_row, n_hidden_total, d_max,
                                      0, n)
            else:
                bad = _forward_thread(n_layers, sizes, W_ptr, b_ptr, <const float*>xp, x_row, x_col, act, mode,
                                      unit_range, <float*>ofp, oip, <float*>wfp, wip, wf_row, wi_row, n_hidden_total, d_max,
                                      0, n)
        return bad
    if n_threads > FORWARD_MAX_THREADS:
        n_threads = FORWARD_MAX_THREADS
    cdef ForwardCall call
    call.n_layers, call.sizes, call.W_ptr, call.b_ptr = n_layers, sizes, W_ptr, b_ptr
    call.X, call.x_row, call.x_col, call.act, call.mode, call.unit_range = xp, x_row, x_col, act, mode, unit_range
    call.out_f, call.out_i, call.work_f, call.work_i, call.wf_row, call.wi_row = ofp, oip, wfp, wip, wf_row, wi_row
    call.n_hidden_total, call.d_max, call.n, call.is_double = n_hidden_total, d_max, n, is_double
    call.chunk = _chunk_rows(n, n_threads)
    call.first_bad = first_bad
    for t in range(n_threads):
        first_bad[t] = -1
    with nogil:
        fastnn_pool_run(n_threads, _forward_chunk, &call, (n + call.chunk - 1) // call.chunk)
    return _first_bad(first_bad, n_threads)



# ---------------------------------------------------------------- the int8 forward (opt-in)
# fastnn.inference.int8 documents the quantization and makes the arrays; forward_int8.h has
# layer 0's kernels (VNNI, or portable C: the same integer sums). Layers 1.. run the float32
# kernels above. Rows as in the float path: row by row below 8 rows per thread, else blocks of
# FORWARD_BLOCK_ROWS rows that go through Wq a block of groups at a time (L1_BLOCK_BYTES of it,
# in L1 while every row of the block adds its non-zero groups there).
cdef extern from "forward_int8.h" nogil:
    int FASTNN_INT8_VNNI
    Py_ssize_t int8_quantize_gather(const float* x, Py_ssize_t n, uint8_t* xq, int32_t* groups, int32_t* bounds,
                                    Py_ssize_t every, int* bad)
    void int8_accumulate(const int8_t* Wq, Py_ssize_t h16, const uint8_t* xq, const int32_t* groups, Py_ssize_t m,
                         int32_t* acc)
    void int8_dequantize(const int32_t* acc, const float* scale, const float* b, Py_ssize_t h, float* z)

INT8_VNNI = bool(FASTNN_INT8_VNNI)        # whether layer 0 of Int8Runner runs on VPDPBUSD (tests read it)


cdef struct Int8Net:
    # an Int8Runner's arrays and sizes, checked when it was made; L layers, layer 0 quantized
    Py_ssize_t n_layers                           # L
    Py_ssize_t sizes[FORWARD_MAX_LAYERS + 1]      # D, H0, ..., C
    const int8_t* Wq                              # (G, H16, 4) int8: layer 0's weights, 4 inputs per group
    const float* scale                            # (H16,) float32: an output's unit of Wq, over 255
    const void* W_ptr[FORWARD_MAX_LAYERS]         # layers 1..L-1: (n_in, n_out) float32 (W_ptr[0] unused)
    const void* b_ptr[FORWARD_MAX_LAYERS]         # every layer's (n_out,) float32
    Py_ssize_t G, H16, S, d_max, act, every, n_bounds
    # one thread's buffer, byte offsets (each on a 64-byte boundary) and its length
    Py_ssize_t off_hidden, off_value, off_index, off_acc, off_xq, off_groups, off_bounds, row_bytes
    Py_ssize_t xq_row, groups_row                 # a block row's xq bytes and groups (int32)


cdef void _int8_finish(Int8Net* net, Py_ssize_t i, int mode, float* out_f, int64_t* out_i, float* hidden,
                       int32_t* nz_index, float* nz_value) noexcept nogil:
    """Layers 1.. of row i, whose layer-0 output (H0,) is in hidden[0:H0], then its output."""
    cdef Py_ssize_t l, m, off = 0
    cdef float* z = hidden
    cdef Py_ssize_t* sizes = net.sizes
    for l in range(1, net.n_layers):
        if FASTNN_FORWARD512:
            m = _activate_gather512(z, sizes[l], <int>net.act, nz_index, nz_value, NULL, 1)
        else:
            m = _activate_gather(z, sizes[l], <int>net.act, nz_index, nz_value)
        off += sizes[l]
        z = hidden + off                                                  # (n_out,)
        if FASTNN_FORWARD512:
            sparse_row_f512(<const float*>net.W_ptr[l], sizes[l + 1], nz_index, nz_value, m,
                            <const float*>net.b_ptr[l], z)
        else:
            _sparse_row(<const float*>net.W_ptr[l], sizes[l + 1], nz_index, nz_value, m, <const float*>net.b_ptr[l], z)
    _write_output(i, z, sizes[net.n_layers], mode, out_f, out_i)


cdef Py_ssize_t _int8_thread(Int8Net* net, const float* X, Py_ssize_t x_row, int mode, float* out_f,
                             int64_t* out_i, uint8_t* buf, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """Rows i0:i1 of X (contiguous rows, x_row floats apart) with one thread's buffer. Returns -1,
    or the first row with an input outside [0, 1] or NaN (it stops there)."""
    cdef float* hidden = <float*>(buf + net.off_hidden)                  # (S16,)
    cdef float* nz_value = <float*>(buf + net.off_value)                 # (Dmax16,)
    cdef int32_t* nz_index = <int32_t*>(buf + net.off_index)             # (Dmax16,)
    cdef int32_t* acc = <int32_t*>(buf + net.off_acc)                    # (R, H16)
    cdef uint8_t* xq = buf + net.off_xq                                  # (R, xq_row)
    cdef int32_t* groups = <int32_t*>(buf + net.off_groups)              # (R, groups_row)
    cdef int32_t* bounds = <int32_t*>(buf + net.off_bounds)              # (R, n_bounds)
    cdef Py_ssize_t D = net.sizes[0], H0 = net.sizes[1], H16 = net.H16, R = FORWARD_BLOCK_ROWS
    cdef Py_ssize_t i, r, b, rows, q0, q1, m, n_blocks
    cdef int bad
    cdef int32_t* bnd
    if i1 - i0 < 8:                                                       # row by row
        for i in range(i0, i1):
            m = int8_quantize_gather(X + i * x_row, D, xq, groups, NULL, 1, &bad)
            if bad:
                return i
            memset(acc, 0, H16 * sizeof(int32_t))
            int8_accumulate(net.Wq, H16, xq, groups, m, acc)
            int8_dequantize(acc, net.scale, <const float*>net.b_ptr[0], H0, hidden)
            _int8_finish(net, i, mode, out_f, out_i, hidden, nz_index, nz_value)
        return -1
    n_blocks = net.n_bounds - 1
    i = i0
    while i < i1:
        rows = min(R, i1 - i)
        for r in range(rows):
            int8_quantize_gather(X + (i + r) * x_row, D, xq + r * net.xq_row, groups + r * net.groups_row,
                                 bounds + r * net.n_bounds, net.every, &bad)
            if bad:
                return i + r
        memset(acc, 0, rows * H16 * sizeof(int32_t))
        for b in range(n_blocks):                                         # Wq's groups of block b in L1
            for r in range(rows):
                bnd = bounds + r * net.n_bounds
                q0, q1 = bnd[b], bnd[b + 1]
                if q1 > q0:
                    int8_accumulate(net.Wq, H16, xq + r * net.xq_row, groups + r * net.groups_row + q0, q1 - q0,
                                    acc + r * H16)
        for r in range(rows):
            int8_dequantize(acc + r * H16, net.scale, <const float*>net.b_ptr[0], H0, hidden)
            _int8_finish(net, i + r, mode, out_f, out_i, hidden, nz_index, nz_value)
        i += R
    return -1


cdef struct Int8Call:
    # one Int8Runner call over the pool
    Int8Net* net
    const float* X                   # (N, D), rows x_row floats apart
    Py_ssize_t x_row, n, chunk, row_bytes
    int mode
    float* out_f                     # (N, C) or unused
    int64_t* out_i                   # (N,) or unused
    uint8_t* buf                     # (T, row_bytes): a slot's buffer
    Py_ssize_t* first_bad            # (T,)


cdef void _int8_chunk(void* args, int slot, Py_ssize_t c) noexcept nogil:
    """Rows of chunk c of an Int8Call with the buffer of ``slot`` (forward_pool.h's callback)."""
    cdef Int8Call* a = <Int8Call*>args
    cdef Py_ssize_t i0 = c * a.chunk, i1 = min(i0 + a.chunk, a.n), row
    row = _int8_thread(a.net, a.X, a.x_row, a.mode, a.out_f, a.out_i, a.buf + slot * a.row_bytes, i0, i1)
    if row >= 0 and (a.first_bad[slot] < 0 or row < a.first_bad[slot]):
        a.first_bad[slot] = row


cdef inline Py_ssize_t _line(Py_ssize_t nbytes) noexcept nogil:
    """nbytes rounded up to a whole 64-byte line."""
    return (nbytes + 63) // 64 * 64


cdef class Int8Runner:
    """A model's forward with layer 0 in int8, in compiled code (``fastnn.inference.int8``, which
    makes the arrays): its arrays, one work buffer per thread and their lock.

    ``Int8Runner(Wq, scale, D, weights, biases, act, n_threads, on_bad)``: Wq (G, H16, 4) int8 and
    scale (H16,) float32 (layer 0, the layout of forward_int8.h; G = ceil(D / 4), H16 = H0
    rounded up to 16), D the inputs; ``weights`` a tuple of the float32 (n_in, n_out) arrays of layers 1..
    (may be empty), ``biases`` a tuple of every layer's (n_out,) float32, all C-contiguous; ``act``
    an ``ACT_CODES`` value; ``on_bad(X, row, unit_range)`` raises the error for a bad row. Every
    size is checked here (TypeError, ValueError); the arrays are kept, so they cannot change shape.
    ``run(X, mode)``: X (N, D) float32 -> logits (mode 0) or probs (1) (N, C) float32, or labels
    (2) (N,) int64; a row with NaN or an input outside [0, 1] calls ``on_bad``. One call at a
    time uses the buffers: a second thread waits for the lock with the GIL released."""
    cdef Int8Net net
    cdef object arrays, buffer, on_bad, no_floats, no_labels
    cdef Py_ssize_t n_threads
    cdef PyThread_type_lock lock

    def __cinit__(self, *args, **kwargs):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError("Int8Runner: no lock")

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    def __init__(self, cnp.ndarray Wq not None, cnp.ndarray scale not None, Py_ssize_t D, tuple weights, tuple biases,
                 int act, int n_threads, on_bad):
        cdef Py_ssize_t L = len(weights) + 1, l, G, H16, S = 0, d_max = 16
        if not 0 <= act <= 2:
            raise ValueError("Int8Runner: act must be a code of fastnn.backends.fused_interface.ACT_CODES")
        if not callable(on_bad):
            raise TypeError("Int8Runner: on_bad must be callable")
        if L > FORWARD_MAX_LAYERS or len(biases) != L:
            raise ValueError(f"Int8Runner: 1 to {FORWARD_MAX_LAYERS} layers, a bias for each")
        if not _is_array(Wq, 3, cnp.NPY_INT8) or Wq.shape[2] != 4 or Wq.shape[1] % 16 or Wq.shape[0] < 1:
            raise ValueError("Int8Runner: Wq must be (G, H16, 4) int8, C-contiguous, H16 a multiple of 16")
        G, H16 = Wq.shape[0], Wq.shape[1]
        if not 4 * G - 3 <= D <= 4 * G:
            raise ValueError(f"Int8Runner: D = {D} inputs do not fill Wq's {G} groups of 4")
        if not _is_array(scale, 1, cnp.NPY_FLOAT) or scale.shape[0] != H16:
            raise ValueError(f"Int8Runner: scale must be ({H16},) float32")
        b0 = biases[0]
        if not _is_array(b0, 1, cnp.NPY_FLOAT) or not H16 - 16 < b0.shape[0] <= H16:
            raise ValueError(f"Int8Runner: biases[0] must be (H0,) float32 with H16 = {H16} = H0 rounded up to 16")
        self.net.n_layers = L
        self.net.sizes[0] = D
        self.net.sizes[1] = b0.shape[0]
        self.net.b_ptr[0] = cnp.PyArray_DATA(<cnp.ndarray>b0)
        for l in range(1, L):
            W, b = weights[l - 1], biases[l]
            if (not _is_array(W, 2, cnp.NPY_FLOAT) or not _is_array(b, 1, cnp.NPY_FLOAT)
                    or W.shape[0] != self.net.sizes[l] or b.shape[0] != W.shape[1]):
                raise ValueError(f"Int8Runner: weights[{l - 1}] must be ({self.net.sizes[l]}, n_out) float32 and "
                                 f"biases[{l}] (n_out,), C-contiguous")
            self.net.W_ptr[l] = cnp.PyArray_DATA(<cnp.ndarray>W)
            self.net.b_ptr[l] = cnp.PyArray_DATA(<cnp.ndarray>b)
            self.net.sizes[l + 1] = W.shape[1]
            d_max = max(d_max, self.net.sizes[l])
        for l in range(1, L + 1):
            S += self.net.sizes[l]
        self.net.Wq = <const int8_t*>cnp.PyArray_DATA(Wq)
        self.net.scale = <const float*>cnp.PyArray_DATA(scale)
        self.net.G, self.net.H16, self.net.S, self.net.d_max, self.net.act = G, H16, S, d_max, act
        self.net.every = max(1, L1_BLOCK_BYTES // (16 * H16 * 4))          # 16-group chunks of Wq per block
        self.net.n_bounds = ((G + 15) // 16 + self.net.every - 1) // self.net.every + 1
        R = FORWARD_BLOCK_ROWS
        self.net.xq_row = _line(4 * G)
        self.net.groups_row = _line(4 * (G + 16)) // 4
        self.net.off_hidden = 0
        self.net.off_value = _line(4 * (S + 16))
        self.net.off_index = self.net.off_value + _line(4 * d_max)
        self.net.off_acc = self.net.off_index + _line(4 * d_max)
        self.net.off_xq = self.net.off_acc + _line(4 * R * H16)
        self.net.off_groups = self.net.off_xq + R * self.net.xq_row
        self.net.off_bounds = self.net.off_groups + 4 * R * self.net.groups_row
        self.net.row_bytes = self.net.off_bounds + _line(4 * R * self.net.n_bounds)
        self.n_threads = max(1, min(n_threads, FORWARD_MAX_THREADS))
        from fastnn.backends.memory import aligned_zeros
        self.buffer = aligned_zeros((self.n_threads, self.net.row_bytes), np.uint8)
        self.arrays = (Wq, scale, weights, biases)                         # kept: their data pointers are in net
        self.on_bad = on_bad
        self.no_floats = np.zeros((0, self.net.sizes[L]), dtype=np.float32)
        self.no_labels = np.zeros(0, dtype=np.int64)

    @property
    def num_groups(self):
        """G: layer 0's groups of 4 inputs (4 G - 3 <= D <= 4 G)."""
        return self.net.G

    def run(self, cnp.ndarray X not None, int mode):
        """Logits (mode 0) or probs (1) (N, C) float32, or labels (2) (N,) int64, of X (N, D) float32
        in native byte order (rows contiguous, else copied). Raises ValueError for another X,
        and what ``on_bad`` raises for a row with NaN or an input outside [0, 1]."""
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray out_f, out_i
        cdef Py_ssize_t bad = -1, n, x_row, t
        cdef Int8Call call
        cdef int n_threads = <int>self.n_threads
        cdef Py_ssize_t first_bad[FORWARD_MAX_THREADS]
        if not 0 <= mode <= 2:
            raise ValueError("Int8Runner: mode must be 0 (logits), 1 (probs) or 2 (labels)")
        if (cnp.PyArray_TYPE(X) != cnp.NPY_FLOAT or cnp.PyArray_NDIM(X) != 2 or not cnp.PyArray_ISNOTSWAPPED(X)
                or cnp.PyArray_DIM(X, 1) != self.net.sizes[0]):
            raise ValueError(f"Int8Runner: X must be (N, {self.net.sizes[0]}) float32 in native byte order")
        if cnp.PyArray_STRIDES(X)[1] != 4 or cnp.PyArray_STRIDES(X)[0] % 4:
            X = np.ascontiguousarray(X)
        n = cnp.PyArray_DIM(X, 0)
        x_row = cnp.PyArray_STRIDES(X)[0] // 4
        dims[0] = n
        dims[1] = self.net.sizes[self.net.n_layers]
        if mode == 2:
            out_f, out_i = self.no_floats, cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        else:
            out_f, out_i = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT, 0), self.no_labels
        cdef const float* xp = <const float*>cnp.PyArray_DATA(X)
        cdef float* ofp = <float*>cnp.PyArray_DATA(out_f)
        cdef int64_t* oip = <int64_t*>cnp.PyArray_DATA(out_i)
        cdef uint8_t* buf = <uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>self.buffer)
        cdef Py_ssize_t row_bytes = self.net.row_bytes
        cdef Int8Net* net = &self.net
        _take(self.lock)
        try:
            if n < FORWARD_PARALLEL_ROWS:                # the calling thread, with the GIL (batch 1)
                bad = _int8_thread(net, xp, x_row, mode, ofp, oip, buf, 0, n)
            elif n_threads < 2:
                with nogil:
                    bad = _int8_thread(net, xp, x_row, mode, ofp, oip, buf, 0, n)
            else:                                        # chunks to whichever thread is ready (forward_pool.h)
                call.net, call.X, call.x_row, call.mode, call.out_f, call.out_i = net, xp, x_row, mode, ofp, oip
                call.buf, call.row_bytes, call.n, call.chunk = buf, row_bytes, n, _chunk_rows(n, n_threads)
                call.first_bad = first_bad
                for t in range(n_threads):
                    first_bad[t] = -1
                with nogil:
                    fastnn_pool_run(n_threads, _int8_chunk, &call, (n + call.chunk - 1) // call.chunk)
                bad = _first_bad(first_bad, n_threads)
        finally:
            PyThread_release_lock(self.lock)
        if bad >= 0:
            self.on_bad(X, bad, True)
            raise RuntimeError("Int8Runner: on_bad returned instead of raising")
        return out_i if mode == 2 else out_f

    def labels(self, cnp.ndarray X not None):
        """Labels (N,) int64 of X (N, D) float32: ``run(X, 2)``."""
        return self.run(X, 2)
