"""Per-image input normalization: the background level subtracted, the ink stretched to [0, 1].

Contract: ``normalize_background(X)`` maps each row of X (N, D) float in [0, 1] to
(x - b) / (p - b) clipped to [0, 1], with b the row's median (the background: most pixels of a
digit image are background) and p its maximum (the brightest ink); a row with p - b < 1/255
(no ink) becomes zeros. ``normalize_images`` does the same for uint8 images (N, H, W), rounded.

What it is for: a model trained on digits on a black background reads a grey background
(brightness, fog) or a washed-out image (low contrast) as ink. Subtracting the background and
stretching the ink first undoes a uniform brightness change exactly, a contrast change about
the mean exactly, and a smooth haze in part. It is the identity on MNIST's own images
(background 0, brightest ink 255) and idempotent. A model trained with it records it
(``NeuralNetwork.input_norm``: "background") and applies it to every input it is given.
"""
from __future__ import annotations

import numpy as np

__all__ = ["INPUT_NORMS", "normalize_background", "normalize_images"]

INPUT_NORMS = ("none", "background")
MIN_RANGE = 1.0 / 255.0


def normalize_background(X: np.ndarray) -> np.ndarray:
    """X (N, D) float in [0, 1] -> a new (N, D) array of X's dtype, each row's background
    subtracted and its ink stretched to [0, 1] (see the module docstring)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be (N, D), got shape {X.shape}")
    if X.size == 0:
        return X.copy()
    background = np.median(X, axis=1, keepdims=True)                               # (N, 1)
    span = X.max(axis=1, keepdims=True) - background                                # (N, 1)
    inked = span >= MIN_RANGE
    out = (X - background) / np.where(inked, span, 1)                               # (N, D)
    np.clip(out, 0, 1, out=out)
    out *= inked
    return out.astype(X.dtype, copy=False)


def normalize_images(images: np.ndarray) -> np.ndarray:
    """images (N, H, W) uint8 -> (N, H, W) uint8, each normalized as ``normalize_background`` and
    rounded."""
    images = np.asarray(images)
    if images.ndim < 2 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W) uint8, got {images.shape} {images.dtype}")
    flat = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)      # (N, D)
    return np.rint(normalize_background(flat) * 255).astype(np.uint8).reshape(images.shape)
