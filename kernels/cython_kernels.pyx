# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The ``cython`` backend's compiled kernels (built into ``fastnn.backends._cython_kernels``).

One fused-type source for float32 and float64 (``floating``). Each kernel is a ``nogil`` core
with a one-line maths docstring; the Python wrapper ``fastnn/backends/cython_backend.py``
checks shapes, dtypes and labels before calling, because with boundscheck(False) nothing
here does. Built by setup.py with -O3 and, where the compiler has it, -fopenmp: ``prange``
then runs on OpenMP threads (``openmp_threads()`` reports how many; 1 means a serial build).
No BLAS in the kernel interface: matmul is a hand-written loop nest. The fused training
path calls BLAS gemm for its dense layers (see there).
"""
from cython.parallel cimport prange, parallel, threadid
from libc.math cimport exp, log, sqrt, tanh
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import numpy as np


cdef inline long long _now() noexcept nogil:
    """Monotonic clock in nanoseconds (the phase timers' and fma_peak's unit)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000LL + ts.tv_nsec

# matmul works on blocks of MR rows of ``out``: each row of ``b`` is loaded once and used
# for MR rows (MR FMAs per load), the MR output rows (MR * n floats) stay in L1 cache, and
# the contiguous loop over columns is vectorized by the C compiler (-O3 -march=native).
cdef enum:
    MR = 4


cdef extern from "fma_peak.h" nogil:
    int fastnn_fma_lanes()
    int fastnn_fma_chains()
    float fastnn_fma_loop(long iterations, float a, float b)


def fma_peak(long iterations=20_000_000, int threads=1):
    """The FMA loop of kernels/fma_peak.h on ``threads`` OpenMP threads at once: returns
    (seconds, FLOPs done, vector lanes). GFLOP/s = FLOPs / seconds / 1e9."""
    cdef int t, n_threads = threads if threads > 1 else 1
    cdef double start, stop
    cdef float[::1] sink = np.zeros(n_threads, dtype=np.float32)
    cdef long long flops = <long long>iterations * fastnn_fma_chains() * fastnn_fma_lanes() * 2 * n_threads
    start = _now()
    with nogil:
        for t in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
            sink[t] = fastnn_fma_loop(iterations, 0.99999994, 1e-7)
    stop = _now()
    return (stop - start) * 1e-9, flops, fastnn_fma_lanes()


def openmp_threads(int n=64):
    """Number of distinct OpenMP threads that ran a ``prange`` of n iterations (1: serial build)."""
    cdef int i
    cdef int[::1] seen = np.zeros(n, dtype=np.intc)
    for i in prange(n, nogil=True, schedule="static", chunksize=1):
        seen[i] = threadid()
    return int(np.unique(np.asarray(seen)).size)


