"""Int8Model: a trained model's forward with layer 0 in 8-bit integers (``NeuralNetwork.to_int8``).

The quantization, its error and its source are in ``fastnn.inference.int8``; the kernels in
``fastnn/backends/cython/forward_int8.h``. An Int8Model is a snapshot: it holds its own copies
of the weights, so training the source model further does not change it (call ``to_int8``
again).
"""
from __future__ import annotations

import numpy as np

from fastnn.backends.fused_interface import ACT_CODES, FORWARD_MODES
from fastnn.backends.memory import aligned_copy
from fastnn.inference.forward import as_batch, raise_input_range_error
from fastnn.inference.int8 import Int8Layer0, quantize_layer0

__all__ = ["Int8Model", "int8_unavailable_reason"]

_FLOAT32 = np.dtype(np.float32)             # native byte order (a swapped float32 is another dtype object)


def int8_unavailable_reason(model) -> str | None:
    """Why ``model`` cannot run in int8 here (one line with the fix), or None."""
    if not getattr(model, "pixel_inputs", False):
        return ("int8 needs a model of pixels in [0, 1] (pixel_inputs, as fastnn.train makes): "
                "its inputs must have a known range")
    if getattr(model, "input_norm", "none") != "none":
        return f"int8 runs models without input normalization; this one has input_norm={model.input_norm!r}"
    if model.activation not in ACT_CODES:
        return f"int8 runs the activations {sorted(ACT_CODES)}, not {model.activation!r}"
    from fastnn.backends import BackendUnavailable, get_backend

    try:
        kernels = get_backend("cython")
    except BackendUnavailable:
        return "int8 inference needs the cython backend, which is not built here (pip install -e . builds it)"
    if not hasattr(kernels, "Int8Runner"):
        return "this build of the cython backend has no int8 forward: rebuild it (pip install -e .)"
    return None


class Int8Model:
    """``model``'s evaluation-mode forward with layer 0 quantized to int8 (weights, per-output
    scales) and its inputs to 8-bit pixels; the other layers float32.

    Args:
        model: a trained ``NeuralNetwork`` of pixels (``pixel_inputs``), without input normalization.
    Raises:
        ValueError: the model cannot be quantized (``int8_unavailable_reason`` says why and the fix).

    Attributes:
        layer0: the ``fastnn.inference.int8.Int8Layer0`` (int8 weights (D, H0), scales (H0,)).
        biases0: (H0,) float32; weights, biases: the float32 layers 1.. (lists).
        layer_sizes, activation: as the source model's.
    """

    def __init__(self, model):
        reason = int8_unavailable_reason(model)
        if reason:
            raise ValueError(reason)
        from fastnn.backends import get_backend

        self.layer_sizes = list(model.layer_sizes)
        self.activation = model.activation
        self.class_names = getattr(model, "class_names", None)
        self.layer0: Int8Layer0 = quantize_layer0(model.weights[0])
        self.biases0 = aligned_copy(np.asarray(model.biases[0], dtype=np.float32))
        self.weights = [aligned_copy(np.asarray(W, dtype=np.float32)) for W in model.weights[1:]]
        self.biases = [aligned_copy(np.asarray(b, dtype=np.float32)) for b in model.biases[1:]]
        kernels = get_backend("cython")
        threads = max(1, int(kernels.num_threads())) if hasattr(kernels, "num_threads") else 1
        self._runner = kernels.Int8Runner(self.layer0.packed, self.layer0.input_scales, self.layer_sizes[0],
                                          tuple(self.weights), (self.biases0, *self.biases),
                                          ACT_CODES[self.activation], threads, raise_input_range_error)
        self._labels = self._runner.labels
        self._num_features = self.layer_sizes[0]

    def __repr__(self):
        return f"Int8Model({'-'.join(map(str, self.layer_sizes))}, activation={self.activation!r}, layer 0 int8)"

    def _input(self, X) -> np.ndarray:
        """X as (N, D) float32 (images (N, 28, 28) flattened). Raises TypeError (not floating
        point), ValueError (shape); the range is checked by the kernels."""
        X = as_batch(X, self._num_features)                               # (N, D)
        return X.astype(np.float32, copy=False)

    def predict(self, X) -> np.ndarray:
        """Labels (N,) int64 of X (N, D) float pixels in [0, 1] (images (N, 28, 28) are flattened):
        the first maximum of each row's logits.

        Raises:
            TypeError: X is not floating point. ValueError: X's shape does not fit the input layer.
            InputRangeError (a ValueError): NaN, or an input outside [0, 1] (pixels not scaled).
        """
        if (type(X) is np.ndarray and X.dtype is _FLOAT32 and X.ndim == 2
                and X.shape[1] == self._num_features):                     # the batch-1 path: nothing to convert
            return self._labels(X)
        return self._labels(self._input(X))

    def logits(self, X) -> np.ndarray:
        """Logits (N, C) float32 of X (N, D). Raises as ``predict``."""
        return self._runner.run(self._input(X), FORWARD_MODES["logits"])

    def forward(self, X) -> np.ndarray:
        """Class probabilities (N, C) float32 of X (N, D). Raises as ``predict``."""
        return self._runner.run(self._input(X), FORWARD_MODES["probs"])
