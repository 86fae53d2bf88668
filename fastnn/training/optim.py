"""Optimizers that update a ``NeuralNetwork``'s parameters in place from its gradients.

All take ``weight_decay`` (L2 regularization, lambda): the gradient of
(lambda / 2) * ||W||^2, i.e. lambda * W, is added to each weight gradient before
the update (biases are not decayed). This is "coupled" L2, as in PyTorch's SGD and Adam.

Call ``step()`` after ``model.backward(X, y)``.
"""
from __future__ import annotations

import numpy as np


class Optimizer:
    """Base class: holds the model, learning rate and weight decay."""

    def __init__(self, model, lr: float, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.model = model
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0  # steps taken

    def _params_and_grads(self):
        """Yield (param, grad) for every weight and bias; weight grads include the L2 term."""
        m = self.model
        if m.grad_weights is None:
            raise RuntimeError("no gradients: call model.backward(X, y) before optimizer.step()")
        for W, gW in zip(m.weights, m.grad_weights):
            if self.weight_decay:
                gW = gW + W.dtype.type(self.weight_decay) * W
            yield W, gW
        for b, gb in zip(m.biases, m.grad_biases):
            yield b, gb

    def step(self) -> None:
        raise NotImplementedError

    def __repr__(self):
        extra = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({extra})"

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (heavy ball, PyTorch's form):

        v <- momentum * v + g;   p <- p - lr * v

    (B. T. Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.)
    """

    def __init__(self, model, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(model, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.velocity = None

    def step(self) -> None:
        pairs = list(self._params_and_grads())
        if self.momentum and self.velocity is None:
            self.velocity = [np.zeros_like(p) for p, _ in pairs]
        lr = pairs[0][0].dtype.type(self.lr)
        mu = pairs[0][0].dtype.type(self.momentum)
        for i, (p, g) in enumerate(pairs):
            if self.momentum:
                v = self.velocity[i]
                v *= mu
                v += g
                g = v
            p -= lr * g
        self.t += 1

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "momentum": self.momentum}


class Adam(Optimizer):
    """Adam with bias correction. D. P. Kingma and J. Ba, "Adam: A Method for Stochastic
    Optimization", ICLR 2015 (arXiv:1412.6980), Algorithm 1:

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, model, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(model, lr, weight_decay)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.beta1, self.beta2, self.eps = float(b1), float(b2), float(eps)
        self.m = self.v = None

    def step(self) -> None:
        pairs = list(self._params_and_grads())
        if self.m is None:
            self.m = [np.zeros_like(p) for p, _ in pairs]
            self.v = [np.zeros_like(p) for p, _ in pairs]
        self.t += 1
        dt = pairs[0][0].dtype.type
        b1, b2 = dt(self.beta1), dt(self.beta2)
        step_size = dt(self.lr / (1 - self.beta1 ** self.t))
        v_correction = dt(1 - self.beta2 ** self.t)
        eps = dt(self.eps)
        for p, g, m, v in zip((p for p, _ in pairs), (g for _, g in pairs), self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= step_size * m / (np.sqrt(v / v_correction) + eps)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "betas": (self.beta1, self.beta2), "eps": self.eps}


OPTIMIZERS = ("sgd", "momentum", "adam")


def make_optimizer(name: str, model, lr: float, weight_decay: float = 0.0, momentum: float = 0.9) -> Optimizer:
    """Build an optimizer by name: ``sgd``, ``momentum`` (SGD with ``momentum``) or ``adam``."""
    if name == "sgd":
        return SGD(model, lr, momentum=0.0, weight_decay=weight_decay)
    if name == "momentum":
        return SGD(model, lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return Adam(model, lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
