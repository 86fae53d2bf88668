"""examples/mnist.py, the whole training loop on the public API: a short run reaches its target,
and a target out of reach fails loudly (exit status 1, the accuracy named)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastnn.backends import available_backends

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist.py"
BACKEND = next(b for b in ("numba", "cython", "numpy") if b in available_backends())


@pytest.mark.slow
@pytest.mark.parametrize("target, status", [("90", 0), ("99.9", 1)], ids=["reached", "out of reach"])
def test_the_example_trains_and_fails_loudly_below_its_target(mnist_dir, target, status):
    env = {**os.environ, "EPOCHS": "1", "TARGET": target, "BACKEND": BACKEND, "FASTNN_DATA_DIR": str(mnist_dir)}
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == status, done.stdout + done.stderr
    assert done.stdout.startswith("epoch  1  loss ")
    if status:
        assert "FAIL: test accuracy" in done.stderr and "below the target 99.9%" in done.stderr
