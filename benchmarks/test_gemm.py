"""fastnn's packed GEMM against the BLAS libraries, interleaved (A B C D A B C D) at each shape.

Entries: the numba and cython backends' ``matmul`` (dense inputs go to the packed GEMM:
``fastnn/backends/numba/gemm.py``, ``fastnn/backends/cython/gemm.h``) and the comparators of
``fastnn.comparators.matmul``: numpy (OpenBLAS), torch, JAX (XLA) and ONNX Runtime (MLAS), each
with ``OMP_NUM_THREADS`` threads. Shapes: the seed network's at batch 64 and 256, the wide
network's (784-1024-512-10) dense layer at the fused path's per-thread 32 rows and at 64, and
1024^3. Every entry's output is checked against a float64 product before it is timed. Each
round times every entry for about ``ROUND_SECONDS`` of calls, after a pause and a few untimed
calls (interleaved back to back, one library's spinning threads slowed the next one's by up to
10x: each runtime keeps its own thread pool on the same 2 cores); the summary gives the median
GFLOP/s over ``ROUNDS`` rounds and each entry as a share of the best BLAS in the same run
(issue 23's target: fastnn at 90% of the best).

    OMP_NUM_THREADS=2 python -m pytest benchmarks/test_gemm.py --benchmark-only
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from fastnn.backends import available_backends, get_backend, omp_threads
from fastnn.comparators.matmul import matmul_comparators

from .conftest import record_result

SHAPES = [(64, 784, 128), (64, 128, 64), (64, 64, 10), (256, 784, 128), (256, 128, 64),
          (32, 1024, 512), (64, 1024, 512), (1024, 1024, 1024)]
ROUNDS = 5
ROUND_SECONDS = 0.1
PAUSE_SECONDS = 0.1    # between entries: the last library's spinning worker threads go to sleep
FASTNN = [b for b in ("numba", "cython") if b in available_backends()]


def _entries():
    entries = {name: get_backend(name).matmul for name in FASTNN}
    entries.update(matmul_comparators(omp_threads()))
    return entries


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm(benchmark, shape):
    disabled = getattr(benchmark, "disabled", False)
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    expected = a.astype(np.float64) @ b
    entries = _entries()
    for name, matmul in entries.items():                     # validate (and warm up) before timing
        got = np.asarray(matmul(a, b))
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max() * np.sqrt(k), name
    calls = {}
    for name, matmul in entries.items():                     # calls per round: about ROUND_SECONDS
        t0 = time.perf_counter()
        matmul(a, b)
        calls[name] = max(1, int(ROUND_SECONDS / max(time.perf_counter() - t0, 1e-7)))
    times = {name: [] for name in entries}

    def one_round():
        for name, matmul in entries.items():
            count = 1 if disabled else calls[name]
            if not disabled:
                time.sleep(PAUSE_SECONDS)
                for _ in range(max(1, count // 10)):         # wakes this library's threads, untimed
                    matmul(a, b)
            t0 = time.perf_counter()
            for _ in range(count):
                matmul(a, b)
            times[name].append((time.perf_counter() - t0) / count)

    benchmark.group = f"gemm {m}x{k} @ {k}x{n}, interleaved"
    benchmark.pedantic(one_round, rounds=1 if disabled else ROUNDS, iterations=1)
    flop = 2 * m * k * n
    gflops = {name: flop / float(np.median(t)) / 1e9 for name, t in times.items()}
    best_blas = max(g for name, g in gflops.items() if name not in FASTNN)
    per_entry = {name: {"median_s": float(np.median(t)), "min_s": float(np.min(t)), "gflops": gflops[name],
                        "of_best_blas": gflops[name] / best_blas, "size": [m, k, n]} for name, t in times.items()}
    benchmark.extra_info.update({"interleaved": per_entry, "flop": flop})
    if not disabled:
        for name, r in per_entry.items():
            record_result(f"gemm {m}x{k} @ {k}x{n}", name, r["median_s"], r["min_s"], gflops=r["gflops"],
                          of_best_blas=r["of_best_blas"])
