"""The ``numba`` backend: every kernel a hand-written loop nest compiled by Numba.

Kernels are flat module-level ``@njit(cache=True)`` functions, so a second process loads
them from Numba's on-disk cache instead of compiling again. ``matmul`` is written out as a
loop nest (rows of the output in parallel with ``prange``, each row accumulated from rows of
``b`` in a contiguous inner loop LLVM vectorizes, zero inputs skipped); it does not call
BLAS, so it shows what a hand-written kernel reaches. It is not yet register-tiled: at
64x784 @ 784x128 it reaches about a fifth of BLAS's GFLOP/s on dense inputs.

fastmath: only ``contract`` (fused multiply-add) where it is set; never the flags that
assume no NaN or inf, so a diverging run still shows its NaN.

Threads: Numba uses ``NUMBA_NUM_THREADS`` (default: all cores). These kernels call no BLAS,
so on the kernel-by-kernel path Numba's pool has the cores to itself. Mixing Numba's parallel
regions with multi-threaded BLAS calls in one loop is a different matter: both pools keep
their threads spinning after their work, and on 2 cores a prototype fused epoch measured
11 s with OpenBLAS at 2 threads against 0.8 s with OMP_NUM_THREADS=1. Code that mixes them
must limit BLAS to one thread.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._checks import as_float_array, check_logits_labels, check_matmul, check_same_shape

NAME = "numba"

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
    n, c = logits.shape
    total = 0.0
    for i in range(n):
        row = logits[i]
        mx = row[0]
        for j in range(1, c):
            if row[j] > mx:
                mx = row[j]
        s = 0.0
        for j in range(c):
            e = np.exp(row[j] - mx)
            probs[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(c):
            probs[i, j] *= inv
        if labels.size:
            total += np.log(s) - (row[labels[i]] - mx)
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


# ---------------------------------------------------------------- the kernel interface
def matmul(a, b):
    """(m, k) @ (k, n) -> (m, n) with the hand-written blocked loop nest (no BLAS)."""
    a, b = check_matmul(a, b)
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    # the inner loop wants rows of b contiguous; a may be any layout (read one element at a time)
    _matmul_kernel(a, np.ascontiguousarray(b), out)
    return out


def _elementwise(kernel, *arrays):
    flat = [np.ascontiguousarray(x).reshape(-1) for x in arrays]
    out = np.empty(arrays[0].shape, dtype=arrays[0].dtype)
    kernel(*flat, out.reshape(-1))
    return out


def relu(z):
    """a = max(z, 0), elementwise."""
    return _elementwise(_relu_kernel, as_float_array(z, "z"))


def relu_backward(grad_out, z):
    """dL/dz = dL/da * [z > 0]."""
    return _elementwise(_relu_backward_kernel, *check_same_shape(grad_out, z, "z"))


def sigmoid(z):
    """a = 1 / (1 + exp(-z)), stable for large |z|."""
    return _elementwise(_sigmoid_kernel, as_float_array(z, "z"))


def sigmoid_backward(grad_out, out):
    """dL/dz = dL/da * a * (1 - a), with ``out`` = sigmoid(z)."""
    return _elementwise(_sigmoid_backward_kernel, *check_same_shape(grad_out, out, "out"))


def tanh(z):
    """a = tanh(z)."""
    return _elementwise(_tanh_kernel, as_float_array(z, "z"))


def tanh_backward(grad_out, out):
    """dL/dz = dL/da * (1 - a^2), with ``out`` = tanh(z)."""
    return _elementwise(_tanh_backward_kernel, *check_same_shape(grad_out, out, "out"))


def softmax(logits):
    """probs (N, C), row-wise softmax of logits (N, C)."""
    logits = np.ascontiguousarray(as_float_array(logits, "logits", 2))
    probs = np.empty_like(logits)
    _softmax_xent_kernel(logits, np.empty(0, np.int64), probs)
    return probs


def softmax_cross_entropy(logits, labels):
    """(mean loss as float, probs (N, C)) for logits (N, C) and labels (N,); log-sum-exp stable."""
    logits, labels = check_logits_labels(logits, labels)
    logits = np.ascontiguousarray(logits)
    probs = np.empty_like(logits)
    n = logits.shape[0]
    if n == 0:
        return 0.0, probs
    total = _softmax_xent_kernel(logits, np.ascontiguousarray(labels), probs)
    return float(total / n), probs


def softmax_cross_entropy_backward(probs, labels):
    """dL/dlogits (N, C) = (probs - one_hot(labels)) / N."""
    probs, labels = check_logits_labels(probs, labels, "probs")
    out = np.empty(probs.shape, dtype=probs.dtype)
    if probs.shape[0]:
        _softmax_xent_backward_kernel(np.ascontiguousarray(probs), np.ascontiguousarray(labels), out)
    return out
