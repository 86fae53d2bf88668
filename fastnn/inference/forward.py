"""The fused forward pass: a model's whole evaluation-mode forward in one compiled call.

A backend may provide ``fused_forward(params, work, options, X, out_f, out_i)`` (the groups of
``fastnn.backends.fused_interface``; numba: ``fastnn/backends/numba/fused_forward.py``; cython:
``fastnn/backends/cython/fused_forward.pyx``, the same algorithm): every layer of X (N, D) in
one call, a row at a time through all the layers, the zeros of each layer's input skipped (MNIST
pixels: 19 % non-zero), rows split between the threads for N >= 16 and run on the calling thread
below (no thread-pool wake-up at batch 1). ``mode`` is a ``FORWARD_MODES`` value: logits or
probabilities into ``out_f`` (N, C), or labels (the first maximum of the logits, as
``np.argmax``) into ``out_i`` (N,) int64.

**Garbage in is an error, on every backend.** A NaN or infinite input is refused by every model;
a model of pixels (``NeuralNetwork.pixel_inputs``: every model ``fastnn.train`` makes, and the
pretrained ones) also refuses inputs outside [0, 1], such as a 3e38 or pixels left in 0-255:
they would still give a label, confidently and wrongly. The fused kernels check each row's
inputs before its forward pass (a compare per input, no extra pass from Python; ``unit_range``
selects the check) and return the first bad row; ``ForwardPlan.run`` raises ``InputRangeError``
naming it. The kernel-by-kernel paths check in ``NeuralNetwork._check_input``. The ONNX export
checks nothing (its graph is MatMul/Add/activation): its users scale their inputs.

Skipping zeros is exact arithmetic except where a weight is NaN or infinite: 0 * NaN is NaN in a
dense product (numpy's matmul) but is never computed here, so such a weight in the row of a zero
input leaves the output finite. Model files with non-finite weights are refused on loading
(``fastnn.model.network``), and training stops on a non-finite loss on every backend.

``ForwardPlan`` is what ``NeuralNetwork.logits``/``forward``/``predict`` hold between calls:
the weight arrays (the model's own, not copies: in-place updates are seen), the activation
code and the work buffers, reused so that a call allocates nothing but its result. The
model rebuilds it when an array is replaced, the backend or the activation changes, or an
array is not C-contiguous of the model's dtype (then the kernel path runs instead). A backend
may also provide ``same_arrays`` (the plan's identity test, compiled) and ``ForwardRunner``
(the plan's calls with their output arrays and lock, compiled; cython has both): at batch 1
the Python around the compiled call cost about as much as the forward pass itself.
"""
from __future__ import annotations

import threading
from operator import is_

import numpy as np

from fastnn.backends.fused_interface import (
    ACT_CODES,
    FORWARD_BLOCK_ROWS,
    FORWARD_MODES,
    ForwardOptions,
    ForwardParameters,
    ForwardWork,
)
from fastnn.backends.memory import aligned_zeros

__all__ = ["ForwardPlan", "FORWARD_MODES", "InputRangeError", "as_batch", "has_fused_forward", "inference_backend",
           "input_range_error", "raise_input_range_error"]


class InputRangeError(ValueError):
    """An input outside [0, 1]: NaN, infinite, or pixels not scaled (0-255 instead of 0-1)."""


def input_range_error(X: np.ndarray, row: int, unit_range: bool = True) -> InputRangeError:
    """The error for row ``row`` of X, naming what is wrong with it and the fix."""
    values = np.asarray(X[row], dtype=np.float64)
    if np.isnan(values).any():
        what = "NaN"
    elif np.isinf(values).any():
        what = "an infinite value"
    elif values.max() > 1 and values.max() <= 255 and values.min() >= 0:
        what = (f"values up to {values.max():g}: pixels in 0-255, not scaled "
                "(divide by 255, or fastnn.data.datasets.to_float)")
    else:
        bad = values[(values < 0) | (values > 1)]
        what = f"{bad[0]:g}"
    return InputRangeError(f"X row {row} holds {what}; "
                           + ("inputs must be pixels in [0, 1]" if unit_range else "inputs must be finite"))

