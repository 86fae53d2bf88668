"""Input checks shared by every backend.

Every backend calls these before touching memory, so that a wrong shape,
rank or dtype gives the same clear error everywhere (and a compiled kernel
never reads out of bounds). Nothing is broadcast silently.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(x, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a float32/float64 ndarray (no copy), checking rank.

    Raises:
        TypeError: ``x`` is not a float32 or float64 array.
        ValueError: ``x`` does not have ``ndim`` dimensions.
    """
    arr = np.asarray(x)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def check_matmul(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Check ``a`` (m, k) and ``b`` (k, n): both 2-D, same float dtype, inner sizes equal."""
    a = as_float_array(a, "a", 2)
    b = as_float_array(b, "b", 2)
    if a.dtype != b.dtype:
        raise TypeError(f"matmul operands must share a dtype, got a {a.dtype} and b {b.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul shape mismatch: a {a.shape} @ b {b.shape} (inner sizes {a.shape[1]} != {b.shape[0]})")
    return a, b


def check_same_shape(grad_out, x, x_name: str = "z") -> tuple[np.ndarray, np.ndarray]:
    """Check that ``grad_out`` and the saved forward array have one shape and dtype."""
    grad_out = as_float_array(grad_out, "grad_out")
    x = as_float_array(x, x_name)
    if grad_out.shape != x.shape:
        raise ValueError(f"grad_out shape {grad_out.shape} does not match {x_name} shape {x.shape}")
    if grad_out.dtype != x.dtype:
        raise TypeError(f"grad_out dtype {grad_out.dtype} does not match {x_name} dtype {x.dtype}")
    return grad_out, x


def check_labels(labels, n: int, num_classes: int, name_n: str = "logits") -> np.ndarray:
    """Check ``labels`` (N,) integer in [0, C) against a (N, C) companion array.

    Returns the labels as an int64 array.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D of shape (N,), got shape {lab.shape}")
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {lab.dtype}")
    if lab.shape[0] != n:
        raise ValueError(f"labels shape {lab.shape} does not match {name_n} batch size {n} (expected ({n},))")
    if lab.size:
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
    return lab.astype(np.int64, copy=False)


def check_logits_labels(logits, labels, name: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    """Check ``logits`` (N, C) float and ``labels`` (N,) int in [0, C)."""
    logits = as_float_array(logits, name, 2)
    if logits.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class column, got shape {logits.shape}")
    labels = check_labels(labels, logits.shape[0], logits.shape[1], name)
    return logits, labels


# ---------------------------------------------------------------- shared by the compiled backends
GEMM_MIN_K = 32   # from this depth on, dense inputs go to the packed GEMM (gemm.h, gemm.py)
# Products smaller than this many multiply-adds run the packed GEMM on one thread: waking a
# second costs more than it saves there (benchmarks/test_gemm.py, 64 x 64 @ 64 x 10: 9-31 us on two
# threads, 3.8-4.5 us on one).
GEMM_PARALLEL_MIN_FMAS = 1 << 20


def prefers_gemm(a: np.ndarray) -> bool:
    """Whether ``a`` (m, k) should go to the packed GEMM rather than the zero-skipping row
    kernel: k >= GEMM_MIN_K and at most half zeros, judged on the first 8 rows
    (cheap; a batch of images is uniformly sparse)."""
    head = a[:8]
    return a.shape[1] >= GEMM_MIN_K and 2 * np.count_nonzero(head) > head.size


def run_elementwise(kernel, *arrays) -> np.ndarray:
    """Call ``kernel(*flat_inputs, flat_out)`` on C-contiguous flat copies/views of ``arrays``;
    return the output shaped like ``arrays[0]``."""
    flat = [np.ascontiguousarray(x).reshape(-1) for x in arrays]
    out = np.empty(arrays[0].shape, dtype=arrays[0].dtype)
    kernel(*flat, out.reshape(-1))
    return out


def run_softmax(kernel, logits) -> np.ndarray:
    """probs (N, C) from ``kernel(logits, labels, probs)`` called with no labels (softmax only)."""
    logits = np.ascontiguousarray(as_float_array(logits, "logits", 2))
    probs = np.empty_like(logits)
    if logits.size:
        kernel(logits, np.empty(0, np.int64), probs)
    return probs


def run_softmax_cross_entropy(kernel, logits, labels) -> tuple[float, np.ndarray]:
    """(mean loss, probs) from ``kernel(logits, labels, probs)``, which returns the summed loss."""
    logits, labels = check_logits_labels(logits, labels)
    logits = np.ascontiguousarray(logits)
    probs = np.empty_like(logits)
    if logits.shape[0] == 0:
        return 0.0, probs
    total = kernel(logits, np.ascontiguousarray(labels, dtype=np.int64), probs)
    return float(total / logits.shape[0]), probs


def run_softmax_cross_entropy_backward(kernel, probs, labels) -> np.ndarray:
    """dL/dlogits (N, C) from ``kernel(probs, labels, out)``."""
    probs, labels = check_logits_labels(probs, labels, "probs")
    out = np.empty(probs.shape, dtype=probs.dtype)
    if probs.shape[0]:
        kernel(np.ascontiguousarray(probs), np.ascontiguousarray(labels, dtype=np.int64), out)
    return out