# ---------------------------------------------------------------- matmul
cdef void _matmul_block(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
                        Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """out[i0:i1] = a[i0:i1] @ b, i1 - i0 <= MR: out[i] = sum_p a[i, p] * b[p], MR rows per pass over b."""
    cdef Py_ssize_t k = a.shape[1], n = b.shape[1], i, j, p
    cdef floating a0, a1, a2, a3, bj
    cdef floating* o0
    cdef floating* o1
    cdef floating* o2
    cdef floating* o3
    cdef const floating* b_row
    for i in range(i0, i1):
        for j in range(n):
            out[i, j] = 0
    if i1 - i0 == MR:
        o0 = &out[i0, 0]
        o1 = &out[i0 + 1, 0]
        o2 = &out[i0 + 2, 0]
        o3 = &out[i0 + 3, 0]
        for p in range(k):
            a0 = a[i0, p]
            a1 = a[i0 + 1, p]
            a2 = a[i0 + 2, p]
            a3 = a[i0 + 3, p]
            if a0 == 0 and a1 == 0 and a2 == 0 and a3 == 0:    # zero pixels add nothing
                continue
            b_row = &b[p, 0]
            for j in range(n):
                bj = b_row[j]
                o0[j] += a0 * bj
                o1[j] += a1 * bj
                o2[j] += a2 * bj
                o3[j] += a3 * bj
        return
    for i in range(i0, i1):                    # a short last block: one row at a time
        o0 = &out[i, 0]
        for p in range(k):
            a0 = a[i, p]
            if a0 == 0:
                continue
            b_row = &b[p, 0]
            for j in range(n):
                o0[j] += a0 * b_row[j]


cdef extern from "dot_tile.h" nogil:
    void dot_tile_2x4_float(const float* a0, const float* a1, const float* b0, const float* b1,
                            const float* b2, const float* b3, Py_ssize_t k, float* c)
    void dot_tile_2x4_double(const double* a0, const double* a1, const double* b0, const double* b1,
                             const double* b2, const double* b3, Py_ssize_t k, double* c)


cdef void _matmul_dot_block(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
                            Py_ssize_t j0, Py_ssize_t w, floating* bt) noexcept nogil:
    """out[:, j0:j0+w] = a @ b[:, j0:j0+w] = a @ bt.T, after packing bt[jj, p] = b[p, j0 + jj].

    Tiles of 2 rows x 4 columns are 8 dot products held in registers (dot_tile.h); a short
    last group of columns repeats its last column, a last odd row repeats itself (stored once)."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], i, jj, p, t
    cdef floating c[8]
    cdef const floating* a1
    for p in range(k):
        for jj in range(w):
            bt[jj * k + p] = b[p, j0 + jj]
    for i in range(0, m, 2):
        a1 = &a[i + 1, 0] if i + 1 < m else &a[i, 0]
        for jj in range(0, w, 4):
            if floating is float:
                dot_tile_2x4_float(&a[i, 0], a1, bt + jj * k, bt + min(jj + 1, w - 1) * k,
                                   bt + min(jj + 2, w - 1) * k, bt + min(jj + 3, w - 1) * k, k, c)
            else:
                dot_tile_2x4_double(&a[i, 0], a1, bt + jj * k, bt + min(jj + 1, w - 1) * k,
                                    bt + min(jj + 2, w - 1) * k, bt + min(jj + 3, w - 1) * k, k, c)
            for t in range(min(4, w - jj)):
                out[i, j0 + jj + t] = c[t]
                if i + 1 < m:
                    out[i + 1, j0 + jj + t] = c[4 + t]


def matmul_dot(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out):
    """out (m, n) = a (m, k) @ b (k, n) by register-tiled dot products; column blocks of 16 in
    parallel, each packing its (16, k) block of b^T first (as BLAS packs its panels)."""
    cdef Py_ssize_t n = b.shape[1], k = a.shape[1], blk, n_blocks = (b.shape[1] + 15) // 16
    cdef floating* packed
    cdef bint failed = False
    with nogil:
        for blk in prange(n_blocks, schedule="static"):
            packed = <floating*>malloc(16 * k * sizeof(floating))
            if packed == NULL:
                failed = True
            else:
                _matmul_dot_block(a, b, out, blk * 16, min(16, n - blk * 16), packed)
                free(packed)
    if failed:
        raise MemoryError("matmul_dot: could not allocate a packing buffer")


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out):
    """out (m, n) = a (m, k) @ b (k, n); blocks of MR rows split across OpenMP threads."""
    cdef Py_ssize_t m = a.shape[0], blk, n_blocks = (a.shape[0] + MR - 1) // MR
    with nogil:
        for blk in prange(n_blocks, schedule="static"):
            _matmul_block(a, b, out, blk * MR, min(m, (blk + 1) * MR))


# ---------------------------------------------------------------- elementwise (flat arrays)
def relu(const floating[::1] z, floating[::1] out):
    """out = max(z, 0)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(z.shape[0]):
            out[i] = z[i] if z[i] > 0 else 0


def relu_backward(const floating[::1] grad_out, const floating[::1] z, floating[::1] out):
    """out = grad_out * [z > 0]."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(z.shape[0]):
            out[i] = grad_out[i] if z[i] > 0 else 0


cdef inline double _sigmoid(double x) noexcept nogil:
    """1 / (1 + exp(-x)) without overflow for either sign of x."""
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


def sigmoid(const floating[::1] z, floating[::1] out):
    """out = 1 / (1 + exp(-z)), in double, rounded once."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(z.shape[0]):
            out[i] = <floating>_sigmoid(z[i])


def sigmoid_backward(const floating[::1] grad_out, const floating[::1] a, floating[::1] out):
    """out = grad_out * a * (1 - a), a = sigmoid(z)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(a.shape[0]):
            out[i] = grad_out[i] * a[i] * (1 - a[i])


def tanh_forward(const floating[::1] z, floating[::1] out):
    """out = tanh(z)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(z.shape[0]):
            out[i] = <floating>tanh(z[i])


def tanh_backward(const floating[::1] grad_out, const floating[::1] a, floating[::1] out):
    """out = grad_out * (1 - a^2), a = tanh(z)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(a.shape[0]):
            out[i] = grad_out[i] * (1 - a[i] * a[i])


# ---------------------------------------------------------------- softmax cross-entropy
cdef inline double _softmax_row(const floating* z, Py_ssize_t c, floating* probs, double* row_max) noexcept nogil:
    """probs (c,) = softmax(z) with the row maximum subtracted, exp and sum in double; returns the
    sum of exp(z - max) and sets row_max (for the log-sum-exp)."""
    cdef Py_ssize_t j
    cdef double mx = z[0], s = 0, e
    for j in range(1, c):
        if z[j] > mx:
            mx = z[j]
    for j in range(c):
        e = exp(z[j] - mx)
        probs[j] = <floating>e
        s += e
    for j in range(c):
        probs[j] = <floating>(probs[j] / s)
    row_max[0] = mx
    return s


def softmax_xent(const floating[:, ::1] logits, const int64_t[::1] labels, floating[:, ::1] probs):
    """probs = softmax(logits) per row (max subtracted); returns sum_i -log probs[i, labels[i]] (double).

    ``labels`` may be empty (softmax only)."""
    cdef Py_ssize_t n = logits.shape[0], c = logits.shape[1], i
    cdef double total = 0, mx, s
    cdef bint with_labels = labels.shape[0] > 0
    with nogil:
        for i in range(n):
            s = _softmax_row(&logits[i, 0], c, &probs[i, 0], &mx)
            if with_labels:
                total += log(s) - (logits[i, labels[i]] - mx)
    return total


def softmax_xent_backward(const floating[:, ::1] probs, const int64_t[::1] labels, floating[:, ::1] out):
    """out = (probs - one_hot(labels)) / N."""
    cdef Py_ssize_t n = probs.shape[0], c = probs.shape[1], i, j
    cdef floating inv_n = 1.0 / n
    with nogil:
        for i in range(n):
            for j in range(c):
                out[i, j] = probs[i, j] * inv_n
            out[i, labels[i]] -= inv_n


# ---------------------------------------------------------------- sparse rows (both fused paths)
# z = z_in + sum_q x_q W[idx[q]] with the partial sums in vector registers: kernels/sparse_row.h.
cdef extern from "sparse_row.h" nogil:
    Py_ssize_t gather_nonzeros_float(const float* a, Py_ssize_t stride, Py_ssize_t n, int32_t* idx, float* val)
    Py_ssize_t gather_nonzeros_double(const double* a, Py_ssize_t stride, Py_ssize_t n, int32_t* idx, double* val)
    Py_ssize_t relu_gather_float(float* z, Py_ssize_t n, int32_t* idx, float* val)
    Py_ssize_t relu_gather_double(double* z, Py_ssize_t n, int32_t* idx, double* val)
    void sparse_row_float(const float* W, Py_ssize_t n_out, const int32_t* idx, const float* val,
                          Py_ssize_t m, float scale, const float* z_in, float* z)
    void sparse_row_double(const double* W, Py_ssize_t n_out, const int32_t* idx, const double* val,
                           Py_ssize_t m, double scale, const double* z_in, double* z)
    void sparse_pixels_float(const float* W, Py_ssize_t n_out, const uint16_t* idx, const uint8_t* val,
                             Py_ssize_t m, float scale, const float* z_in, float* z)
    void sparse_pixels_double(const double* W, Py_ssize_t n_out, const uint16_t* idx, const uint8_t* val,
                              Py_ssize_t m, double scale, const double* z_in, double* z)

cdef inline Py_ssize_t _gather(const floating* a, Py_ssize_t stride, Py_ssize_t n, int32_t* idx,
                               floating* val) noexcept nogil:
    if floating is float:
        return gather_nonzeros_float(a, stride, n, idx, val)
    else:
        return gather_nonzeros_double(a, stride, n, idx, val)


cdef inline void _sparse_row(const floating* W, Py_ssize_t n_out, const int32_t* idx, const floating* val,
                             Py_ssize_t m, const floating* z_in, floating* z) noexcept nogil:
    if floating is float:
        sparse_row_float(W, n_out, idx, val, m, 1, z_in, z)
    else:
        sparse_row_double(W, n_out, idx, val, m, 1, z_in, z)


cdef inline void _sparse_pixels(const floating* W, Py_ssize_t n_out, const uint16_t* idx, const uint8_t* pixels,
                                Py_ssize_t m, floating scale, floating* z) noexcept nogil:
    """z += sum_q (pixels[q] * scale) W[idx[q]] (kernels/sparse_row.h)."""
    if floating is float:
        sparse_pixels_float(W, n_out, idx, pixels, m, scale, z, z)
    else:
        sparse_pixels_double(W, n_out, idx, pixels, m, scale, z, z)


# ---------------------------------------------------------------- the fused training path
# The same algorithm, arguments and local names as fastnn/backends/numba_fused.py (documented
# in fastnn.fused): per step two parallel regions over T threads. Region 1, by parameters:
# thread t finishes the previous step for the parameters it owns (W0 rows row_bounds[t]..,
# columns col_bounds[l, t].. of the biases and dense W_l: weight gradient fused with the
# optimizer update) and runs this step's layer 0 over its pixels (its share of z0 and the
# CSC index of its pixels). Region 2, by samples: z0 = b0 + the shares, the dense layers,
# softmax cross-entropy and backward to dL/dz of layer 0. The dense products call BLAS
# (scipy.linalg.cython_blas, single-threaded: the caller limits BLAS threads) through the
# row-major ``_gemm`` below. Timers: ``clock_gettime`` nanoseconds into ``prof`` when it has rows.

cdef extern from *:
    void __builtin_prefetch(const void* address, int rw, int locality) nogil


def read_cycles():
    """The phase timers' clock (nanoseconds; ``cycles_per_second()`` is 1e9)."""
    return _now()


cdef inline void _gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha, const floating* a,
                       int lda, const floating* b, int ldb, floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C (m, n) = alpha op(A) @ op(B) + beta C, op(X) = X^T when trans_x; lda/ldb/ldc are
    row strides. BLAS is column-major, so it computes C^T = op(B)^T op(A)^T with the operands swapped."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline void _activate(floating* z, floating* out, Py_ssize_t count, int act) noexcept nogil:
    """out = act(z): relu (0), sigmoid (1, in double, stable), tanh (2)."""
    cdef Py_ssize_t j
    if act == 0:
        for j in range(count):
            out[j] = z[j] if z[j] > 0 else 0
    elif act == 1:
        for j in range(count):
            out[j] = <floating>_sigmoid(z[j])
    else:
        for j in range(count):
            out[j] = <floating>tanh(z[j])


cdef inline void _activate_backward(floating* d, const floating* out, Py_ssize_t count, int act) noexcept nogil:
    """d *= act'(z), from the activation's output ``out``."""
    cdef Py_ssize_t j
    if act == 0:
        for j in range(count):
            d[j] = d[j] if out[j] > 0 else 0
    elif act == 1:
        for j in range(count):
            d[j] = d[j] * (out[j] * (1 - out[j]))
    else:
        for j in range(count):
            d[j] = d[j] * (1 - out[j] * out[j])


cdef inline void _update(floating* p, const floating* g, floating* s1, floating* s2, Py_ssize_t count,
                         floating wd, int opt, floating lr, floating mu, floating beta1, floating beta2,
                         floating eps, floating step_size, floating v_corr) noexcept nogil:
    """One optimizer update of ``count`` parameters p from gradient g, as ``fastnn.optim``: with
    g' = g + wd p, sgd: p -= lr g'; momentum: s1 = mu s1 + g', p -= lr s1; adam: s1 = b1 s1 +
    (1-b1) g', s2 = b2 s2 + (1-b2) g'^2, p -= step_size s1 / (sqrt(s2 / v_corr) + eps)."""
    cdef Py_ssize_t k
    cdef floating v, m, gk
    if opt == 0:
        for k in range(count):
            p[k] -= lr * (g[k] + wd * p[k])
    elif opt == 1:
        for k in range(count):
            v = mu * s1[k] + (g[k] + wd * p[k])
            s1[k] = v
            p[k] -= lr * v
    else:
        for k in range(count):
            gk = g[k] + wd * p[k]
            m = beta1 * s1[k] + (1 - beta1) * gk
            v = beta2 * s2[k] + (1 - beta2) * (gk * gk)
            s1[k] = m
            s2[k] = v
            p[k] -= step_size * m / (<floating>sqrt(v / v_corr) + eps)


cdef inline Py_ssize_t _lower_bound(const uint16_t* indices, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t key) noexcept nogil:
    """First q in [lo, hi) with indices[q] >= key (indices sorted), else hi."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _prefetch_row(const int64_t* indptr, const uint16_t* indices, const uint8_t* pixels,
                               int64_t row) noexcept nogil:
    """Prefetch CSR row ``row``'s indices and pixels, a 64-byte line at a time."""
    cdef int64_t q
    for q in range(indptr[row], indptr[row + 1], 32):
        __builtin_prefetch(&indices[q], 0, 3)
    for q in range(indptr[row], indptr[row + 1], 64):
        __builtin_prefetch(&pixels[q], 0, 3)


cdef void _layer0_forward(const int64_t* indptr, const uint16_t* indices, const uint8_t* pixels,
                          const int64_t* batch, Py_ssize_t nb, const floating* W0, Py_ssize_t H0,
                          Py_ssize_t r0, Py_ssize_t r1, floating* Z, int32_t* ptr, int32_t* sample,
                          floating* value) noexcept nogil:
    """Z (nb, H0): Z[i] = sum_q x_q W0[q] over sample i's non-zero pixels q in [r0, r1) (x = pixel
    / 255): thread t's share of z0 = x W0. Also the CSC index of those entries: for pixel p in
    [r0, r1), entries ptr[p]:ptr[p+1] of (sample, value) are the batch rows where p is non-zero."""
    cdef Py_ssize_t i, j, p, q, q_end, e
    cdef int64_t row
    cdef floating inv255 = <floating>(1.0 / 255.0)
    cdef floating* z
    for p in range(r0, r1 + 1):
        ptr[p] = 0
    if nb > 0:
        _prefetch_row(indptr, indices, pixels, batch[0])
    for i in range(nb):
        z = Z + i * H0
        for j in range(H0):
            z[j] = 0
        row = batch[i]
        if i + 1 < nb:                              # the next sample's row comes from memory meanwhile
            _prefetch_row(indptr, indices, pixels, batch[i + 1])
        q = _lower_bound(indices, indptr[row], indptr[row + 1], r0)
        q_end = _lower_bound(indices, q, indptr[row + 1], r1)
        _sparse_pixels(W0, H0, indices + q, pixels + q, q_end - q, inv255, z)    # sums in registers
        for q in range(q, q_end):
            ptr[indices[q] + 1] += 1
    # the CSC index: counts -> starts, fill (ptr[p] walks to the end of p), shift back to starts
    ptr[r0] = 0
    for p in range(r0, r1):
        ptr[p + 1] += ptr[p]
    for i in range(nb):
        row = batch[i]
        q = _lower_bound(indices, indptr[row], indptr[row + 1], r0)
        q_end = _lower_bound(indices, q, indptr[row + 1], r1)
        for q in range(q, q_end):
            e = ptr[indices[q]]
            sample[e] = <int32_t>i
            value[e] = <floating>pixels[q] * inv255
            ptr[indices[q]] = <int32_t>(e + 1)
    for p in range(r1, r0, -1):
        ptr[p] = ptr[p - 1]
    ptr[r0] = 0


cdef void _layer0_grad_update(const int32_t* ptr, const int32_t* sample, const floating* value,
                              const floating* G0, floating* W0, floating* S1, floating* S2, Py_ssize_t H0,
                              Py_ssize_t r0, Py_ssize_t r1, floating* acc, floating wd, int opt, floating lr,
                              floating mu, floating beta1, floating beta2, floating eps, floating step_size,
                              floating v_corr) noexcept nogil:
    """For every row p in [r0, r1) of W0 (D, H0): grad W0[p] = sum_e value[e] G0[sample[e]] over the
    CSC entries of pixel p (the batch rows where it is non-zero), then that row's update."""
    cdef Py_ssize_t p, j
    cdef floating* g = acc
    for p in range(r0, r1):
        for j in range(H0):
            g[j] = 0
        _sparse_row(G0, H0, sample + ptr[p], value + ptr[p], ptr[p + 1] - ptr[p], g, g)   # sums in registers
        _update(W0 + p * H0, g, S1 + p * H0, S2 + p * H0, H0, wd, opt, lr, mu, beta1, beta2, eps,
                step_size, v_corr)


cdef void _dense_grad_update(const floating* A_in, const floating* G, floating* W, floating* S1, floating* S2,
                             Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t nb,
                             floating* scratch, floating wd, int opt, floating lr, floating mu, floating beta1,
                             floating beta2, floating eps, floating step_size, floating v_corr) noexcept nogil:
    """grad W[:, c0:c1] = A_in^T @ G[:, c0:c1] (BLAS, into scratch), then each row's update.
    A_in (nb, n_in), G (nb, n_out), W (n_in, n_out)."""
    cdef Py_ssize_t r, w = c1 - c0
    cdef floating* gW = scratch                    # (n_in, w)
    _gemm(True, False, <int>n_in, <int>w, <int>nb, 1, A_in, <int>n_in, G + c0, <int>n_out, 0, gW, <int>w)
    for r in range(n_in):
        _update(W + r * n_out + c0, gW + r * w, S1 + r * n_out + c0, S2 + r * n_out + c0, w, wd, opt, lr, mu,
                beta1, beta2, eps, step_size, v_corr)


cdef void _bias_grad_update(const floating* G, floating* b, floating* s1, floating* s2, Py_ssize_t n_out,
                            Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t nb, floating* acc, int opt, floating lr,
                            floating mu, floating beta1, floating beta2, floating eps, floating step_size,
                            floating v_corr) noexcept nogil:
    """grad b[c0:c1] = sum_i G[i, c0:c1], then its update (no weight decay on biases)."""
    cdef Py_ssize_t i, j
    for j in range(c1 - c0):
        acc[j] = 0
    for i in range(nb):
        for j in range(c1 - c0):
            acc[j] += G[i * n_out + c0 + j]
    _update(b + c0, acc, s1 + c0, s2 + c0, c1 - c0, 0, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)


cdef double _softmax_xent_rows(const floating* logits, Py_ssize_t m, Py_ssize_t c, const int64_t* labels,
                               const int64_t* batch, floating* G, floating inv_nb, floating smooth) noexcept nogil:
    """G[i] = (softmax(logits[i]) - t_i) / nb for m rows of c, with the smoothed target t_i = (1 - smooth)
    one_hot(y_i) + smooth / c; returns sum_i -sum_j t_ij log p_ij (the cross-entropy at smooth 0)."""
    cdef Py_ssize_t i, j
    cdef int64_t y
    cdef floating mx, tot, p
    cdef floating off = smooth / c                      # t_ij for j != y_i
    cdef floating on = (1 - smooth) + off               # t_ij for j == y_i
    cdef const floating* z
    cdef floating* g
    cdef double total = 0, shifted_sum
    for i in range(m):
        z = logits + i * c
        g = G + i * c
        mx = z[0]
        for j in range(1, c):
            if z[j] > mx:
                mx = z[j]
        tot = 0
        shifted_sum = 0
        for j in range(c):
            g[j] = <floating>exp(z[j] - mx)
            tot += g[j]
            shifted_sum += <double>(z[j] - mx)
        y = labels[batch[i]]
        # -sum_j t_j log p_j = log(tot) - (1 - smooth) (z_y - mx) - smooth / c sum_j (z_j - mx)
        total += log(<double>tot) - (1.0 - <double>smooth) * <double>(z[y] - mx)
        if smooth != 0:
            total -= <double>smooth / c * shifted_sum
        for j in range(c):
            p = g[j] / tot
            g[j] = (p - on) * inv_nb if j == y else (p - off) * inv_nb
    return total


cdef void _hidden_output(floating* A, floating* O, const floating* mask, Py_ssize_t m, Py_ssize_t n, int act,
                         bint dropout) noexcept nogil:
    """Hidden rows (m, n): O = act(A) and A = O * mask with dropout, else A = act(A) in place (O is A)."""
    cdef Py_ssize_t k
    _activate(A, O, m * n, act)
    if dropout:
        for k in range(m * n):
            A[k] = O[k] * mask[k]


cdef void _finish_step(Py_ssize_t t, Py_ssize_t nb, const int64_t[::1] sizes, const int64_t[::1] w_off,
                       const int64_t[::1] b_off, const int64_t[::1] act_off, const int64_t[::1] row_bounds,
                       const int64_t[:, ::1] col_bounds, floating* th, floating* st1, floating* st2,
                       const floating* ac, const floating* ga, int32_t* ptr, int32_t* sample, floating* value,
                       floating* acc, int opt, const floating[::1] hyper, floating step_size, floating v_corr,
                       long long* prof_t) noexcept nogil:
    """Region 1, first half: thread t's weight gradients of the step just run (nb rows), each
    fused with its update, for the parameters t owns: W0 rows row_bounds[t]:row_bounds[t+1]
    (through its CSC index), columns col_bounds[l, t]:col_bounds[l, t+1] of b_l and dense W_l."""
    cdef Py_ssize_t n_layers = sizes.shape[0] - 1, l, n_in, n_out, c0, c1
    cdef floating lr = hyper[0], mu = hyper[1], wd = hyper[2], beta1 = hyper[3], beta2 = hyper[4], eps = hyper[5]
    cdef floating* S1
    cdef floating* S2
    cdef const floating* G
    cdef long long tick = _now() if prof_t != NULL else 0, now
    for l in range(n_layers):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        c0 = col_bounds[l, t]
        c1 = col_bounds[l, t + 1]
        S1 = st1 + w_off[l] if opt > 0 else th + w_off[l]
        S2 = st2 + w_off[l] if opt == 2 else th + w_off[l]
        G = ga + act_off[l]                                                             # (nb, n_out)
        if l == 0:
            _layer0_grad_update(ptr, sample, value, G, th + w_off[0], S1, S2, n_out, row_bounds[t],
                                row_bounds[t + 1], acc, wd, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)
        elif c1 > c0:
            _dense_grad_update(ac + act_off[l - 1], G, th + w_off[l], S1, S2, n_in, n_out, c0, c1, nb, acc, wd,
                               opt, lr, mu, beta1, beta2, eps, step_size, v_corr)
        if c1 > c0:
            _bias_grad_update(G, th + b_off[l], st1 + b_off[l] if opt > 0 else th + b_off[l],
                              st2 + b_off[l] if opt == 2 else th + b_off[l], n_out, c0, c1, nb, acc, opt, lr, mu,
                              beta1, beta2, eps, step_size, v_corr)
        if prof_t != NULL:
            now = _now()
            prof_t[2 + 2 * n_layers + l] += now - tick
            tick = now


cdef double _thread_step(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t nb, const int64_t* labels,
                         const int64_t* batch, const int64_t[::1] sizes, const int64_t[::1] w_off,
                         const int64_t[::1] b_off, const int64_t[::1] act_off, const int64_t[::1] mask_off,
                         const floating* th, const floating* z0_parts, Py_ssize_t z0_stride, int n_threads,
                         floating* ac, floating* ou, floating* ga, int act, const floating* mask_s, bint dropout,
                         floating smooth, long long* prof_t) noexcept nogil:
    """Region 2: batch rows i0:i1 (sample ids batch[i]): z0 = b0 + the threads' shares of x W0,
    the dense layers forward (BLAS), softmax cross-entropy, backward down to dL/dz of layer 0
    (BLAS). Returns the rows' summed cross-entropy."""
    cdef Py_ssize_t n_layers = sizes.shape[0] - 1, m = i1 - i0, H0 = sizes[1], l, i, j, u, n_in, n_out, c
    cdef floating inv_nb = <floating>1.0 / nb
    cdef floating* A
    cdef floating* O
    cdef floating* G
    cdef floating* G_in
    cdef const floating* mask
    cdef const floating* Z_part
    cdef double loss
    cdef long long tick = _now() if prof_t != NULL else 0, now
    A = ac + act_off[0] + i0 * H0                                                       # (m, H0)
    for i in range(m):
        for j in range(H0):
            A[i * H0 + j] = th[b_off[0] + j]
    for u in range(n_threads):
        Z_part = z0_parts + u * z0_stride + i0 * H0                                     # (m, H0)
        for j in range(m * H0):
            A[j] += Z_part[j]
    if n_layers > 1:
        _hidden_output(A, ou + act_off[0] + i0 * H0, mask_s + nb * mask_off[0] + i0 * H0 if dropout else A,
                       m, H0, act, dropout)
    if prof_t != NULL:
        now = _now()
        prof_t[2] += now - tick
        tick = now
    for l in range(1, n_layers):                                    # forward, dense layers
        n_in = sizes[l]
        n_out = sizes[l + 1]
        A = ac + act_off[l] + i0 * n_out                                                # (m, n_out)
        for i in range(m):
            for j in range(n_out):
                A[i * n_out + j] = th[b_off[l] + j]
        _gemm(False, False, <int>m, <int>n_out, <int>n_in, 1, ac + act_off[l - 1] + i0 * n_in, <int>n_in,
              th + w_off[l], <int>n_out, 1, A, <int>n_out)                             # A += A_in @ W
        if l < n_layers - 1:
            _hidden_output(A, ou + act_off[l] + i0 * n_out, mask_s + nb * mask_off[l] + i0 * n_out if dropout else A,
                           m, n_out, act, dropout)
        if prof_t != NULL:
            now = _now()
            prof_t[2 + l] += now - tick
            tick = now
    c = sizes[n_layers]
    loss = _softmax_xent_rows(ac + act_off[n_layers - 1] + i0 * c, m, c, labels, batch + i0,
                              ga + act_off[n_layers - 1] + i0 * c, inv_nb, smooth)
    if prof_t != NULL:
        now = _now()
        prof_t[0] += now - tick
        tick = now
    for l in range(n_layers - 1, 0, -1):                            # backward, down to layer 0
        n_in = sizes[l]
        n_out = sizes[l + 1]
        G = ga + act_off[l] + i0 * n_out                                                # (m, n_out)
        G_in = ga + act_off[l - 1] + i0 * n_in                                          # (m, n_in)
        _gemm(False, True, <int>m, <int>n_in, <int>n_out, 1, G, <int>n_out, th + w_off[l], <int>n_out, 0, G_in,
              <int>n_in)                                                                # G_in = G @ W^T
        O = ou + act_off[l - 1] + i0 * n_in                                             # (m, n_in)
        if dropout:
            mask = mask_s + nb * mask_off[l - 1] + i0 * n_in
            for j in range(m * n_in):
                G_in[j] *= mask[j]
        _activate_backward(G_in, O, m * n_in, act)
        if prof_t != NULL:
            now = _now()
            prof_t[2 + n_layers + l] += now - tick
            tick = now
    return loss


def fused_steps(const int64_t[::1] indptr, const uint16_t[::1] indices, const uint8_t[::1] pixels,
                const int64_t[::1] labels, const int64_t[::1] order, Py_ssize_t first_step, Py_ssize_t n_steps,
                Py_ssize_t batch_size, const int64_t[::1] sizes, const int64_t[::1] w_off, const int64_t[::1] b_off,
                const int64_t[::1] act_off, const int64_t[::1] mask_off, const int64_t[::1] row_bounds,
                const int64_t[:, ::1] col_bounds, floating[::1] theta, floating[::1] state1, floating[::1] state2,
                floating[:, ::1] z0_parts, floating[::1] acts, floating[::1] outs, floating[::1] grads_act,
                int32_t[:, ::1] csc_ptr, int32_t[:, ::1] csc_sample, floating[:, ::1] csc_value,
                floating[:, ::1] scratch, int act, const floating[:, ::1] drop_mask, int opt,
                const floating[::1] hyper, Py_ssize_t t0, double[::1] losses, long long[:, ::1] prof):
    """SGD steps first_step .. first_step + n_steps - 1 of an epoch, in place; losses[s] = mean CE
    of step s. Arguments: ``fastnn.fused``; prof (T + 1, 2 + 3L) nanoseconds, or (0, 0).

    Each step is two parallel regions over the T threads: region 1 (``_finish_step`` of the
    previous step, then ``_layer0_forward`` of this one), region 2 (``_thread_step``)."""
    cdef Py_ssize_t n = order.shape[0], n_layers = sizes.shape[0] - 1
    cdef int n_threads = <int>(col_bounds.shape[1] - 1)
    cdef Py_ssize_t D = sizes[0], H0 = sizes[1], s, t, lo, nb, nb_prev, i0, i1
    if hyper.shape[0] < 8:
        raise ValueError("fused_steps: hyper must hold 8 values (fastnn.fused)")
    cdef floating lr = hyper[0], beta1 = hyper[3], beta2 = hyper[4], keep = hyper[6], smooth = hyper[7]
    cdef floating step_size = hyper[0], v_corr = 1
    cdef bint dropout = keep < 1, timing = prof.shape[0] > 0
    cdef double[::1] thread_loss = np.zeros(n_threads)
    cdef double total
    cdef long long t_region, tick
    cdef floating* th = &theta[0]
    cdef floating* ac = &acts[0]
    cdef floating* ou = &outs[0] if dropout else &acts[0]
    cdef long long* prof_t
    if (acts.shape[0] < act_off[n_layers - 1] + batch_size * sizes[n_layers] or z0_parts.shape[0] != n_threads
            or scratch.shape[0] != n_threads or (timing and prof.shape[0] != n_threads + 1)):
        raise ValueError("fused_steps: buffers too small for the batch size or thread count")
    with nogil:
        for s in range(n_steps + 1):
            # ---- region 1, by parameters: finish step s - 1, then step s's layer 0 over own W0 rows
            if opt == 2 and s > 0:                  # Adam's bias corrections for step t0 + s
                step_size = <floating>(<double>lr / (1.0 - (<double>beta1) ** (t0 + s)))
                v_corr = <floating>(1.0 - (<double>beta2) ** (t0 + s))
            t_region = _now() if timing else 0
            for t in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
                prof_t = &prof[t, 0] if timing else NULL
                if s > 0:
                    nb_prev = min((first_step + s) * batch_size, n) - (first_step + s - 1) * batch_size
                    _finish_step(t, nb_prev, sizes, w_off, b_off, act_off, row_bounds, col_bounds, th, &state1[0],
                                 &state2[0], ac, &grads_act[0], &csc_ptr[t, 0], &csc_sample[t, 0],
                                 &csc_value[t, 0], &scratch[t, 0], opt, hyper, step_size, v_corr, prof_t)
                if s < n_steps:
                    tick = _now() if timing else 0
                    lo = (first_step + s) * batch_size
                    nb = min(lo + batch_size, n) - lo
                    _layer0_forward(&indptr[0], &indices[0], &pixels[0], &order[lo], nb, th + w_off[0], H0,
                                    row_bounds[t], row_bounds[t + 1], &z0_parts[t, 0], &csc_ptr[t, 0],
                                    &csc_sample[t, 0], &csc_value[t, 0])
                    if timing:
                        prof_t[2] += _now() - tick
            if timing:
                prof[n_threads, 0] += _now() - t_region
            if s == n_steps:
                break
            # ---- region 2, by samples
            lo = (first_step + s) * batch_size
            nb = min(lo + batch_size, n) - lo
            t_region = _now() if timing else 0
            for t in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
                i0 = (nb * t) // n_threads
                i1 = (nb * (t + 1)) // n_threads
                thread_loss[t] = 0
                if i1 > i0:
                    thread_loss[t] = _thread_step(i0, i1, nb, &labels[0], &order[lo], sizes, w_off, b_off, act_off,
                                                  mask_off, th, &z0_parts[0, 0], z0_parts.shape[1], n_threads, ac,
                                                  ou, &grads_act[0], act,
                                                  &drop_mask[s if dropout else 0, 0], dropout, smooth,
                                                  &prof[t, 0] if timing else NULL)
            if timing:
                prof[n_threads, 1] += _now() - t_region
            total = 0
            for t in range(n_threads):
                total = total + thread_loss[t]
            losses[s] = total / nb



cdef enum:
    AUGMENT_PREFETCH_ROWS = 8      # rows ahead whose non-zeros are prefetched (random rows come from DRAM)


cdef Py_ssize_t _augment_rows(const int64_t* indptr, const uint16_t* indices, const uint8_t* pixels,
                              const int16_t* boxes, const int64_t* order, const int32_t* moves,
                              const uint16_t* col_of, Py_ssize_t height,
                              Py_ssize_t width, Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t k, int64_t* out_indptr,
                              uint16_t* out_indices, uint8_t* out_pixels) noexcept nogil:
    """Rows j0..j1-1 of ``augment_csr`` (order and moves start at the call's first row), their
    non-zeros written from position k on; sets out_indptr[j + 1] for those rows (in these
    positions) and returns the end position.

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


cdef Py_ssize_t _kept(const int64_t* indptr, const uint16_t* indices, const int16_t* boxes, int64_t i,
                     Py_ssize_t dx, Py_ssize_t dy, bint flip, const uint16_t* col_of, Py_ssize_t height,
                     Py_ssize_t width) noexcept nogil:
    """How many of image i's non-zeros stay on the canvas after the move (dx, dy, flip): all of
    them when its bounding box does (the usual case: no loop), else counted pixel by pixel."""
    cdef const int16_t* box = boxes + 4 * i
    cdef Py_ssize_t a = indptr[i], b = indptr[i + 1], q, col, n = 0
    cdef Py_ssize_t c0 = width - 1 - box[3] if flip else box[2], c1 = width - 1 - box[2] if flip else box[3]
    if box[0] + dy >= 0 and box[1] + dy < height and c0 + dx >= 0 and c1 + dx < width:
        return b - a
    for q in range(a, b):
        col = col_of[indices[q]]
        n += ((<size_t>(indices[q] - col + dy * width) < <size_t>(height * width))
              & (<size_t>((width - 1 - col if flip else col) + dx) < <size_t>width))
    return n


def augment_csr(const int64_t[::1] indptr, const uint16_t[::1] indices, const uint8_t[::1] pixels,
                const int16_t[:, ::1] boxes, const int64_t[::1] order, Py_ssize_t lo, const int32_t[:, ::1] moves,
                const uint16_t[::1] col_of, Py_ssize_t height, Py_ssize_t width, int n_threads,
                int64_t[::1] out_indptr, uint16_t[::1] out_indices, uint8_t[::1] out_pixels):
    """Rows order[lo + j] of a CSR image set, each moved by moves[j] = (dx, dy, flip), into a
    batch-ordered CSR (row j); returns the non-zeros written. Arguments: ``fastnn.augment``.

    Pixel p (row r, column c) goes to (r + dy) * W + c' + dx, c' = c or W - 1 - c (flipped),
    dropped where the column or the row leaves the canvas. Indices stay ascending within a row:
    a flipped image row is walked backwards. Integer index arithmetic only, no division.
    Two passes over the threads' shares of rows (j0 = k t / T .. j1): how many non-zeros each
    share keeps (``_kept``: the bounding box answers for most images), then thread t moves its
    rows into the out arrays from where its share starts."""
    cdef Py_ssize_t n_rows = moves.shape[0], j
    cdef int t
    if (moves.shape[1] != 3 or out_indptr.shape[0] < n_rows + 1 or col_of.shape[0] < height * width
            or order.shape[0] < lo + n_rows or n_threads < 1 or boxes.shape[0] != indptr.shape[0] - 1
            or boxes.shape[1] != 4):
        raise ValueError("augment_csr: moves must be (k, 3), out_indptr (k + 1,), col_of (H * W,), boxes (n, 4), "
                         "n_threads >= 1")
    out_indptr[0] = 0
    if n_rows == 0:
        return 0
    cdef int64_t[::1] starts = np.zeros(n_threads + 1, dtype=np.int64)   # (T+1,) where share t is written
    cdef int64_t[::1] rows = np.zeros(n_threads + 1, dtype=np.int64)     # (T+1,) share t = rows rows[t]:rows[t+1]
    cdef int64_t[::1] totals = np.zeros(n_threads, dtype=np.int64)       # (T,) non-zeros share t keeps
    with nogil:
        for t in range(n_threads + 1):
            rows[t] = (n_rows * t) // n_threads
        for t in prange(n_threads, num_threads=n_threads, schedule="static"):
            for j in range(rows[t], rows[t + 1]):
                totals[t] += _kept(&indptr[0], &indices[0], &boxes[0, 0], order[lo + j], moves[j, 0], moves[j, 1],
                                   moves[j, 2] != 0, &col_of[0], height, width)
        for t in range(n_threads):
            starts[t + 1] = starts[t] + totals[t]
    if starts[n_threads] > out_indices.shape[0] or starts[n_threads] > out_pixels.shape[0]:
        raise ValueError("augment_csr: out_indices/out_pixels have no room for the rows' non-zeros")
    with nogil:
        for t in prange(n_threads, num_threads=n_threads, schedule="static"):
            _augment_rows(&indptr[0], &indices[0], &pixels[0], &boxes[0, 0], &order[lo], &moves[0, 0],
                          &col_of[0], height, width, rows[t], rows[t + 1], starts[t], &out_indptr[0],
                          &out_indices[0], &out_pixels[0])
    return starts[n_threads]

# ---------------------------------------------------------------- the fused forward pass
# The same arguments and results as fastnn/backends/numba_forward.py (documented in
# fastnn.inference): every layer of X in one call. Each layer's input row is gathered into its
# non-zeros, then z = b + the matching rows of W (kernels/sparse_row.h: sums held in registers,
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
    FORWARD_BLOCK_ROWS = 32        # rows that go through W0 together (fastnn.inference.FORWARD_BLOCK_ROWS)
    FORWARD_BLOCK_BYTES = 16384    # W0's rows per pixel block: half of a 32 KB L1


cdef inline Py_ssize_t _activate_gather(floating* z, Py_ssize_t n, int act, int32_t* nz_index,
                                        floating* nz_value) noexcept nogil:
    """z = act(z) in place and its non-zeros into (nz_index, nz_value); returns their count. ReLU
    in the same pass, branch-free (half its outputs are zeros; kernels/sparse_row.h), the others
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


def fused_forward(tuple weights, tuple biases, cnp.ndarray X, int act, int mode, bint unit_range,
                  cnp.ndarray out_f, cnp.ndarray out_i, cnp.ndarray work_f, cnp.ndarray work_i):
    """Every layer of X (N, D) in one call: logits (mode 0) or probs (1) into out_f (N, C), labels
    (2) into out_i (N,) int64. weights/biases: tuples of C-contiguous arrays of X's dtype (float32
    or float64); work_f (T, (S + Dmax) (R + 1)), work_i (T, Dmax (R + 1)) int32 with R =
    FORWARD_BLOCK_ROWS (smaller buffers: row by row only; ``fastnn.inference.ForwardPlan`` sizes
    them and checks everything else; only the layer count and X's strides are checked here).
    Returns -1, or the first row of X with an input outside [0, 1] (``unit_range``: a model of
    pixels) or not finite (any model): the outputs are then incomplete and the caller raises."""
    cdef Py_ssize_t n_layers = len(weights), l, t, i0, i1, bad = -1
    cdef Py_ssize_t first_bad[FORWARD_MAX_THREADS]
    cdef const void* W_ptr[FORWARD_MAX_LAYERS]
    cdef const void* b_ptr[FORWARD_MAX_LAYERS]
    cdef Py_ssize_t sizes[FORWARD_MAX_LAYERS + 1]
    if n_layers < 1 or n_layers > FORWARD_MAX_LAYERS or len(biases) != n_layers:
        raise ValueError(f"fused_forward: 1 to {FORWARD_MAX_LAYERS} layers, got {n_layers}")
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(X)
    if cnp.PyArray_STRIDES(X)[0] % itemsize or cnp.PyArray_STRIDES(X)[1] % itemsize:
        X = np.ascontiguousarray(X)                                       # strides not in whole elements
    for l in range(n_layers):
        W_ptr[l] = cnp.PyArray_DATA(<cnp.ndarray>weights[l])
        b_ptr[l] = cnp.PyArray_DATA(<cnp.ndarray>biases[l])
        sizes[l + 1] = cnp.PyArray_DIM(<cnp.ndarray>weights[l], 1)
    sizes[0] = cnp.PyArray_DIM(<cnp.ndarray>weights[0], 0)
    cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0)
    cdef Py_ssize_t x_row = cnp.PyArray_STRIDES(X)[0] // itemsize, x_col = cnp.PyArray_STRIDES(X)[1] // itemsize
    cdef int n_threads = <int>cnp.PyArray_DIM(work_f, 0)
    cdef Py_ssize_t wf_row = cnp.PyArray_DIM(work_f, 1), wi_row = cnp.PyArray_DIM(work_i, 1)
    cdef Py_ssize_t n_hidden_total = 0, d_max = 0                      # S = sum(sizes[1:]), max(sizes[:-1])
    for l in range(1, n_layers + 1):
        n_hidden_total += sizes[l]
    for l in range(n_layers):
        d_max = max(d_max, sizes[l])
    cdef bint is_double = cnp.PyArray_TYPE(X) == cnp.NPY_DOUBLE
    cdef void* xp = cnp.PyArray_DATA(X)
    cdef void* ofp = cnp.PyArray_DATA(out_f)
    cdef int64_t* oip = <int64_t*>cnp.PyArray_DATA(out_i)
    cdef void* wfp = cnp.PyArray_DATA(work_f)
    cdef int32_t* wip = <int32_t*>cnp.PyArray_DATA(work_i)
    if n < FORWARD_PARALLEL_ROWS or n_threads < 2:                     # the calling thread, no OpenMP region
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
    with nogil:
        for t in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
            i0 = n * t // n_threads
            i1 = n * (t + 1) // n_threads
            if is_double:
                first_bad[t] = _forward_thread(n_layers, sizes, W_ptr, b_ptr, <const double*>xp, x_row, x_col, act,
                                               mode, unit_range, <double*>ofp, oip, <double*>wfp + t * wf_row, wip + t * wi_row,
                                               wf_row, wi_row, n_hidden_total, d_max, i0, i1)
            else:
                first_bad[t] = _forward_thread(n_layers, sizes, W_ptr, b_ptr, <const float*>xp, x_row, x_col, act,
                                               mode, unit_range, <float*>ofp, oip, <float*>wfp + t * wf_row, wip + t * wi_row,
                                               wf_row, wi_row, n_hidden_total, d_max, i0, i1)
    for t in range(n_threads):
        if first_bad[t] >= 0:
            return first_bad[t]
    return -1