def as_batch(X, num_features: int) -> np.ndarray:
    """X as a floating-point (N, D) array, D = ``num_features`` (images (N, 28, 28) flattened; no
    copy, no dtype change). Raises TypeError (not floating point) or ValueError (a single sample,
    or a shape that does not fit the input layer), one line each with the fix."""
    X = np.asarray(X)
    if X.dtype.kind not in "f":
        raise TypeError(f"X must be floating point (e.g. uint8 images / 255), got dtype {X.dtype}")
    if X.ndim == 1:
        raise ValueError(f"X must be a batch (N, {num_features}), got shape {X.shape}; "
                         f"use X[None, :] for a single sample")
    if X.ndim > 2:
        X = X.reshape(X.shape[0], int(np.prod(X.shape[1:])))       # (N, D), N = 0 included
    if X.shape[1] != num_features:
        raise ValueError(f"X shape {X.shape} does not match the input layer: expected (N, {num_features})")
    return X


# The backends with a fused forward, fastest first (REPORT.md, Inference), and the fallback.
INFERENCE_BACKENDS = ("cython", "numba")


def inference_backend(name: str = "auto") -> str:
    """``name``, or for "auto" the first of ``INFERENCE_BACKENDS`` that runs here, else "numpy".
    (Checking imports the backend: cython's is cheap, and numba is only tried without it.)"""
    if name != "auto":
        return name
    from fastnn.backends import BackendUnavailable, get_backend

    for candidate in INFERENCE_BACKENDS:
        try:
            get_backend(candidate)
        except BackendUnavailable:
            continue
        return candidate
    return "numpy"


def has_fused_forward(backend) -> bool:
    """True when the backend module runs the whole forward pass in one compiled call."""
    return hasattr(backend, "fused_forward")


_INT64 = np.dtype(np.int64)                 # a dtype object: np.empty takes it faster than the type


def raise_input_range_error(X: np.ndarray, row: int, unit_range: bool) -> None:
    """A compiled runner's ``on_bad`` (``ForwardRunner``, ``Int8Runner``): raises
    ``input_range_error(X, row, unit_range)``."""
    raise input_range_error(X, row, unit_range)


def same_arrays(seq, arrays: tuple) -> bool:
    """Whether the list or tuple ``seq`` holds exactly the objects of ``arrays``, in order (by
    identity, never by value)."""
    return len(seq) == len(arrays) and all(map(is_, seq, arrays))


