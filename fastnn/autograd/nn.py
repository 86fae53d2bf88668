"""Neurons, layers and MLPs built from scalar ``Value``s (micrograd's ``nn.py``, extended).

``Neuron(nin)`` computes act(w . x + b); ``Layer(nin, nout)`` is ``nout`` neurons side by side;
``MLP(nin, [h1, ..., C])`` stacks layers, the last one linear (it outputs logits).
"""
from __future__ import annotations

import math
import random

from fastnn.autograd.engine import Value, dot, value_sum


class Module:
    """Something with parameters."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """One unit: act(sum_i w_i x_i + b), with He-scaled weights for ReLU and Xavier-scaled otherwise.

    Args:
        nin: number of inputs (fan_in). nonlin: apply the activation (False: linear unit).
        activation: ``relu``, ``tanh`` or ``sigmoid``. rng: a ``random.Random`` for the weights.
    """

    def __init__(self, nin: int, nonlin: bool = True, activation: str = "relu", rng: random.Random | None = None):
        if activation not in ("relu", "tanh", "sigmoid"):
            raise ValueError(f"unknown activation {activation!r}; choose relu, tanh or sigmoid")
        rng = rng or random.Random(0)
        std = math.sqrt(2.0 / nin) if activation == "relu" else math.sqrt(1.0 / nin)
        self.w = [Value(rng.gauss(0.0, std)) for _ in range(nin)]
        self.b = Value(0.0)
        self.nonlin = nonlin
        self.activation = activation

    def __call__(self, x):
        if len(x) != len(self.w):
            raise ValueError(f"Neuron with {len(self.w)} inputs called on {len(x)} values")
        act = dot(self.w, x) + self.b
        return getattr(act, self.activation)() if self.nonlin else act

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        kind = self.activation.capitalize() if self.nonlin else "Linear"
        return f"{kind}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons reading the same ``nin`` inputs; extra keyword arguments go to ``Neuron``."""

    def __init__(self, nin: int, nout: int, **kwargs):
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x):
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers nin -> nouts[0] -> ... -> nouts[-1]; hidden layers nonlinear, the last linear.

    Args:
        nin: inputs. nouts: layer widths, the last being the number of outputs (logits).
        activation: hidden activation. seed: seeds the weights.
    """

    def __init__(self, nin: int, nouts: list[int], activation: str = "relu", seed: int = 0):
        rng = random.Random(seed)
        sizes = [nin] + list(nouts)
        self.layers = [Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, activation=activation, rng=rng)
                       for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


def softmax_cross_entropy(logits: list[Value], label: int) -> Value:
    """-log softmax(logits)[label], computed as log-sum-exp(logits - m) - (logits[label] - m).

    m is the largest logit, taken as a constant (the loss does not depend on it), so no
    exp overflows however large the logits are.
    """
    if not 0 <= label < len(logits):
        raise ValueError(f"label {label} out of range [0, {len(logits)})")
    m = max(v.data for v in logits)
    shifted = [v - m for v in logits]
    return value_sum(s.exp() for s in shifted).log() - shifted[label]
