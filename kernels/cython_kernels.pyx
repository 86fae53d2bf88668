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
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

# matmul works on blocks of MR rows of ``out``: each row of ``b`` is loaded once and used
# for MR rows (MR FMAs per load), the MR output rows (MR * n floats) stay in L1 cache, and
# the contiguous loop over columns is vectorized by the C compiler (-O3 -march=native).
cdef enum:
    MR = 4


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
def softmax_xent(const floating[:, ::1] logits, const int64_t[::1] labels, floating[:, ::1] probs):
    """probs = softmax(logits) per row (max subtracted); returns sum_i -log probs[i, labels[i]] (double).

    ``labels`` may be empty (softmax only)."""
    cdef Py_ssize_t n = logits.shape[0], c = logits.shape[1], i, j
    cdef double total = 0, mx, s, e
    cdef bint with_labels = labels.shape[0] > 0
    with nogil:
        for i in range(n):
            mx = logits[i, 0]
            for j in range(1, c):
                if logits[i, j] > mx:
                    mx = logits[i, j]
            s = 0
            for j in range(c):
                e = exp(logits[i, j] - mx)
                probs[i, j] = <floating>e
                s += e
            for j in range(c):
                probs[i, j] = <floating>(probs[i, j] / s)
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


# ---------------------------------------------------------------- the fused training path
# Same algorithm and arguments as numba_backend.fused_steps (documented in fastnn/fused.py):
# each of T threads runs its share of the batch (m rows) layer by layer, forward and backward,
# into its own gradient row grads[t]; a second parallel loop sums the rows, zeroes them and
# applies the optimizer. Layer 0 reads the input as sparse (CSR) rows in hand-written loops;
# the dense products of later layers call BLAS sgemm/dgemm from scipy.linalg.cython_blas
# (single-threaded: the caller limits BLAS threads). Row-major arrays are passed to the
# column-major BLAS as their transposes, so C = A @ B is computed as C^T = B^T A^T.

cdef inline void _gemm(char transa, char transb, int m, int n, int k, floating alpha, const floating* a,
                       int lda, const floating* b, int ldb, floating beta, floating* c, int ldc) noexcept nogil:
    """Column-major C (m, n) = alpha op(A) op(B) + beta C, op = transpose when trans is 'T'."""
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb, &beta, c, &ldc)


