"""The ``cython`` backend: a thin wrapper over the compiled kernels beside it (``kernels.pyx``,
``fused_step.pyx``, ``fused_forward.pyx``, ``augment.pyx``; shared inlines in ``_shared.pxd``).

The extensions are built by ``setup.py`` during
``pip install -e .``. It is compiled with bounds checks off, so this wrapper does every
check first (shape, rank, dtype, labels, contiguity) with the same errors as the other
backends; the kernels only ever see C-contiguous arrays of one float dtype. (``matmul``'s usual
call, dense arrays that already are such, is checked in compiled code by ``kernels.dense_matmul``,
which hands anything else back to the checks here.)

``matmul`` is hand-written (no BLAS), with two loop nests chosen as in the numba backend: for
dense inputs, the packed GEMM of ``fastnn/backends/cython/gemm.h`` (BLIS-style packing and an
AVX-512 or AVX2 micro-kernel chosen at run time, ``gemm_isa()``); for mostly-zero inputs such as
MNIST pixels, blocks of 4 output rows accumulated from rows of b, zero entries skipped. OpenMP
threads split the work when the build has OpenMP (``openmp_threads()``; thread count: ``OMP_NUM_THREADS``).

``fused_steps`` runs whole training steps (see ``fastnn.training.fused``) and ``fused_forward`` the whole
forward pass of a batch (see ``fastnn.inference.forward``), the same algorithms as the numba backend's.
"""
from __future__ import annotations

import numpy as np

from fastnn.backends import omp_threads
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
from fastnn.backends.fused_interface import ACT_CODES  # noqa: F401 - the fused path's activation codes

try:
    from fastnn.backends.cython import augment as _augment
    from fastnn.backends.cython import fused_forward as _fused_forward
    from fastnn.backends.cython import fused_step as _fused_step
    from fastnn.backends.cython import kernels as _ck
except ImportError as exc:  # reported by get_backend("cython") with the build command
    raise ImportError(
        "the compiled Cython kernels are not built (fastnn.backends.cython.kernels is missing). "
        "Build them from the project folder with: pip install -e . "
        "(needs a C compiler; Cython and NumPy come from the build requirements)") from exc

NAME = "cython"


def openmp_threads() -> int:
    """Threads an OpenMP ``prange`` uses here (1 when the extension was built without OpenMP)."""
    return _ck.openmp_threads()


def gemm_isa() -> str:
    """The micro-kernel the packed GEMM chose for this CPU: 'avx512', 'avx2' or 'generic'
    (``FASTNN_GEMM_ISA=avx2`` or ``generic`` in the environment asks for a narrower one)."""
    return _ck.gemm_isa()


def num_threads() -> int:
    """Threads the fused path uses: ``OMP_NUM_THREADS``, else every core (1 without OpenMP)."""
    if openmp_threads() == 1:
        return 1
    return omp_threads()


def matmul(a, b):
    """(m, k) @ (k, n) -> (m, n) with hand-written loop nests (no BLAS); density of ``a`` judged
    on its first 8 rows, as in the numba backend. Dense C-contiguous float arrays of one dtype
    go straight to the packed GEMM (``kernels.dense_matmul``); anything else is checked and
    converted here first."""
    out = _ck.dense_matmul(a, b, GEMM_MIN_K, GEMM_PARALLEL_MIN_FMAS, num_threads)
    if out is not None:
        return out
    a, b = check_matmul(a, b)
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if out.size:
        if a.shape[1] == 0:
            out[...] = 0
        else:
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
            if prefers_gemm(a):
                big = a.shape[0] * a.shape[1] * b.shape[1] >= GEMM_PARALLEL_MIN_FMAS
                _ck.gemm(a, b, out, num_threads() if big else 1)
            else:
                _ck.matmul(a, b, out)
    return out


def relu(z):
    """a = max(z, 0), elementwise."""
    return run_elementwise(_ck.relu, as_float_array(z, "z"))


def relu_backward(grad_out, z):
    """dL/dz = dL/da * [z > 0]."""
    return run_elementwise(_ck.relu_backward, *check_same_shape(grad_out, z, "z"))


def sigmoid(z):
    """a = 1 / (1 + exp(-z)), stable for large |z|."""
    return run_elementwise(_ck.sigmoid, as_float_array(z, "z"))


def sigmoid_backward(grad_out, out):
    """dL/dz = dL/da * a * (1 - a), with ``out`` = sigmoid(z)."""
    return run_elementwise(_ck.sigmoid_backward, *check_same_shape(grad_out, out, "out"))


def tanh(z):
    """a = tanh(z)."""
    return run_elementwise(_ck.tanh_forward, as_float_array(z, "z"))


def tanh_backward(grad_out, out):
    """dL/dz = dL/da * (1 - a^2), with ``out`` = tanh(z)."""
    return run_elementwise(_ck.tanh_backward, *check_same_shape(grad_out, out, "out"))


def softmax(logits):
    """probs (N, C), row-wise softmax of logits (N, C)."""
    return run_softmax(_ck.softmax_xent, logits)


def softmax_cross_entropy(logits, labels):
    """(mean loss as float, probs (N, C)) for logits (N, C) and labels (N,); log-sum-exp stable."""
    return run_softmax_cross_entropy(_ck.softmax_xent, logits, labels)


def softmax_cross_entropy_backward(probs, labels):
    """dL/dlogits (N, C) = (probs - one_hot(labels)) / N."""
    return run_softmax_cross_entropy_backward(_ck.softmax_xent_backward, probs, labels)


# Whole SGD steps in one compiled call, its groups checked (``fastnn.backends.fused_interface``).
fused_steps = _fused_step.fused_steps

# A call's rows moved by the augmentation (``fastnn.data.augment``) into a batch-ordered CSR.
augment_csr = _augment.augment_csr

# The whole evaluation-mode forward pass in one compiled call (``fastnn.inference.forward``); the
# compiled function itself, no wrapper: a batch-1 predict pays one call.
fused_forward = _fused_forward.fused_forward
same_arrays = _fused_forward.same_arrays
ForwardRunner = _fused_forward.ForwardRunner
Int8Runner = _fused_forward.Int8Runner          # the int8 forward's (fastnn.inference.int8)


def read_cycles() -> int:
    """The fused kernels' phase-timer clock: ``clock_gettime(CLOCK_MONOTONIC)`` in nanoseconds."""
    return _ck.read_cycles()


def cycles_per_second() -> float:
    """Rate of ``read_cycles()``: nanoseconds."""
    return 1e9
