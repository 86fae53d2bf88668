"""Launch-to-first-step time of a second ``--backend numba`` process: the compiled kernels come
from Numba's on-disk cache (``cache=True``), so nothing is compiled again."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fastnn.backends import available_backends

from .conftest import record

SCRIPT = """
import numpy as np
from fastnn import NeuralNetwork
from fastnn.data.datasets import Dataset
from fastnn.training.optim import make_optimizer
from fastnn.training.factory import make_trainer
rng = np.random.default_rng(0)
ds = Dataset(rng.integers(0, 256, (64, 784)).astype(np.uint8), rng.integers(0, 10, 64), list("0123456789"), "x")
model = NeuralNetwork([784, 128, 64, 10], backend="numba")
trainer = make_trainer(model, make_optimizer("momentum", model, 0.05), ds)
trainer.run_steps(np.arange(64), 0, 1, 64)
model.predict(ds.features())
"""


def launch():
    subprocess.run([sys.executable, "-c", SCRIPT], check=True)


def test_numba_second_process_start(benchmark):
    if "numba" not in available_backends():
        pytest.skip("numba unavailable")
    launch()                                              # the first process fills the cache
    benchmark.group = "start-up"
    benchmark.pedantic(launch, rounds=3, iterations=1)
    record(benchmark, "start-up: python launch to first numba training step", "numba")
