"""Every kernel of the interface x every available backend x the sizes that matter.

Sizes: the network's own shapes at batch 64 and 256, one larger matmul (1024^3), and for the
Python-loop ``reference`` backend only small sizes (batch 8; ids and groups say "small").
Groups are named by kernel and size, so the table reads kernel by kernel across backends.
``extra_info``: backend, kernel, size, and for matmul its FLOP count and GFLOP/s.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnn.backends import available_backends, get_backend

from .conftest import record

FAST = [b for b in ("numpy", "numba", "cython", "torch") if b in available_backends()]

MATMUL_SHAPES = [(b, k, n) for b in (64, 256) for k, n in ((784, 128), (128, 64), (64, 10))] + [(1024, 1024, 1024)]
MATMUL_SMALL = [(8, 128, 64), (8, 64, 10)]
ELEMENTWISE = [(64, 128), (256, 128)]
ELEMENTWISE_SMALL = [(8, 128)]
SOFTMAX = [(64, 10), (256, 10)]
SOFTMAX_SMALL = [(8, 10)]


def _cases(fast_sizes, small_sizes):
    cases = [pytest.param(b, s, id=f"{b}-{'x'.join(map(str, s))}") for s in fast_sizes for b in FAST]
    cases += [pytest.param("reference", s, id=f"reference-small-{'x'.join(map(str, s))}") for s in small_sizes]
    return cases


def _run(benchmark, group, backend, kernel, size, fn, *args, flop=None):
    benchmark.group = group + (" (small: reference)" if backend == "reference" else "")
    benchmark.extra_info.update({"backend": backend, "kernel": kernel, "size": list(size)})
    if flop:
        benchmark.extra_info["flop"] = flop
    fn(*args)                                        # compile / warm up before timing
    benchmark(fn, *args)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and flop:
        gflops = flop / stats.stats.median / 1e9
        benchmark.extra_info["gflops"] = gflops
        record(benchmark, f"kernel {group}", backend, gflops=gflops)


@pytest.mark.parametrize("backend,shape", _cases(MATMUL_SHAPES, MATMUL_SMALL))
def test_matmul(benchmark, backend, shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    _run(benchmark, f"matmul {m}x{k} @ {k}x{n}", backend, "matmul", shape, get_backend(backend).matmul, a, b,
         flop=2 * m * k * n)


@pytest.mark.parametrize("backend,shape", _cases(ELEMENTWISE, ELEMENTWISE_SMALL))
def test_relu(benchmark, backend, shape):
    z = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    _run(benchmark, f"relu {shape[0]}x{shape[1]}", backend, "relu", shape, get_backend(backend).relu, z)


@pytest.mark.parametrize("backend,shape", _cases(ELEMENTWISE, ELEMENTWISE_SMALL))
def test_relu_backward(benchmark, backend, shape):
    rng = np.random.default_rng(0)
    grad, z = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    _run(benchmark, f"relu_backward {shape[0]}x{shape[1]}", backend, "relu_backward", shape,
         get_backend(backend).relu_backward, grad, z)


@pytest.mark.parametrize("backend,shape", _cases(SOFTMAX, SOFTMAX_SMALL))
def test_softmax_cross_entropy(benchmark, backend, shape):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape, dtype=np.float32)
    labels = rng.integers(0, shape[1], shape[0])
    _run(benchmark, f"softmax_cross_entropy {shape[0]}x{shape[1]}", backend, "softmax_cross_entropy", shape,
         get_backend(backend).softmax_cross_entropy, logits, labels)


@pytest.mark.parametrize("backend,shape", _cases(SOFTMAX, SOFTMAX_SMALL))
def test_softmax_cross_entropy_backward(benchmark, backend, shape):
    rng = np.random.default_rng(0)
    probs = rng.random(shape, dtype=np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, shape[1], shape[0])
    _run(benchmark, f"softmax_cross_entropy_backward {shape[0]}x{shape[1]}", backend,
         "softmax_cross_entropy_backward", shape, get_backend(backend).softmax_cross_entropy_backward, probs, labels)
