"""The ``reference`` backend: every kernel as explicit Python loops.

This is the readable specification of the kernel interface; the other
backends are checked against it. It is slow by design (a 64x784 @ 784x128
matmul takes about a second). Inputs are NumPy arrays; each kernel converts
them to nested Python lists, loops, and returns an array of the input dtype.
"""
from __future__ import annotations

import math

import numpy as np

from fastnn.backends._checks import as_float_array, check_logits_labels, check_matmul, check_same_shape

NAME = "reference"


def matmul(a, b):
    """C = A @ B with the textbook triple loop.

    Args:
        a: (m, k) float32/float64. b: (k, n), same dtype.
    Returns:
        (m, n) array of the input dtype.
    Raises:
        ValueError: not 2-D, or inner sizes differ (both shapes named). TypeError: dtypes.
    """
    a, b = check_matmul(a, b)
    m, k = a.shape
    n = b.shape[1]
    A, B = a.tolist(), b.tolist()
    C = [[0.0] * n for _ in range(m)]
    for i in range(m):
        Ci, Ai = C[i], A[i]
        for p in range(k):          # i-p-j order: the inner loop walks rows of B and C
            a_ip, Bp = Ai[p], B[p]
            for j in range(n):
                Ci[j] += a_ip * Bp[j]
    return np.array(C, dtype=a.dtype).reshape(m, n)


def _map(fn, x):
    """Apply a scalar function to every element of ``x``; same shape and dtype."""
    flat = [fn(v) for v in x.ravel().tolist()]
    return np.array(flat, dtype=x.dtype).reshape(x.shape)


def _map2(fn, x, y):
    flat = [fn(u, v) for u, v in zip(x.ravel().tolist(), y.ravel().tolist())]
    return np.array(flat, dtype=x.dtype).reshape(x.shape)


def relu(z):
    """a = max(z, 0), elementwise. z: any shape, float32/float64."""
    return _map(lambda v: v if v > 0.0 else 0.0, as_float_array(z, "z"))


def relu_backward(grad_out, z):
    """dL/dz = dL/da * [z > 0]. grad_out and z: same shape and dtype."""
    grad_out, z = check_same_shape(grad_out, z, "z")
    return _map2(lambda g, v: g if v > 0.0 else 0.0, grad_out, z)


def _sigmoid_scalar(v):
    if v >= 0.0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)               # never overflows for v < 0
    return e / (1.0 + e)


def sigmoid(z):
    """a = 1 / (1 + exp(-z)), elementwise, stable for large |z|."""
    return _map(_sigmoid_scalar, as_float_array(z, "z"))


def sigmoid_backward(grad_out, out):
    """dL/dz = dL/da * a * (1 - a), where ``out`` = sigmoid(z) from the forward pass."""
    grad_out, out = check_same_shape(grad_out, out, "out")
    return _map2(lambda g, a: g * a * (1.0 - a), grad_out, out)


def tanh(z):
    """a = tanh(z), elementwise."""
    return _map(math.tanh, as_float_array(z, "z"))


def tanh_backward(grad_out, out):
    """dL/dz = dL/da * (1 - a^2), where ``out`` = tanh(z) from the forward pass."""
    grad_out, out = check_same_shape(grad_out, out, "out")
    return _map2(lambda g, a: g * (1.0 - a * a), grad_out, out)


def _softmax_rows(L):
    """Row-wise softmax of a nested list, with the row max subtracted first."""
    P = []
    for row in L:
        mx = max(row)
        exps = [math.exp(v - mx) for v in row]
        s = sum(exps)
        P.append([e / s for e in exps])
    return P


def softmax(logits):
    """probs[i, c] = exp(logits[i, c]) / sum_c' exp(logits[i, c']). logits: (N, C)."""
    logits = as_float_array(logits, "logits", 2)
    P = _softmax_rows(logits.tolist())
    return np.array(P, dtype=logits.dtype).reshape(logits.shape)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels.

    loss = mean_i [ log sum_c exp(logits[i, c]) - logits[i, labels[i]] ],
    computed with the row max subtracted (log-sum-exp), so logits of 1e4
    give finite results.

    Args:
        logits: (N, C) float32/float64. labels: (N,) integers in [0, C).
    Returns:
        (loss, probs): the mean loss as a Python float, probs (N, C) of the logits' dtype.
    Raises:
        ValueError: shapes disagree or a label is out of range. TypeError: dtypes.
    """
    logits, labels = check_logits_labels(logits, labels)
    L = logits.tolist()
    total = 0.0
    for row, y in zip(L, labels.tolist()):
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        total += lse - row[y]
    n = len(L)
    loss = total / n if n else 0.0
    probs = np.array(_softmax_rows(L), dtype=logits.dtype).reshape(logits.shape)
    return float(loss), probs


def softmax_cross_entropy_backward(probs, labels):
    """dL/dlogits = (probs - one_hot(labels)) / N, for the mean loss.

    Args:
        probs: (N, C) float from ``softmax_cross_entropy``. labels: (N,) ints in [0, C).
    Returns:
        (N, C) array of the probs' dtype.
    """
    probs, labels = check_logits_labels(probs, labels, "probs")
    n = probs.shape[0]
    G = probs.tolist()
    for i, y in enumerate(labels.tolist()):
        row = G[i]
        row[y] -= 1.0
        for j in range(len(row)):
            row[j] /= n
    return np.array(G, dtype=probs.dtype).reshape(probs.shape)
