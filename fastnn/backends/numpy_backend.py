"""The ``numpy`` backend: every kernel vectorized with NumPy (matmul is BLAS sgemm/dgemm).

Same signatures and semantics as ``reference``; outputs keep the input dtype.
"""
from __future__ import annotations

import numpy as np

from fastnn.backends._checks import as_float_array, check_logits_labels, check_matmul, check_same_shape

NAME = "numpy"


def matmul(a, b):
    """(m, k) @ (k, n) -> (m, n), via BLAS. Raises ValueError/TypeError like ``reference``."""
    a, b = check_matmul(a, b)
    return a @ b                                              # (m, n)


def relu(z):
    """a = max(z, 0), elementwise."""
    z = as_float_array(z, "z")
    return np.maximum(z, 0)


def relu_backward(grad_out, z):
    """dL/dz = dL/da * [z > 0]."""
    grad_out, z = check_same_shape(grad_out, z, "z")
    return grad_out * (z > 0)                                 # (N, H)


def sigmoid(z):
    """a = 1 / (1 + exp(-z)), computed as 0.5 * (1 + tanh(z / 2)): no overflow for large |z|."""
    z = as_float_array(z, "z")
    half = z.dtype.type(0.5)
    return half * (1 + np.tanh(half * z))


def sigmoid_backward(grad_out, out):
    """dL/dz = dL/da * a * (1 - a), with ``out`` = sigmoid(z)."""
    grad_out, out = check_same_shape(grad_out, out, "out")
    return grad_out * out * (1 - out)


def tanh(z):
    """a = tanh(z), elementwise."""
    return np.tanh(as_float_array(z, "z"))


def tanh_backward(grad_out, out):
    """dL/dz = dL/da * (1 - a^2), with ``out`` = tanh(z)."""
    grad_out, out = check_same_shape(grad_out, out, "out")
    return grad_out * (1 - out * out)


def _shifted(logits):
    return logits - logits.max(axis=1, keepdims=True)        # (N, C), row max is 0


def softmax(logits):
    """probs (N, C) = softmax of each row of logits (N, C), max-subtracted."""
    logits = as_float_array(logits, "logits", 2)
    e = np.exp(_shifted(logits))                              # (N, C)
    return e / e.sum(axis=1, keepdims=True)                   # (N, C)


def softmax_cross_entropy(logits, labels):
    """(mean loss as float, probs (N, C)) for logits (N, C) and labels (N,); log-sum-exp stable."""
    logits, labels = check_logits_labels(logits, labels)
    n = logits.shape[0]
    if n == 0:
        return 0.0, np.empty_like(logits)
    shifted = _shifted(logits)                                # (N, C)
    e = np.exp(shifted)                                       # (N, C)
    sums = e.sum(axis=1, keepdims=True)                       # (N, 1)
    probs = e / sums                                          # (N, C)
    log_probs_true = shifted[np.arange(n), labels] - np.log(sums[:, 0])   # (N,)
    loss = -float(np.mean(log_probs_true, dtype=np.float64))
    return loss, probs


def softmax_cross_entropy_backward(probs, labels):
    """dL/dlogits (N, C) = (probs - one_hot(labels)) / N."""
    probs, labels = check_logits_labels(probs, labels, "probs")
    n = probs.shape[0]
    grad = probs.copy()                                       # (N, C)
    grad[np.arange(n), labels] -= 1
    if n:
        grad /= probs.dtype.type(n)
    return grad
