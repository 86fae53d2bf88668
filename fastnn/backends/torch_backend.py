"""The ``torch`` backend: the kernel interface written with PyTorch tensor operations.

Used for parity tests and as a reference point. Inputs and outputs are NumPy arrays
(shared memory where the layout allows); shape and label checks are the same as ``numpy``'s.
torch is optional: ``pip install -e ".[torch]"`` in the project folder (on this project's machines,
``pip install torch==2.13.0`` first).
"""
from __future__ import annotations

import numpy as np

try:
    import torch
except ImportError as exc:  # reported by get_backend("torch") with an install hint
    raise ImportError(f"torch is not installed ({exc})") from exc

from fastnn.backends._checks import as_float_array, check_logits_labels, check_matmul, check_same_shape

NAME = "torch"


def _t(x: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(x))


def matmul(a, b):
    """(m, k) @ (k, n) -> (m, n) with torch.matmul."""
    a, b = check_matmul(a, b)
    return torch.matmul(_t(a), _t(b)).numpy()


def relu(z):
    return torch.relu(_t(as_float_array(z, "z"))).numpy()


def relu_backward(grad_out, z):
    grad_out, z = check_same_shape(grad_out, z, "z")
    return torch.where(_t(z) > 0, _t(grad_out), torch.zeros((), dtype=_t(z).dtype)).numpy()


def sigmoid(z):
    return torch.sigmoid(_t(as_float_array(z, "z"))).numpy()


def sigmoid_backward(grad_out, out):
    grad_out, out = check_same_shape(grad_out, out, "out")
    a = _t(out)
    return (_t(grad_out) * a * (1 - a)).numpy()


def tanh(z):
    return torch.tanh(_t(as_float_array(z, "z"))).numpy()


def tanh_backward(grad_out, out):
    grad_out, out = check_same_shape(grad_out, out, "out")
    a = _t(out)
    return (_t(grad_out) * (1 - a * a)).numpy()


def softmax(logits):
    return torch.softmax(_t(as_float_array(logits, "logits", 2)), dim=1).numpy()


def softmax_cross_entropy(logits, labels):
    """(mean loss as float, probs (N, C)) via log_softmax (stable for logits of 1e4)."""
    logits, labels = check_logits_labels(logits, labels)
    if logits.shape[0] == 0:
        return 0.0, np.empty_like(logits)
    log_probs = torch.log_softmax(_t(logits), dim=1)                         # (N, C)
    loss = torch.nn.functional.nll_loss(log_probs.double(), _t(labels)).item()
    return float(loss), log_probs.exp().numpy()


def softmax_cross_entropy_backward(probs, labels):
    """(probs - one_hot(labels)) / N."""
    probs, labels = check_logits_labels(probs, labels, "probs")
    p = _t(probs)
    one_hot = torch.nn.functional.one_hot(_t(labels), probs.shape[1]).to(p.dtype)
    n = max(probs.shape[0], 1)
    return ((p - one_hot) / n).numpy()
