# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The ``cython`` backend's compiled kernels (built into ``fastnn.backends.cython.kernels``).

One fused-type source for float32 and float64 (``floating``). Each kernel is a ``nogil`` core
with a one-line maths docstring; the Python wrapper ``fastnn/backends/cython/__init__.py``
checks shapes, dtypes and labels before calling, because with boundscheck(False) nothing
here does. Built by setup.py with -O3 and, where the compiler has it, -fopenmp: ``prange``
then runs on OpenMP threads (``openmp_threads()`` reports how many; 1 means a serial build).
No BLAS anywhere: matmul is a zero-skipping loop nest for sparse inputs and the packed GEMM of
``gemm.h`` (packing plus an AVX-512/AVX2 register-blocked micro-kernel chosen at run time) for
dense ones; the fused training path calls the same GEMM for its dense layers.
"""
from cython.parallel cimport prange, parallel, threadid
from libc.math cimport exp, log, tanh
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from cython cimport floating
from fastnn.backends.cython._shared cimport (
    _now, _sigmoid, _softmax_row, exp_shifted_float, fastnn_dgemm_strided, fastnn_gemm_init, fastnn_gemm_isa,
    fastnn_sgemm_strided,
)

cimport numpy as cnp
import numpy as np

cnp.import_array()
fastnn_gemm_init()                     # pick gemm.h's micro-kernel for this CPU


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
    """The FMA loop of fma_peak.h on ``threads`` OpenMP threads at once: returns
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


def gemm(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out, int threads,
         bint trans_a=False, bint trans_b=False, bint out_transposed=False):
    """out = a @ b by the packed GEMM of gemm.h on ``threads`` OpenMP threads: a (m, k), b (k, n),
    out (m, n); with ``trans_a`` a is stored transposed, (k, m), likewise b (n, k) with ``trans_b``
    and out (n, m) with ``out_transposed`` (gemm.h's column stride: the fused backward's layout).

    Goto and van de Geijn (2008), BLIS loop order: B packed in KC x NC blocks, A in MC x KC blocks
    (either read in place when one block holds it), an MR x NR micro-tile of sums in vector
    registers over the depth. Raises ValueError when the shapes do not fit; empty products leave
    out as it is, k = 0 zeroes it."""
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0], k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1], k_b = b.shape[1] if trans_b else b.shape[0]
    cdef Py_ssize_t ldc = 1 if out_transposed else n, cs = m if out_transposed else 1
    if k_b != k or (out.shape[0], out.shape[1]) != ((n, m) if out_transposed else (m, n)):
        raise ValueError("gemm: shapes must be a (m, k), b (k, n), out (m, n) (each stored transposed when asked)")
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:, :] = 0
        return
    with nogil:
        if floating is float:
            fastnn_sgemm_strided(trans_a, trans_b, m, n, k, 1, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1], 0,
                                 &out[0, 0], ldc, cs, threads)
        else:
            fastnn_dgemm_strided(trans_a, trans_b, m, n, k, 1, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1], 0,
                                 &out[0, 0], ldc, cs, threads)


cdef inline bint _plain_matrix(object x, int typenum) noexcept:
    """x is a 2-D C-contiguous, aligned, native-order ndarray (not a subclass) of NumPy type typenum."""
    return (type(x) is cnp.ndarray and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2
            and cnp.PyArray_TYPE(<cnp.ndarray>x) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>x) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x))


def dense_matmul(a, b, Py_ssize_t min_k, Py_ssize_t parallel_min_fmas, threads):
    """a (m, k) @ b (k, n) -> out (m, n) by the packed GEMM, with nothing around it in Python:
    the matmul wrapper's path for its usual call (at 64x64 @ 64x10 the wrapper's checks, its
    density test in NumPy and the typed memoryviews cost more than the product). Returns None,
    having done nothing, unless a and b are 2-D C-contiguous aligned native ndarrays of one
    float dtype (float32 or float64) with a's columns b's rows, m, n >= 1, k >= min_k, and at
    least half of a's first 8 rows non-zero (``prefers_gemm``): the caller then checks and
    converts them and picks the kernel itself. ``threads()`` (a callable) gives the thread count
    of products of at least ``parallel_min_fmas`` multiply-adds; smaller ones run on this thread."""
    cdef int typenum
    if type(a) is not cnp.ndarray:
        return None
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return None
    if not (_plain_matrix(a, typenum) and _plain_matrix(b, typenum)):
        return None
    cdef Py_ssize_t m = cnp.PyArray_DIM(<cnp.ndarray>a, 0), k = cnp.PyArray_DIM(<cnp.ndarray>a, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray>b, 1), i, head, nonzero = 0
    if cnp.PyArray_DIM(<cnp.ndarray>b, 0) != k or m < 1 or n < 1 or k < min_k or k < 1:
        return None
    head = min(m, 8) * k                                                  # a's first 8 rows, contiguous
    cdef const float* a32 = <const float*>cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef const double* a64 = <const double*>cnp.PyArray_DATA(<cnp.ndarray>a)
    if typenum == cnp.NPY_FLOAT32:
        for i in range(head):
            nonzero += a32[i] != 0
    else:
        for i in range(head):
            nonzero += a64[i] != 0
    if 2 * nonzero <= head:
        return None
    cdef int n_threads = 1
    if m * k * n >= parallel_min_fmas:
        n_threads = threads()
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = m, n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(2, dims, typenum, 0)                   # (m, n)
    cdef const void* b_data = cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef void* out_data = cnp.PyArray_DATA(out)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fastnn_sgemm_strided(0, 0, m, n, k, 1, a32, k, <const float*>b_data, n, 0, <float*>out_data, n, 1,
                                 n_threads)
        else:
            fastnn_dgemm_strided(0, 0, m, n, k, 1, a64, k, <const double*>b_data, n, 0, <double*>out_data, n, 1,
                                 n_threads)
    return out


def exp_shifted(const float[::1] z, float mx, float[::1] out):
    """out[j] = e^(z[j] - mx) by exp_vector.h's float32 polynomial (the fused step's softmax), for
    z[j] - mx <= 0; 0 where that is below -87.33654, NaN where NaN. Raises ValueError when out is
    not z's size."""
    if out.shape[0] != z.shape[0]:
        raise ValueError("exp_shifted: out must have z's size")
    if z.shape[0]:
        exp_shifted_float(&z[0], z.shape[0], mx, &out[0])


def gemm_isa():
    """The micro-kernel gemm.h chose for this CPU: 'avx512', 'avx2' or 'generic'."""
    return fastnn_gemm_isa().decode()


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



def read_cycles():
    """The phase timers' clock (nanoseconds; ``cycles_per_second()`` is 1e9)."""
    return _now()
