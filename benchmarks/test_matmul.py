"""Hand-written matmul against BLAS at the network's shapes: GFLOP/s = 2 m k n / time.

numpy calls BLAS (OpenBLAS); numba and cython are our loop nests; torch for reference.
Dense random float32 inputs (no zeros to skip).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnn.backends import available_backends, get_backend

from .conftest import record

SHAPES = [(64, 784, 128), (64, 128, 64)]


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython", "torch"])
@pytest.mark.parametrize("m,k,n", SHAPES, ids=[f"{m}x{k}@{k}x{n}" for m, k, n in SHAPES])
def test_matmul(benchmark, backend, m, k, n):
    if backend not in available_backends():
        pytest.skip(f"backend {backend} unavailable here")
    matmul = get_backend(backend).matmul
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = matmul(a, b)                                   # validate before timing
    err = float(np.max(np.abs(out - a.astype(np.float64) @ b.astype(np.float64))))
    assert err < 1e-3 * np.sqrt(k), f"{backend} matmul max |diff| {err}"
    benchmark.pedantic(matmul, args=(a, b), rounds=200, iterations=5, warmup_rounds=20)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        record(benchmark, f"matmul {m}x{k} @ {k}x{n} float32", backend,
               gflops=2 * m * k * n / stats.stats.median / 1e9)
