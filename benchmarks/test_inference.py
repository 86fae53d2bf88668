"""Inference per backend: latency of one image (batch 1) and throughput on the 10,000 MNIST
test images (``NeuralNetwork.predict``, 4,096 rows per call), in evaluation mode."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.data import load_dataset

from .conftest import record

BACKENDS = [b for b in ("numpy", "numba", "cython", "torch") if b in available_backends()]
LAYERS = [784, 128, 64, 10]
FORWARD_FLOP = 2 * sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:]))


@pytest.fixture(scope="module")
def mnist_test():
    try:
        return load_dataset("mnist", "test")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"real MNIST unavailable: {exc}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_latency_one_image(benchmark, backend, mnist_test):
    model = NeuralNetwork(LAYERS, backend=backend, seed=0)
    x = mnist_test.features(np.arange(1))                       # (1, 784)
    benchmark.group = "inference latency (batch 1)"
    benchmark.extra_info.update({"backend": backend, "flop": FORWARD_FLOP})
    model.predict(x)
    benchmark(model.predict, x)
    record(benchmark, "inference latency (batch 1)", backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_throughput_test_set(benchmark, backend, mnist_test):
    model = NeuralNetwork(LAYERS, backend=backend, seed=0)
    X = mnist_test.features()                                   # (10000, 784)
    benchmark.group = "inference throughput (10,000 test images)"
    flop = FORWARD_FLOP * len(X)
    benchmark.extra_info.update({"backend": backend, "flop": flop})
    model.predict(X)
    benchmark.pedantic(model.predict, args=(X,), rounds=10, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["images_per_s"] = len(X) / stats.stats.median
        benchmark.extra_info["gflops"] = flop / stats.stats.median / 1e9
        record(benchmark, "inference throughput (10,000 test images)", backend,
               gflops=benchmark.extra_info["gflops"], images_per_s=benchmark.extra_info["images_per_s"])
