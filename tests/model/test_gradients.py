"""``NeuralNetwork.backward`` against central differences and against torch autograd (float64)."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork, available_backends

ACTS = ["relu", "sigmoid", "tanh"]


def small_net(activation, backend="numpy", seed=0):
    net = NeuralNetwork([6, 5, 4, 3], activation=activation, init="xavier", backend=backend,
                        dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for b in net.biases:                       # non-zero biases so every term is exercised
        b[:] = rng.standard_normal(b.shape) * 0.1
    return net


def batch(n=5, d=6, c=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, c, n)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("activation", ACTS)
def test_backward_matches_central_differences(activation, backend):
    net = small_net(activation, backend)
    X, y = batch()
    net.backward(X, y)
    eps = 1e-6
    for params, grads in ((net.weights, net.grad_weights), (net.biases, net.grad_biases)):
        for p, g in zip(params, grads):
            assert g.shape == p.shape and g.dtype == np.float64
            numeric = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + eps
                up = net.loss(X, y)[0]
                p[idx] = old - eps
                down = net.loss(X, y)[0]
                p[idx] = old
                numeric[idx] = (up - down) / (2 * eps)
            # central differences are accurate to ~eps^2 plus rounding ~1e-16/eps
            np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.9])
def test_backward_matches_torch_autograd(activation, n, smoothing, torch):
    net = small_net(activation)
    X, y = batch(n=n)
    loss = net.backward(X, y, label_smoothing=smoothing)
    Ws = [torch.tensor(W, requires_grad=True) for W in net.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in net.biases]
    act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[activation]
    a = torch.tensor(X)
    for i, (W, b) in enumerate(zip(Ws, bs)):
        a = a @ W + b
        if i < len(Ws) - 1:
            a = act(a)
    t_loss = torch.nn.functional.cross_entropy(a, torch.tensor(y), label_smoothing=smoothing)
    t_loss.backward()
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-12)
    for g, t in zip(net.grad_weights + net.grad_biases, Ws + bs):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_dropout_gradient_uses_the_same_mask():
    """With dropout on, backward's gradient equals the finite difference of the same masked net."""
    net = NeuralNetwork([6, 8, 3], dtype=np.float64, seed=3, dropout=0.5)
    X, y = batch()
    state = net.rng.bit_generator.state
    net.backward(X, y)
    g = net.grad_weights[0].copy()
    eps = 1e-6

    def masked_loss():
        net.rng.bit_generator.state = state       # replay the same dropout mask
        return net.backward(X, y)

    p = net.weights[0]
    for idx in [(0, 0), (3, 5), (5, 7)]:
        old = p[idx]
        p[idx] = old + eps
        up = masked_loss()
        p[idx] = old - eps
        down = masked_loss()
        p[idx] = old
        np.testing.assert_allclose(g[idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, float("nan")])
def test_label_smoothing_out_of_range_is_refused(smoothing):
    X, y = batch()
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        small_net("relu").backward(X, y, label_smoothing=smoothing)
