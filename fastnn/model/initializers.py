"""Weight initializations: each returns a (fan_in, fan_out) array for one layer.

- ``he``: N(0, 2 / fan_in). K. He et al., "Delving Deep into Rectifiers", ICCV 2015
  (arXiv:1502.01852). The default for ReLU.
- ``xavier``: U(-a, a), a = sqrt(6 / (fan_in + fan_out)). X. Glorot and Y. Bengio,
  "Understanding the difficulty of training deep feedforward neural networks", AISTATS 2010.
- ``lecun``: N(0, 1 / fan_in). Y. LeCun et al., "Efficient BackProp", 1998.
- ``normal``: N(0, 0.01^2), the small-random-numbers recipe.
- ``zeros``: all zero; every hidden unit then stays identical (kept to show why not).
Biases always start at zero.
"""
from __future__ import annotations

import numpy as np


def _he(fan_in, fan_out, rng):
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)


def _xavier(fan_in, fan_out, rng):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def _lecun(fan_in, fan_out, rng):
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(1.0 / fan_in)


def _normal(fan_in, fan_out, rng):
    return rng.standard_normal((fan_in, fan_out)) * 0.01


def _zeros(fan_in, fan_out, rng):
    return np.zeros((fan_in, fan_out))


INITIALIZERS = {"he": _he, "xavier": _xavier, "lecun": _lecun, "normal": _normal, "zeros": _zeros}


def init_weights(name: str, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """Draw one layer's weights (fan_in, fan_out) of ``dtype`` with initializer ``name``.

    Raises:
        ValueError: unknown initializer (the message lists the known ones).
    """
    if name not in INITIALIZERS:
        raise ValueError(f"unknown init {name!r}; choose one of {', '.join(INITIALIZERS)}")
    return INITIALIZERS[name](fan_in, fan_out, rng).astype(dtype)
