"""The numba backend's interface kernels: matmul, the activations and softmax cross-entropy as
flat ``@njit(cache=True)`` loop nests (the checked wrappers are in ``fastnn.backends.numba``).

Kernels are flat module-level ``@njit(cache=True)`` functions, so a second process loads
them from Numba's on-disk cache instead of compiling again. ``matmul`` is written out as
loop nests and never calls BLAS, so it shows what a hand-written kernel reaches: a row-axpy
kernel (rows of the output in parallel, each accumulated from rows of ``b`` in a contiguous
inner loop LLVM vectorizes, zero inputs skipped: the right one for MNIST pixels) and, for
dense inputs, a dot-product kernel whose 2 x 4 output tiles stay in registers (columns of b
packed as rows first, as BLAS packs its panels). Their GFLOP/s against BLAS at the network's
shapes: ``pytest benchmarks/test_kernels.py --benchmark-only``.

fastmath: ``contract`` (fused multiply-add), plus ``reassoc`` in the fused path's dot
products; never the flags that assume no NaN or inf, so a diverging run still shows its NaN.

The kernels of the interface call no BLAS, so Numba's thread pool has the cores to itself.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from fastnn.backends.numba._shared import softmax_row


@njit(cache=True, parallel=True, fastmath={"contract"})
def _matmul_kernel(a, b, out):
    """out (m, n) = a (m, k) @ b (k, n): out[i] = sum_p a[i, p] * b[p]; rows of out split across threads."""
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        orow = out[i]
        for j in range(n):
            orow[j] = 0
        for p in range(k):
            aip = a[i, p]
            if aip == 0:               # zero inputs (MNIST is ~80% zero pixels) add nothing
                continue
            brow = b[p]
            for j in range(n):         # contiguous: vectorized by LLVM
                orow[j] += aip * brow[j]


@njit(cache=True, fastmath={"contract", "reassoc"})
def _pack_columns(b, j0, w, bt):
    """bt[jj, p] = b[p, j0 + jj] for jj < w: columns of b as contiguous rows (a block of b^T)."""
    for p in range(b.shape[0]):
        brow = b[p, j0:j0 + w]
        for jj in range(w):
            bt[jj, p] = brow[jj]


@njit(cache=True, fastmath={"contract", "reassoc"})
def _dot_tiles(a, bt, out, j0, w):
    """out[:, j0:j0+w] = a @ bt[:w].T: out[i, j0 + jj] = sum_p a[i, p] * bt[jj, p].

    2 x 4 tiles of out are 8 simultaneous dot products over p: 8 vector accumulators stay in
    registers (``reassoc`` lets LLVM vectorize the sums) and each step loads 2 values of a and
    4 of bt for 8 FMAs."""
    m, k = a.shape
    zero = a.dtype.type(0)
    for i in range(0, m - 1, 2):
        a0 = a[i]
        a1 = a[i + 1]
        for jj in range(0, w - 3, 4):
            b0 = bt[jj]
            b1 = bt[jj + 1]
            b2 = bt[jj + 2]
            b3 = bt[jj + 3]
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = zero
            for p in range(k):
                x0 = a0[p]
                x1 = a1[p]
                c00 += x0 * b0[p]
                c01 += x0 * b1[p]
                c02 += x0 * b2[p]
                c03 += x0 * b3[p]
                c10 += x1 * b0[p]
                c11 += x1 * b1[p]
                c12 += x1 * b2[p]
                c13 += x1 * b3[p]
            o0 = out[i, j0 + jj:j0 + jj + 4]
            o1 = out[i + 1, j0 + jj:j0 + jj + 4]
            o0[0], o0[1], o0[2], o0[3] = c00, c01, c02, c03
            o1[0], o1[1], o1[2], o1[3] = c10, c11, c12, c13
        for jj in range(w - w % 4, w):                      # leftover columns
            bj = bt[jj]
            c0 = c1 = zero
            for p in range(k):
                c0 += a0[p] * bj[p]
                c1 += a1[p] * bj[p]
            out[i, j0 + jj] = c0
            out[i + 1, j0 + jj] = c1
    if m % 2:                                               # leftover row
        a0 = a[m - 1]
        for jj in range(w):
            bj = bt[jj]
            c0 = zero
            for p in range(k):
                c0 += a0[p] * bj[p]
            out[m - 1, j0 + jj] = c0


@njit(cache=True, parallel=True)
def _matmul_dot_kernel(a, b, out):
    """out (m, n) = a (m, k) @ b (k, n) as dot products; column blocks of 16 in parallel, each
    packing its own (16, k) block of b^T first."""
    k, n = b.shape
    for blk in prange((n + 15) // 16):
        j0 = blk * 16
        w = min(16, n - j0)
        bt = np.empty((16, k), dtype=b.dtype)
        _pack_columns(b, j0, w, bt)
        _dot_tiles(a, bt, out, j0, w)


@njit(cache=True)
def _relu_kernel(z, out):
    """out = max(z, 0), flat arrays."""
    for i in range(z.size):
        out[i] = z[i] if z[i] > 0 else 0


@njit(cache=True)
def _relu_backward_kernel(grad_out, z, out):
    """out = grad_out * [z > 0], flat arrays."""
    for i in range(z.size):
        out[i] = grad_out[i] if z[i] > 0 else 0


@njit(cache=True)
def _sigmoid_kernel(z, out):
    """out = 1 / (1 + exp(-z)), evaluated in float64 so that exp never overflows, rounded once."""
    for i in range(z.size):
        x = np.float64(z[i])
        if x >= 0:
            out[i] = 1.0 / (1.0 + np.exp(-x))
        else:
            e = np.exp(x)
            out[i] = e / (1.0 + e)


@njit(cache=True)
def _sigmoid_backward_kernel(grad_out, a, out):
    """out = grad_out * a * (1 - a), a = sigmoid(z)."""
    for i in range(a.size):
        out[i] = grad_out[i] * a[i] * (1 - a[i])


@njit(cache=True)
def _tanh_kernel(z, out):
    for i in range(z.size):
        out[i] = np.tanh(z[i])


@njit(cache=True)
def _tanh_backward_kernel(grad_out, a, out):
    """out = grad_out * (1 - a^2), a = tanh(z)."""
    for i in range(a.size):
        out[i] = grad_out[i] * (1 - a[i] * a[i])


@njit(cache=True)
def _softmax_xent_kernel(logits, labels, probs):
    """probs = softmax(logits) row by row (max subtracted); returns the summed loss in float64."""
    total = 0.0
    for i in range(logits.shape[0]):
        s, mx = softmax_row(logits[i], probs[i])
        if labels.size:
            total += np.log(s) - (logits[i, labels[i]] - mx)
    return total


@njit(cache=True)
def _softmax_xent_backward_kernel(probs, labels, out):
    """out = (probs - one_hot(labels)) / N."""
    n, c = probs.shape
    inv_n = 1.0 / n
    for i in range(n):
        for j in range(c):
            out[i, j] = probs[i, j] * inv_n
        out[i, labels[i]] -= inv_n
