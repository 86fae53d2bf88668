"""Training speed per backend: one full MNIST epoch (60,000 samples) and one step, batch 64,
784-128-64-10 ReLU, SGD with momentum 0.9, lr 0.05; the epoch reported as a ratio to PyTorch's
(``torch.nn`` + autograd + ``torch.optim``), all in one run.

numba and cython take their fused path; ``numba-kernels`` is numba kernel by kernel
(``--no-fused``), to show what the fused path saves; numpy runs kernel by kernel (its only
path); ``reference`` (Python loops) only in the step benchmark. Each epoch round trains on from
where the previous one stopped (same model), as epochs do.

FLOP counts are the dense-equivalent model FLOPs (2 per multiply-add of every product in the
forward and backward pass); the fused path skips zero pixels, so it does fewer than it is
credited with, and its GFLOP/s is an effective rate.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.optim import make_optimizer
from fastnn.train import TrainConfig, make_trainer

from .conftest import record

LAYERS = [784, 128, 64, 10]
BATCH = 64
BACKENDS = ["torch", "numpy", "numba-kernels", "numba", "cython"]


def step_flop(batch: int = BATCH, layers=LAYERS) -> int:
    """Forward x W, backward grad W = a^T g, backward grad a = g W^T (not for the input layer)."""
    products = [n_in * n_out for n_in, n_out in zip(layers[:-1], layers[1:])]
    return 2 * batch * (2 * sum(products) + sum(products[1:]))


def _trainer(name, dataset):
    backend = name.split("-")[0]
    if backend not in available_backends():
        pytest.skip(f"backend {backend} unavailable here")
    cfg = TrainConfig(backend=backend, fused=not name.endswith("-kernels"))
    model = NeuralNetwork(LAYERS, backend=backend, seed=0)
    return make_trainer(cfg, model, make_optimizer("momentum", model, 0.05), dataset, log=lambda *a: None)


@pytest.mark.parametrize("name", BACKENDS)
def test_epoch(benchmark, name, mnist_train):
    trainer = _trainer(name, mnist_train)
    rng = np.random.default_rng(0)
    n_steps = -(-len(mnist_train) // BATCH)

    def epoch():
        order = rng.permutation(len(mnist_train))
        losses = [trainer.run_steps(order, first, 32, BATCH) for first in range(0, n_steps, 32)]
        return float(np.concatenate(losses).mean())

    benchmark.group = "epoch (60,000 MNIST samples)"
    flop = n_steps * step_flop()
    benchmark.extra_info.update({"backend": name, "flop": flop})
    epoch()                                             # warm-up: compile/load caches, page in data
    mean_loss = benchmark.pedantic(epoch, rounds=7, iterations=1)
    assert np.isfinite(mean_loss)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gflops"] = flop / stats.stats.median / 1e9
        record(benchmark, "epoch (60,000 MNIST samples)", name, mean_loss=mean_loss,
               gflops=benchmark.extra_info["gflops"])


@pytest.mark.parametrize("name", ["reference", *BACKENDS])
def test_step(benchmark, name, mnist_train):
    """One training step (batch 64) through the trainer, Python call included."""
    trainer = _trainer(name, mnist_train)
    order = np.random.default_rng(0).permutation(len(mnist_train))
    n_steps = len(order) // BATCH
    state = {"step": 0}

    def step():
        state["step"] = (state["step"] + 1) % n_steps
        return trainer.run_steps(order, state["step"], 1, BATCH)

    benchmark.group = "training step (batch 64)"
    flop = step_flop()
    benchmark.extra_info.update({"backend": name, "flop": flop})
    step()
    if name == "reference":
        benchmark.pedantic(step, rounds=3, iterations=1)
    else:
        benchmark(step)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gflops"] = flop / stats.stats.median / 1e9
        record(benchmark, "training step (batch 64)", name, gflops=benchmark.extra_info["gflops"])
