"""The ``numba`` backend: the kernel interface's checked wrappers around ``kernels.py`` (flat
``@njit(cache=True)`` loop nests: a second process loads them from Numba's on-disk cache), and
the fused paths: ``fused_steps`` (``fused_step.py``) runs whole training steps in one call,
``fused_forward`` (``fused_forward.py``) a whole forward pass, ``augment_csr`` (``augment.py``)
the augmentation's moved rows; their arguments are the named groups of
``fastnn.backends.fused_interface``. ``fastnn/backends/cython/`` holds the same files.

Threads: Numba uses ``NUMBA_NUM_THREADS`` (default: all cores). No BLAS: dense products run
fastnn's packed GEMM (``gemm.py``), on the calling thread inside the fused path's parallel loop.
"""
from __future__ import annotations

import numba
import numpy as np

from fastnn.backends._checks import (
    GEMM_MIN_K,
    GEMM_PARALLEL_MIN_FMAS,
    as_float_array,
    check_matmul,
    check_same_shape,
    prefers_gemm,
    run_elementwise,
    run_softmax,
    run_softmax_cross_entropy,
    run_softmax_cross_entropy_backward,
)
from fastnn.backends.numba import cache_lock  # noqa: F401 - first: Numba's cache, locked across processes
from fastnn.backends.numba.gemm import ISA as GEMM_ISA  # noqa: F401 - the micro-kernel in use, for users
from fastnn.backends.numba.gemm import gemm, gemm_parallel
from fastnn.backends.numba.kernels import (
    _matmul_kernel,
    _relu_backward_kernel,
    _relu_kernel,
    _sigmoid_backward_kernel,
    _sigmoid_kernel,
    _softmax_xent_backward_kernel,
    _softmax_xent_kernel,
    _tanh_backward_kernel,
    _tanh_kernel,
    dense_matmul,
)

NAME = "numba"
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)   # native order: the compiled path's


# ---------------------------------------------------------------- the kernel interface
def matmul(a, b):
    """(m, k) @ (k, n) -> (m, n) with hand-written loop nests (no BLAS).

    Chosen by the input: a mostly-zero ``a`` (MNIST pixels) or a shallow k goes to the
    row-axpy kernel, which skips zero entries; a dense ``a`` with a deep k goes to the packed
    GEMM (``gemm.py``: packing and an AVX-512/AVX2 micro-kernel, ``GEMM_ISA`` names it), which
    cannot skip zeros. (``_checks.prefers_gemm`` decides.) Native C-contiguous float arrays of
    one dtype go first to ``kernels.dense_matmul``, which makes the same choice in compiled code.
    """
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 2 and b.ndim == 2 and a.dtype is b.dtype
            and (a.dtype is _FLOAT32 or a.dtype is _FLOAT64) and a.flags.c_contiguous and b.flags.c_contiguous):
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        if dense_matmul(a, b, out, GEMM_MIN_K, GEMM_PARALLEL_MIN_FMAS):        # the usual call, compiled
            return out
    a, b = check_matmul(a, b)
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if out.size == 0:
        return out
    if prefers_gemm(a):
        one = a.dtype.type(1)
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        (m, k), n = a.shape, b.shape[1]
        args = (False, False, m, n, k, one, a.reshape(-1), k, b.reshape(-1), n, one - one, out.reshape(-1), n, 1)
        if m * k * n >= GEMM_PARALLEL_MIN_FMAS:
            gemm_parallel(*args, numba.get_num_threads())
        else:
            gemm(*args)
    else:
        # the inner loop wants rows of b contiguous; a may be any layout (read one element at a time)
        _matmul_kernel(a, np.ascontiguousarray(b), out)
    return out


def relu(z):
    """a = max(z, 0), elementwise."""
    return run_elementwise(_relu_kernel, as_float_array(z, "z"))


def relu_backward(grad_out, z):
    """dL/dz = dL/da * [z > 0]."""
    return run_elementwise(_relu_backward_kernel, *check_same_shape(grad_out, z, "z"))


