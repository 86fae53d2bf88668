"""One full MNIST epoch (60,000 samples, batch 64, 784-128-64-10 ReLU, SGD momentum 0.9, lr 0.05)
per backend, in one run, reported as a ratio to PyTorch's (``torch.nn`` + autograd + ``torch.optim``).

numba and cython take their fused path; ``numba-kernels`` is numba kernel by kernel
(``--no-fused``), to show what the fused path saves; numpy runs kernel by kernel (its only path).
Each round trains on from where the previous one stopped (same model), as epochs do.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.optim import make_optimizer
from fastnn.train import TrainConfig, make_trainer

from .conftest import record

BACKENDS = ["torch", "numpy", "numba-kernels", "numba", "cython"]


@pytest.mark.parametrize("name", BACKENDS)
def test_epoch(benchmark, name, mnist_train):
    backend = name.split("-")[0]
    if backend not in available_backends():
        pytest.skip(f"backend {backend} unavailable here")
    cfg = TrainConfig(backend=backend, fused=not name.endswith("-kernels"))
    model = NeuralNetwork([784, 128, 64, 10], backend=backend, seed=0)
    optimizer = make_optimizer("momentum", model, 0.05)
    trainer = make_trainer(cfg, model, optimizer, mnist_train)
    rng = np.random.default_rng(0)
    n_steps = -(-len(mnist_train) // 64)

    def epoch():
        order = rng.permutation(len(mnist_train))
        losses = [trainer.run_steps(order, first, 32, 64) for first in range(0, n_steps, 32)]
        return float(np.concatenate(losses).mean())

    epoch()                                             # warm-up: compile/load caches, page in data
    mean_loss = benchmark.pedantic(epoch, rounds=7, iterations=1)
    assert np.isfinite(mean_loss)
    record(benchmark, "epoch (60,000 MNIST samples)", name, mean_loss=mean_loss)
