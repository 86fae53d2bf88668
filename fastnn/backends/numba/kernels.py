"""The numba backend's interface kernels: matmul, the activations and softmax cross-entropy as
flat ``@njit(cache=True)`` loop nests (the checked wrappers are in ``fastnn.backends.numba``).

Kernels are flat module-level ``@njit(cache=True)`` functions, so a second process loads
them from Numba's on-disk cache instead of compiling again. ``matmul`` never calls BLAS: here
is its row-axpy kernel (rows of the output in parallel, each accumulated from rows of ``b`` in
a contiguous inner loop LLVM vectorizes, zero inputs skipped: the right one for MNIST pixels);
dense inputs go to the packed GEMM of ``gemm.py``. Their GFLOP/s against the BLAS libraries:
``pytest benchmarks/test_gemm.py benchmarks/test_kernels.py --benchmark-only``.

fastmath: ``contract`` (fused multiply-add); never the flags that assume no NaN or inf, so a
diverging run still shows its NaN.

The kernels of the interface call no BLAS, so Numba's thread pool has the cores to itself.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from fastnn.backends.numba._shared import softmax_row
from fastnn.backends.numba.gemm import gemm


@njit(cache=True)
def dense_matmul(a, b, out, min_k, parallel_min_fmas):
    """out (m, n) = a (m, k) @ b (k, n) by the packed GEMM on this thread, with nothing around it
    in Python: the matmul wrapper's path for its usual call (at 64x64 @ 64x10 its checks and its
    density test in NumPy cost more than the product). Returns True, or False having written
    nothing unless b is (k, n) for out's n, out is (m, n), m, n >= 1, k >= min_k, the product has
    fewer than ``parallel_min_fmas`` multiply-adds (larger ones go to ``gemm_parallel``) and at
    least half of a's first 8 rows is non-zero (``prefers_gemm``): the wrapper then checks and
    picks the kernel itself. a, b and out: 2-D, C-contiguous, one float dtype (the wrapper checks)."""
    m, k = a.shape
    n = b.shape[1]
    if (b.shape[0] != k or out.shape[0] != m or out.shape[1] != n or m < 1 or n < 1 or k < min_k
            or m * k * n >= parallel_min_fmas):
        return False
    head = min(m, 8)
    nonzero = 0
    for i in range(head):
        for p in range(k):
            nonzero += a[i, p] != 0
    if 2 * nonzero <= head * k:
        return False
    gemm(False, False, m, n, k, 1, a.reshape(-1), k, b.reshape(-1), n, 0, out.reshape(-1), n, 1)
    return True


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
