"""Training at every shape (``fastnn.speed.grid``): widths 64-1024, batches 16-1024, depths 1-4,
each point's trainers side by side: numba and cython (their fused paths), JAX (``jit`` +
``lax.scan``) and PyTorch (eager), interleaved round by round (A B C D A B C D), on the first
``SAMPLES`` MNIST training images, reported as the time of a 60,000-sample epoch (the subset's
median seconds x 60,000 / SAMPLES). Every trainer's first pass is its warm-up (compilation, the
data paged in) and is validated: a finite loss. The summary prints each trainer as a ratio to
jax-scan's; ``python -m fastnn.benchmarks_report`` draws ``grid.png`` with the compute limits.

Issue 23's targets, here: the fused paths at most 0.8 x jax-scan at every point, 0.5 x where
layer 0's sparse work dominates.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.speed.grid import EPOCH_SAMPLES, grid_points
from fastnn.training.factory import make_trainer
from fastnn.training.optim import make_optimizer

from .conftest import record_result

TRAINERS = ["numba", "cython", "jax-scan", "torch"]
SAMPLES = 12_800          # per timed pass (smoke run: SMOKE_SAMPLES)
SMOKE_SAMPLES = 1_024
ROUNDS = 3
POINTS = grid_points()


def _trainer(name, layers, dataset):
    backend = name.partition("-")[0]
    model = NeuralNetwork(layers, backend="numpy" if backend == "jax" else backend, seed=0)
    optimizer = make_optimizer("momentum", model, 0.05)
    if backend == "jax":
        jax_module = pytest.importorskip("fastnn.comparators.jax_trainer",
                                         reason="jax not installed: pip install -e '.[bench]'")
        return jax_module.JaxTrainer(model, optimizer, dataset, mode="scan")
    if backend not in available_backends():
        pytest.skip(f"backend {backend} unavailable here")
    return make_trainer(model, optimizer, dataset, log=lambda *a: None)


@pytest.mark.parametrize("point", POINTS, ids=[f"{p['sweep']}-{p['value']}" for p in POINTS])
def test_grid(benchmark, point, mnist_train):
    """One point of the grid: every trainer's epoch, interleaved; medians over ``ROUNDS`` rounds."""
    disabled = getattr(benchmark, "disabled", False)
    samples = SMOKE_SAMPLES if disabled else SAMPLES
    data = mnist_train.subset(slice(0, samples))
    density = float(np.count_nonzero(data.images)) / data.images.size            # share of non-zero pixels
    trainers, names = {}, []
    for name in TRAINERS:
        try:
            trainers[name] = _trainer(name, point["layers"], data)
            names.append(name)
        except pytest.skip.Exception as exc:
            print(f"skipped {name}: {exc}")
    rng = np.random.default_rng(0)
    times = {name: [] for name in names}

    def epoch(name):
        order = rng.permutation(samples)
        t0 = time.perf_counter()
        losses = trainers[name].run_epoch(order, point["batch"])
        seconds = time.perf_counter() - t0
        assert np.isfinite(losses).all(), f"{name}: a non-finite loss"
        return seconds

    for name in names:                                   # warm-up, validated
        epoch(name)

    def one_round():
        for name in names:
            times[name].append(epoch(name) * EPOCH_SAMPLES / samples)

    rounds = 1 if disabled else ROUNDS
    benchmark.group = f"grid epoch, {point['sweep']} {point['value']}, interleaved"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    per_trainer = {name: {"median_s": float(np.median(t)), "min_s": float(np.min(t)), "times_s": t,
                          "sweep": point["sweep"], "value": point["value"], "layers": point["layers"],
                          "batch": point["batch"], "density": density} for name, t in times.items()}
    benchmark.extra_info.update({"interleaved": per_trainer, "samples": samples})
    if not disabled:
        for name, r in per_trainer.items():
            record_result(f"grid epoch, {point['sweep']} {point['value']}", name, r["median_s"], r["min_s"],
                          times_s=r["times_s"])