def sigmoid(z):
    """a = 1 / (1 + exp(-z)), stable for large |z|."""
    return run_elementwise(_sigmoid_kernel, as_float_array(z, "z"))


def sigmoid_backward(grad_out, out):
    """dL/dz = dL/da * a * (1 - a), with ``out`` = sigmoid(z)."""
    return run_elementwise(_sigmoid_backward_kernel, *check_same_shape(grad_out, out, "out"))


def tanh(z):
    """a = tanh(z)."""
    return run_elementwise(_tanh_kernel, as_float_array(z, "z"))


def tanh_backward(grad_out, out):
    """dL/dz = dL/da * (1 - a^2), with ``out`` = tanh(z)."""
    return run_elementwise(_tanh_backward_kernel, *check_same_shape(grad_out, out, "out"))


def softmax(logits):
    """probs (N, C), row-wise softmax of logits (N, C)."""
    return run_softmax(_softmax_xent_kernel, logits)


def softmax_cross_entropy(logits, labels):
    """(mean loss as float, probs (N, C)) for logits (N, C) and labels (N,); log-sum-exp stable."""
    return run_softmax_cross_entropy(_softmax_xent_kernel, logits, labels)


def softmax_cross_entropy_backward(probs, labels):
    """dL/dlogits (N, C) = (probs - one_hot(labels)) / N."""
    return run_softmax_cross_entropy_backward(_softmax_xent_backward_kernel, probs, labels)



# ---------------------------------------------------------------- the fused paths
# The whole evaluation-mode forward pass in one compiled call (fastnn.inference.forward), and whole
# training steps in one compiled call (fastnn/backends/numba/fused_step.py; arguments in fastnn.training.fused).
from fastnn.backends.fused_interface import ACT_CODES  # noqa: E402,F401
from fastnn.backends.numba._shared import read_cycles  # noqa: E402,F401
from fastnn.backends.numba.augment import augment_csr  # noqa: E402,F401
from fastnn.backends.numba.fused_forward import fused_forward  # noqa: E402,F401
from fastnn.backends.numba.fused_step import fused_steps  # noqa: E402,F401


def num_threads() -> int:
    """Threads the fused path uses: Numba's (``NUMBA_NUM_THREADS``, default every core)."""
    return numba.get_num_threads()


_CYCLE_RATE: list[float] = []


def cycles_per_second() -> float:
    """Rate of ``read_cycles()`` (the CPU's time-stamp counter), measured once against perf_counter."""
    if not _CYCLE_RATE:
        import time

        read_cycles()
        t0, c0 = time.perf_counter(), read_cycles()
        time.sleep(0.05)
        t1, c1 = time.perf_counter(), read_cycles()
        _CYCLE_RATE.append((c1 - c0) / (t1 - t0))
    return _CYCLE_RATE[0]


def compiled_here() -> int:
    """How many kernel specializations this process has compiled itself (Numba's cache misses;
    0 when every kernel called so far came from the on-disk cache)."""
    import sys

    from numba.core.registry import CPUDispatcher

    total = 0
    for name in ("kernels", "fused_step", "fused_forward", "augment", "_shared", "simd"):
        module = sys.modules.get(f"{__package__}.{name}")
        for obj in vars(module).values() if module else ():
            if isinstance(obj, CPUDispatcher):
                total += sum(obj.stats.cache_misses.values())
    return total


def fused_path_cached() -> bool:
    """Whether Numba's on-disk cache already holds the fused kernel (else the first call compiles it)."""
    import os
    from pathlib import Path

    if numba.config.CACHE_DIR:                          # NUMBA_CACHE_DIR: Numba uses only that
        folders = [Path(numba.config.CACHE_DIR)]
    else:                                               # beside the source, else the user's cache
        folders = [Path(__file__).parent / "__pycache__", Path.home() / ".cache" / "numba"]
    return any(f.is_dir() and os.access(f, os.R_OK) and any(f.rglob("fused_step._fused_steps-*.nbi"))
               for f in folders)
