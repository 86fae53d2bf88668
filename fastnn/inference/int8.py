"""Int8 inference (an opt-in): layer 0 in 8-bit integers, the other layers in float32.

Layer 0 is most of a forward pass (784 x 128 of the seed network's 109,386 weights), and the
float32 forward is bound by reading W0: 512 bytes per non-zero pixel, about 10 loads for 8
multiply-adds (REPORT.md, "AVX-512 kernels for the forward"). Here W0 takes a byte per weight,
the pixels a byte each, and four pixels go into one instruction (VPDPBUSD, AVX512-VNNI: sixteen
outputs x four inputs of u8 x s8 products summed into int32 lanes).

**The quantization** (symmetric, one scale per output; Jacob et al., "Quantization and Training
of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, section 2, with
the zero points 0):

- weights: ``s_j = max_p |W0[p, j]| / 127`` and ``W0q[p, j] = round(W0[p, j] / s_j)`` in
  [-127, 127] (a column of zeros gets ``s_j = 1``); the error of a weight is at most ``s_j / 2``;
- inputs: ``xq[p] = round(255 x[p])`` in [0, 255], rounding to nearest (even) in float32. For
  pixels stored as bytes and divided by 255 (MNIST, Fashion-MNIST, ``fastnn.data``) this is the
  byte itself, exactly; any other value in [0, 1] moves by at most 1/510;
- layer 0: ``z0[j] = float32(acc[j]) * (s_j / 255) + b0[j]`` (one rounding, FMA), where
  ``acc[j] = sum_p xq[p] W0q[p, j]`` is an exact int32 sum (|acc| <= 784 x 255 x 127);
- layers 1..: float32, as the float forward (``fastnn.inference.forward``).

Only a model of pixels (``pixel_inputs``; every model ``fastnn.train`` makes) can be quantized:
its inputs are known to lie in [0, 1]. Inputs are checked as in the float forward: NaN or a
value outside [0, 1] raises ``InputRangeError``.

What it costs in accuracy (docs/inference.md, "Int8", whose code block prints it): on the 10,000
test images the shipped MNIST model goes from 98.81% to 98.80% (3 labels changed), the
Fashion-MNIST model from 89.60% to 89.55% (13 changed).

The kernels: ``fastnn/backends/cython/forward_int8.h`` (VNNI where the build has it, else
portable C with the same integer sums) and ``Int8Runner`` in ``fused_forward.pyx``. Only the
cython backend has them. ``reference_logits`` below is the same arithmetic in NumPy (float64
after the integer sums): the oracle of the tests.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastnn.backends.memory import aligned_copy, aligned_zeros

__all__ = ["Int8Layer0", "quantize_layer0", "quantize_inputs", "reference_logits", "INPUT_LEVELS", "WEIGHT_LEVELS"]

INPUT_LEVELS = 255          # x in [0, 1] -> round(255 x): a pixel byte
WEIGHT_LEVELS = 127         # |W0q| <= 127 (symmetric: -128 unused)


class Int8Layer0(NamedTuple):
    """Layer 0 quantized (``quantize_layer0``). D inputs, H0 outputs, G = ceil(D / 4),
    H16 = H0 rounded up to 16."""
    weights: np.ndarray     # (D, H0) int8: W0q, round(W0 / s)
    scales: np.ndarray      # (H0,) float32: s, W0's unit per output (W0 ~ W0q * s)
    packed: np.ndarray      # (G, H16, 4) int8, 64-byte aligned: packed[g, j, t] = W0q[4 g + t, j], zeros past D, H0
    input_scales: np.ndarray  # (H16,) float32, aligned: s / 255, zeros past H0 (acc's unit)


def quantize_layer0(W0: np.ndarray) -> Int8Layer0:
    """W0 (D, H0) float -> its int8 form (module docstring: per-output symmetric scales).
    Raises ValueError for a W0 that is not 2-D or holds NaN or inf."""
    W0 = np.asarray(W0, dtype=np.float64)
    if W0.ndim != 2 or not np.isfinite(W0).all():
        raise ValueError(f"quantize_layer0: W0 must be a finite (D, H0) array, got shape {W0.shape}")
    D, H0 = W0.shape
    peak = np.abs(W0).max(axis=0)                                   # (H0,)
    s = np.where(peak > 0, peak / WEIGHT_LEVELS, 1.0)               # (H0,) float64
    Wq = np.clip(np.rint(W0 / s), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)   # (D, H0)
    G, H16 = -(-D // 4), -(-H0 // 16) * 16
    padded = np.zeros((4 * G, H16), dtype=np.int8)
    padded[:D, :H0] = Wq
    packed = aligned_copy(np.ascontiguousarray(padded.reshape(G, 4, H16).transpose(0, 2, 1)))   # (G, H16, 4)
    input_scales = aligned_zeros(H16, np.float32)
    input_scales[:H0] = s / INPUT_LEVELS
    return Int8Layer0(Wq, s.astype(np.float32), packed, input_scales)


def quantize_inputs(X: np.ndarray) -> np.ndarray:
    """X (N, D) in [0, 1] -> (N, D) uint8, round(255 x) in float32 (the kernels' rounding)."""
    X = np.asarray(X, dtype=np.float32)
    return np.rint(X * np.float32(INPUT_LEVELS)).astype(np.uint8)


def reference_logits(layer0: Int8Layer0, b0, weights, biases, activation: str, X) -> np.ndarray:
    """The int8 forward in NumPy: logits (N, C) float64 of X (N, D) in [0, 1]. layer0 from
    ``quantize_layer0``, b0 (H0,) its biases, weights/biases the float layers 1.. (lists)."""
    from fastnn.backends import numpy_backend

    acc = quantize_inputs(X).astype(np.int64) @ layer0.weights.astype(np.int64)      # (N, H0), exact
    H0 = layer0.weights.shape[1]
    z = acc * layer0.input_scales[:H0].astype(np.float64) + np.asarray(b0, np.float64)   # (N, H0)
    for W, b in zip(weights, biases):
        a = getattr(numpy_backend, activation)(z)                                    # relu, sigmoid or tanh
        z = a @ np.asarray(W, np.float64) + np.asarray(b, np.float64)                  # (N, n_out)
    return z
