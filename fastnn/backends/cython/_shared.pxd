"""Inlines shared by the cython backend's compiled files (the counterpart of the numba backend's
``_shared.py``): the clock, the stable sigmoid, one row's softmax, the sparse-row kernels of
``sparse_row.h``, the packed GEMM of ``gemm.h``, the in-place activations and their derivatives, and the
CSR row prefetch. Each ``.pyx`` that cimports them gets its own inlined copy.
"""
from libc.math cimport exp, tanh
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from cython cimport floating
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef inline long long _now() noexcept nogil:
    """Monotonic clock in nanoseconds (the phase timers' and fma_peak's unit)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000LL + ts.tv_nsec


cdef inline double _sigmoid(double x) noexcept nogil:
    """1 / (1 + exp(-x)) without overflow for either sign of x."""
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


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



# ---------------------------------------------------------------- sparse rows (both fused paths)
# z = z_in + sum_q x_q W[idx[q]] with the partial sums in vector registers: sparse_row.h.
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
    int row_ascending(const uint16_t* idx, Py_ssize_t n, Py_ssize_t size)
    void sparse_pixels_float_strided(const float* W, Py_ssize_t ldw, Py_ssize_t n_out, const uint16_t* idx,
                                     const uint8_t* val, Py_ssize_t m, float scale, const float* z_in, float* z)
    void sparse_pixels_double_strided(const double* W, Py_ssize_t ldw, Py_ssize_t n_out, const uint16_t* idx,
                                      const uint8_t* val, Py_ssize_t m, double scale, const double* z_in, double* z)
    void sparse_row_float_strided(const float* W, Py_ssize_t ldw, Py_ssize_t n_out, const int32_t* idx,
                                  const float* val, Py_ssize_t m, float scale, const float* z_in, float* z)
    void sparse_row_double_strided(const double* W, Py_ssize_t ldw, Py_ssize_t n_out, const int32_t* idx,
                                   const double* val, Py_ssize_t m, double scale, const double* z_in, double* z)
    Py_ssize_t sparse_update_float(const float* G, Py_ssize_t n_out, const int32_t* idx, const float* val,
                                   Py_ssize_t m, float* p, float* s, float wd, float mu, float lr, int momentum)
    Py_ssize_t sparse_update_double(const double* G, Py_ssize_t n_out, const int32_t* idx, const double* val,
                                    Py_ssize_t m, double* p, double* s, double wd, double mu, double lr,
                                    int momentum)

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


cdef inline void _sparse_row_cols(const floating* W, Py_ssize_t ldw, Py_ssize_t n_cols, const int32_t* idx,
                                  const floating* val, Py_ssize_t m, floating* z) noexcept nogil:
    """z (n_cols,) += sum_q val[q] W[idx[q], :n_cols], W's rows ldw apart (sparse_row.h)."""
    if floating is float:
        sparse_row_float_strided(W, ldw, n_cols, idx, val, m, 1, z, z)
    else:
        sparse_row_double_strided(W, ldw, n_cols, idx, val, m, 1, z, z)


cdef inline Py_ssize_t _sparse_update(const floating* G, Py_ssize_t n_out, const int32_t* idx, const floating* val,
                                      Py_ssize_t m, floating* p, floating* s, floating wd, floating mu, floating lr,
                                      bint momentum) noexcept nogil:
    """A weight gradient row fused with its SGD or momentum update for the leading whole blocks of
    columns; returns the columns done (sparse_row.h's sparse_update_T)."""
    if floating is float:
        return sparse_update_float(G, n_out, idx, val, m, p, s, wd, mu, lr, momentum)
    else:
        return sparse_update_double(G, n_out, idx, val, m, p, s, wd, mu, lr, momentum)


cdef inline void _sparse_pixels(const floating* W, Py_ssize_t n_out, const uint16_t* idx, const uint8_t* pixels,
                                Py_ssize_t m, floating scale, floating* z) noexcept nogil:
    """z += sum_q (pixels[q] * scale) W[idx[q]] (sparse_row.h)."""
    if floating is float:
        sparse_pixels_float(W, n_out, idx, pixels, m, scale, z, z)
    else:
        sparse_pixels_double(W, n_out, idx, pixels, m, scale, z, z)