def pad16(n: int) -> int:
    """n rounded up to a multiple of 16 (a 64-byte line of float32)."""
    return -(-n // 16) * 16


def _threads(backend) -> int:
    return max(1, int(backend.num_threads())) if hasattr(backend, "num_threads") else 1


class ForwardPlan:
    """The fused forward of one model's current arrays on one backend.

    Args:
        backend: a backend module with ``fused_forward``.
        weights, biases: the model's lists ((n_in, n_out) and (n_out,) arrays).
        activation: the hidden layers' activation name (``ACT_CODES``).
        dtype: the model's dtype.
    Raises:
        ValueError: the backend has no fused forward, the activation no code, or an array is
            not C-contiguous of ``dtype`` (``unusable_reason`` says so without raising).
    """

    def __init__(self, backend, weights, biases, activation: str, dtype):
        reason = self.unusable_reason(backend, weights, biases, activation, dtype)
        if reason:
            raise ValueError(f"no fused forward: {reason}")
        self.backend = backend
        self.weights, self.biases = tuple(weights), tuple(biases)
        self.activation, self.dtype = activation, np.dtype(dtype)
        self._act = ACT_CODES[activation]
        self._run = backend.fused_forward
        self._same = getattr(backend, "same_arrays", same_arrays)         # compiled where the backend has it
        sizes = [weights[0].shape[0]] + [W.shape[1] for W in weights]
        self.num_features, self.num_classes = sizes[0], sizes[-1]
        widest_input, S, R = max(sizes[:-1]), sum(sizes[1:]), FORWARD_BLOCK_ROWS
        threads = _threads(backend)
        # per thread: [layers' outputs (S,) | non-zeros (Dmax,) | a block's outputs (R, S) | its non-zeros (R, Dmax)]
        # and [non-zeros' indices (Dmax,) | a block's (R, Dmax) | its rows' block bounds (R, Dmax // 16 + 2)]
        self._params = ForwardParameters(self.weights, self.biases)
        # (rows of whole cache lines, 64-byte aligned, with room for a block's rows padded to lines)
        width_f = (pad16(S) + pad16(widest_input)) * (R + 1) + 16
        self._work = ForwardWork(
            work_f=aligned_zeros((threads, width_f), self.dtype),
            work_i=aligned_zeros((threads, widest_input * (R + 1) + R * (widest_input // 16 + 2)), np.int32))
        self._options = {mode: (ForwardOptions(self._act, code, False), ForwardOptions(self._act, code, True))
                         for mode, code in FORWARD_MODES.items()}               # [mode][unit_range]
        self._labels_options = {False: self._options["labels"][0], True: self._options["labels"][1]}
        self._no_floats = np.zeros((0, self.num_classes), dtype=self.dtype)
        self._no_labels = np.zeros(0, dtype=np.int64)
        self._lock = threading.Lock()             # the work buffers serve one call at a time
        self._acquire, self._release = self._lock.acquire, self._lock.release
        # a backend's ForwardRunner makes the calls in compiled code (its own lock); then
        # ``labels`` is the runner's method, with nothing in Python between predict and the kernel
        runner = getattr(backend, "ForwardRunner", None)
        self._runner = None
        if runner is not None:
            table = tuple(self._options[mode][unit_range] for mode in sorted(FORWARD_MODES, key=FORWARD_MODES.get)
                          for unit_range in (0, 1))                          # index 2 mode + unit_range
            self._runner = runner(self._params, self._work, table, raise_input_range_error)
            self.labels, self.try_labels = self._runner.labels, self._runner.try_labels

    @staticmethod
    def unusable_reason(backend, weights, biases, activation: str, dtype) -> str | None:
        if not has_fused_forward(backend):
            return f"backend {getattr(backend, 'NAME', backend)!r} has none"
        if activation not in ACT_CODES:
            return f"activation {activation!r} is not in the fused kernels"
        for arr in (*weights, *biases):
            if arr.dtype != dtype or not arr.flags.c_contiguous:
                return "a weight or bias array is not C-contiguous of the model's dtype"
        return None

    def matches(self, backend, weights, biases, activation: str) -> bool:
        """Whether this plan still runs the model: same backend, activation and array objects."""
        return (backend is self.backend and activation == self.activation
                and self._same(weights, self.weights) and self._same(biases, self.biases))

    def try_labels(self, X, unit_range: bool) -> np.ndarray | None:
        """``labels(X, unit_range)`` when X is already what the plan runs on, a C-contiguous ndarray
        (N, D) of the plan's dtype (the same dtype object: native byte order), else None: the caller
        converts and checks X first (``predict``'s batch-1 path)."""
        if (type(X) is np.ndarray and X.ndim == 2 and X.dtype is self.dtype
                and X.shape[1] == self.num_features and X.flags.c_contiguous):
            return self.labels(X, unit_range)
        return None

    def labels(self, X: np.ndarray, unit_range: bool) -> np.ndarray:
        """``run(X, "labels", unit_range)`` with less Python around the call (``predict``'s path:
        at batch 1 each step here is a tenth of the compiled call's time)."""
        out = np.empty(X.shape[0], _INT64)
        self._acquire()                     # self._lock's bound methods: ~50 ns less than `with`
        try:
            bad = self._run(self._params, self._work, self._labels_options[unit_range], X, self._no_floats, out)
        finally:
            self._release()
        if bad >= 0:
            raise input_range_error(X, bad, unit_range)
        return out

    def run(self, X: np.ndarray, mode: str, unit_range: bool = True) -> np.ndarray:
        """``mode`` ("logits", "probs", "labels") of X (N, D) of the plan's dtype (any strides; the
        model passes it C-contiguous, so that one signature is compiled): (N, C) float, or (N,)
        int64 for labels. Raises InputRangeError for an input that is not finite, or
        (``unit_range``) outside [0, 1]."""
        if self._runner is not None:
            return self._runner.run(X, FORWARD_MODES[mode], bool(unit_range))
        if mode == "labels":
            out_f, out_i = self._no_floats, np.empty(X.shape[0], dtype=np.int64)
        else:
            out_f, out_i = np.empty((X.shape[0], self.num_classes), dtype=self.dtype), self._no_labels
        with self._lock:
            bad = self._run(self._params, self._work, self._options[mode][bool(unit_range)], X, out_f, out_i)
        if bad >= 0:
            raise input_range_error(X, bad, unit_range)
        return out_i if mode == "labels" else out_f