cdef void _thread_step(const int64_t[::1] indptr, const int32_t[::1] indices, const floating[::1] values,
                       const int64_t[::1] labels, const int64_t* batch, Py_ssize_t i0, Py_ssize_t m,
                       Py_ssize_t nb, Py_ssize_t rows, const int64_t[::1] sizes, const int64_t[::1] w_off,
                       const int64_t[::1] b_off, const floating* theta, floating* gr, floating* wk,
                       Py_ssize_t s_tot, int act, const floating* mask, bint dropout, floating inv_nb,
                       double* loss) noexcept nogil:
    """Forward and backward of batch rows i0 .. i0 + m - 1 (sample ids batch[i]); gradients into gr."""
    cdef Py_ssize_t n_layers = sizes.shape[0] - 1
    cdef Py_ssize_t l, i, j, k, q, off = 0, n_in, n_out, prev, c, lg, sample, y
    cdef Py_ssize_t q_end
    cdef floating x, x1, x2, x3, mx, tot, p
    cdef const floating* w1
    cdef const floating* w2
    cdef const floating* w3
    cdef floating* A
    cdef floating* O
    cdef floating* G
    cdef floating* z
    cdef const floating* w_row
    cdef const floating* bias
    cdef floating* g_row
    # ---- forward: layer l's outputs are the (m, n_out) block at wk + rows * off
    for l in range(n_layers):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        A = wk + rows * off
        bias = theta + b_off[l]
        if l == 0:                                  # sparse rows: z += x_q W0[q, :], 4 nonzeros per pass
            for i in range(m):
                z = A + i * n_out
                for j in range(n_out):
                    z[j] = bias[j]
                sample = batch[i0 + i]
                q = indptr[sample]
                q_end = indptr[sample + 1]
                while q + 4 <= q_end:
                    x, x1, x2, x3 = values[q], values[q + 1], values[q + 2], values[q + 3]
                    w_row = theta + w_off[0] + indices[q] * n_out
                    w1 = theta + w_off[0] + indices[q + 1] * n_out
                    w2 = theta + w_off[0] + indices[q + 2] * n_out
                    w3 = theta + w_off[0] + indices[q + 3] * n_out
                    for j in range(n_out):
                        z[j] += x * w_row[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
                    q += 4
                while q < q_end:
                    x = values[q]
                    w_row = theta + w_off[0] + indices[q] * n_out
                    for j in range(n_out):
                        z[j] += x * w_row[j]
                    q += 1
        else:                                       # Z = A_in @ W + b (BLAS)
            for i in range(m):
                for j in range(n_out):
                    A[i * n_out + j] = bias[j]
            _gemm(c'N', c'N', <int>n_out, <int>m, <int>n_in, 1, theta + w_off[l], <int>n_out,
                  wk + rows * (off - n_in), <int>n_in, 1, A, <int>n_out)
        if l < n_layers - 1:                        # hidden: activation into O, dropout into A
            O = wk + rows * (s_tot + off)
            if act == 0:                            # one branch-free loop per activation (vectorized)
                for k in range(m * n_out):
                    O[k] = A[k] if A[k] > 0 else 0
            elif act == 1:
                for k in range(m * n_out):
                    O[k] = <floating>_sigmoid(A[k])
            else:
                for k in range(m * n_out):
                    O[k] = <floating>tanh(A[k])
            if dropout:
                for i in range(m):
                    for j in range(n_out):
                        A[i * n_out + j] = O[i * n_out + j] * mask[nb * off + (i0 + i) * n_out + j]
            else:
                for k in range(m * n_out):
                    A[k] = O[k]
        off += n_out
    # ---- softmax cross-entropy; G = (p - onehot) / nb
    c = sizes[n_layers]
    lg = off - c
    for i in range(m):
        z = wk + rows * lg + i * c
        G = wk + rows * (2 * s_tot + lg) + i * c
        mx = z[0]
        for j in range(1, c):
            if z[j] > mx:
                mx = z[j]
        tot = 0
        for j in range(c):
            G[j] = <floating>exp(z[j] - mx)
            tot += G[j]
        y = labels[batch[i0 + i]]
        loss[0] += log(<double>tot) - <double>(z[y] - mx)
        for j in range(c):
            p = G[j] / tot
            G[j] = (p - 1) * inv_nb if j == y else p * inv_nb
    # ---- backward
    off = lg
    for l in range(n_layers - 1, -1, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        G = wk + rows * (2 * s_tot + off)
        g_row = gr + b_off[l]
        for i in range(m):
            for j in range(n_out):
                g_row[j] += G[i * n_out + j]
        if l == 0:                                  # grad W0[q, :] += x_q * g, sparse input rows
            for i in range(m):
                sample = batch[i0 + i]
                for q in range(indptr[sample], indptr[sample + 1]):
                    x = values[q]
                    g_row = gr + w_off[0] + indices[q] * n_out
                    for j in range(n_out):
                        g_row[j] += x * G[i * n_out + j]
            break
        prev = off - n_in
        # grad W += A_in^T @ G (BLAS, accumulated in place); D = G @ W^T into the G block of prev
        _gemm(c'N', c'T', <int>n_out, <int>n_in, <int>m, 1, G, <int>n_out, wk + rows * prev, <int>n_in,
              1, gr + w_off[l], <int>n_out)
        A = wk + rows * (2 * s_tot + prev)
        _gemm(c'T', c'N', <int>n_in, <int>m, <int>n_out, 1, theta + w_off[l], <int>n_out, G, <int>n_out,
              0, A, <int>n_in)
        O = wk + rows * (s_tot + prev)
        if dropout:
            for i in range(m):
                for k in range(n_in):
                    A[i * n_in + k] *= mask[nb * prev + (i0 + i) * n_in + k]
        if act == 0:
            for k in range(m * n_in):
                A[k] = A[k] if O[k] > 0 else 0
        elif act == 1:
            for k in range(m * n_in):
                A[k] = A[k] * (O[k] * (1 - O[k]))
        else:
            for k in range(m * n_in):
                A[k] = A[k] * (1 - O[k] * O[k])
        off = prev


def fused_steps(const int64_t[::1] indptr, const int32_t[::1] indices, const floating[::1] values,
                const int64_t[::1] labels, const int64_t[::1] order, Py_ssize_t first_step, Py_ssize_t n_steps,
                Py_ssize_t batch_size, const int64_t[::1] sizes, const int64_t[::1] w_off, const int64_t[::1] b_off,
                floating[::1] theta, floating[:, ::1] grads, floating[:, ::1] work, floating[::1] state1,
                floating[::1] state2, const floating[::1] decay, int act, const floating[:, ::1] drop_mask,
                int opt, const floating[::1] hyper, Py_ssize_t t0, double[::1] losses):
    """SGD steps first_step .. first_step + n_steps - 1 of an epoch, in place; losses[s] = mean CE of step s."""
    cdef Py_ssize_t n = order.shape[0], n_layers = sizes.shape[0] - 1
    cdef int n_threads = grads.shape[0]
    cdef Py_ssize_t n_params = theta.shape[0], s_tot = 0, l, s, lo, nb, t, i0, i1, ch, k0, k1
    cdef Py_ssize_t rows = (batch_size + n_threads - 1) // n_threads
    cdef Py_ssize_t chunk = 4096, n_chunks = (theta.shape[0] + 4096 - 1) // 4096
    cdef floating lr = hyper[0], mu = hyper[1], beta1 = hyper[3], beta2 = hyper[4], eps = hyper[5]
    cdef floating keep = hyper[6], inv_nb, step_size, v_corr
    cdef bint dropout = keep < 1
    cdef double[::1] thread_loss = np.zeros(n_threads)
    cdef double total
    for l in range(1, n_layers + 1):
        s_tot += sizes[l]
    if work.shape[1] < 3 * rows * s_tot or grads.shape[1] != n_params:
        raise ValueError(f"work {work.shape} / grads {grads.shape} too small for batch {batch_size}")
    with nogil:
        for s in range(n_steps):
            lo = (first_step + s) * batch_size
            nb = min(lo + batch_size, n) - lo
            inv_nb = 1.0 / nb
            for t in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
                thread_loss[t] = 0
                i0 = (nb * t) // n_threads
                i1 = (nb * (t + 1)) // n_threads
                if i1 > i0:
                    _thread_step(indptr, indices, values, labels, &order[lo], i0, i1 - i0, nb, rows, sizes,
                                 w_off, b_off, &theta[0], &grads[t, 0], &work[t, 0], s_tot, act,
                                 &drop_mask[s if dropout else 0, 0], dropout, inv_nb, &thread_loss[t])
            total = 0
            for t in range(n_threads):
                total = total + thread_loss[t]
            losses[s] = total / nb
            step_size = lr
            v_corr = 1
            if opt == 2:
                step_size = <floating>(<double>lr / (1.0 - (<double>beta1) ** (t0 + s + 1)))
                v_corr = <floating>(1.0 - (<double>beta2) ** (t0 + s + 1))
            for ch in prange(n_chunks, schedule="static", num_threads=n_threads):
                k0 = ch * chunk
                k1 = min(n_params, k0 + chunk)
                _update(&theta[k0], &grads[0, 0], grads.shape[1], n_threads, k0, k1 - k0, &state1[0],
                        &state2[0], &decay[k0], opt, lr, mu, beta1, beta2, eps, step_size, v_corr)

cdef void _update(floating* p, floating* grads, Py_ssize_t stride, int n_threads, Py_ssize_t k0, Py_ssize_t count,
                  floating* state1, floating* state2, const floating* l2, int opt, floating lr, floating mu,
                  floating beta1, floating beta2, floating eps, floating step_size,
                  floating v_corr) noexcept nogil:
    """g = sum_t grads[t, k0:k0+count] (zeroed) + l2 * p; then the SGD / momentum / Adam update of p."""
    cdef Py_ssize_t k
    cdef int t
    cdef floating* g = grads + k0
    cdef floating* g_t
    cdef floating gk, v, m
    for t in range(1, n_threads):
        g_t = grads + t * stride + k0
        for k in range(count):
            g[k] += g_t[k]
            g_t[k] = 0
    if opt == 0:
        for k in range(count):
            p[k] -= lr * (g[k] + l2[k] * p[k])
            g[k] = 0
    elif opt == 1:
        for k in range(count):
            v = mu * state1[k0 + k] + (g[k] + l2[k] * p[k])
            state1[k0 + k] = v
            p[k] -= lr * v
            g[k] = 0
    else:
        for k in range(count):
            gk = g[k] + l2[k] * p[k]
            m = beta1 * state1[k0 + k] + (1 - beta1) * gk
            v = beta2 * state2[k0 + k] + (1 - beta2) * (gk * gk)
            state1[k0 + k] = m
            state2[k0 + k] = v
            p[k] -= step_size * m / (<floating>sqrt(v / v_corr) + eps)
            g[k] = 0