cdef inline void _sparse_pixels_cols(const floating* W, Py_ssize_t ldw, Py_ssize_t n_cols, const uint16_t* idx,
                                     const uint8_t* pixels, Py_ssize_t m, floating scale, floating* z) noexcept nogil:
    """z (n_cols,) += sum_q (pixels[q] * scale) W[idx[q], :n_cols], W's rows ldw apart (sparse_row.h)."""
    if floating is float:
        sparse_pixels_float_strided(W, ldw, n_cols, idx, pixels, m, scale, z, z)
    else:
        sparse_pixels_double_strided(W, ldw, n_cols, idx, pixels, m, scale, z, z)


cdef extern from "exp_vector.h" nogil:
    void exp_shifted_float(const float* z, Py_ssize_t c, float mx, float* out)


cdef extern from *:
    void __builtin_prefetch(const void* address, int rw, int locality) nogil



cdef extern from "gemm.h" nogil:
    void fastnn_gemm_init()
    const char* fastnn_gemm_isa()
    void fastnn_sgemm(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
                      const float* a, Py_ssize_t lda, const float* b, Py_ssize_t ldb, float beta, float* c,
                      Py_ssize_t ldc, int threads)
    void fastnn_dgemm(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
                      const double* a, Py_ssize_t lda, const double* b, Py_ssize_t ldb, double beta, double* c,
                      Py_ssize_t ldc, int threads)
    void fastnn_sgemm_strided(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
                              const float* a, Py_ssize_t lda, const float* b, Py_ssize_t ldb, float beta, float* c,
                              Py_ssize_t ldc, Py_ssize_t cs, int threads)
    void fastnn_dgemm_strided(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
                              const double* a, Py_ssize_t lda, const double* b, Py_ssize_t ldb, double beta,
                              double* c, Py_ssize_t ldc, Py_ssize_t cs, int threads)


cdef inline void _gemm_into_transposed(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                                       const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                                       floating* c, Py_ssize_t ldc) noexcept nogil:
    """C^T = op(A) @ op(B), op(A) (m, k), op(B) (k, n), into the row-major C (n, m) with row stride ldc:
    element (i, j) of the product goes to c[j ldc + i]. gemm.h on the calling thread."""
    if floating is float:
        fastnn_sgemm_strided(trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, 1, ldc, 1)
    else:
        fastnn_dgemm_strided(trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, 1, ldc, 1)


cdef inline void _gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating alpha,
                       const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb, floating beta,
                       floating* c, Py_ssize_t ldc) noexcept nogil:
    """Row-major C (m, n) = alpha op(A) @ op(B) + beta C, op(X) = X^T when trans_x; lda/ldb/ldc are
    row strides. fastnn's own packed GEMM (gemm.h) on the calling thread only; the module that
    calls it runs ``fastnn_gemm_init()`` once at import to pick the micro-kernel."""
    if floating is float:
        fastnn_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, 1)
    else:
        fastnn_dgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, 1)


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


cdef inline bint _row_ascending(const uint16_t* indices, int64_t a, int64_t b, Py_ssize_t size) noexcept nogil:
    """Whether a CSR row's pixel indices[a:b] rise strictly and stay below ``size``: what the
    kernels' binary searches and row reads rely on (sparse_row.h's ``row_ascending``)."""
    return row_ascending(indices + a, b - a, size) != 0


cdef inline void _prefetch_row(const int64_t* indptr, const uint16_t* indices, const uint8_t* pixels,
                               int64_t row) noexcept nogil:
    """Prefetch CSR row ``row``'s indices and pixels, a 64-byte line at a time."""
    cdef int64_t q
    for q in range(indptr[row], indptr[row + 1], 32):
        __builtin_prefetch(&indices[q], 0, 3)
    for q in range(indptr[row], indptr[row + 1], 64):
        __builtin_prefetch(&pixels[q], 0, 3)
