"""Float64 NumPy formulas, written out independently of fastnn: the tests' oracle."""
import numpy as np


def softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits, labels):
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


def cross_entropy_grad(logits, labels):
    p = softmax(logits)
    p[np.arange(len(labels)), labels] -= 1.0
    return p / len(labels)


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))


ACTIVATIONS = {
    # name -> (forward, derivative expressed in (z, out))
    "relu": (lambda z: np.maximum(np.asarray(z, np.float64), 0.0), lambda z, a: (z > 0).astype(np.float64)),
    "sigmoid": (sigmoid, lambda z, a: a * (1 - a)),
    "tanh": (lambda z: np.tanh(np.asarray(z, np.float64)), lambda z, a: 1 - a * a),
}
