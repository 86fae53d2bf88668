"""The ``numba`` backend: every kernel a hand-written loop nest compiled by Numba.

Kernels are flat module-level ``@njit(cache=True)`` functions, so a second process loads
them from Numba's on-disk cache instead of compiling again. ``matmul`` is written out as
loop nests and never calls BLAS, so it shows what a hand-written kernel reaches: a row-axpy
kernel (rows of the output in parallel, each accumulated from rows of ``b`` in a contiguous
inner loop LLVM vectorizes, zero inputs skipped: the right one for MNIST pixels) and, for
dense inputs, a dot-product kernel whose 2 x 4 output tiles stay in registers (columns of b
packed as rows first, as BLAS packs its panels). Their GFLOP/s against BLAS at the network's shapes are in the README
(``pytest benchmarks --benchmark-only``).

fastmath: ``contract`` (fused multiply-add), plus ``reassoc`` in the fused path's dot
products; never the flags that assume no NaN or inf, so a diverging run still shows its NaN.

``fused_steps`` (in ``numba_fused.py``) runs whole training steps in one call: see ``fastnn.fused``.

Threads: Numba uses ``NUMBA_NUM_THREADS`` (default: all cores). The kernels of the interface
call no BLAS, so Numba's pool has the cores to itself. The fused path calls BLAS from inside
Numba's parallel loop; there BLAS must run single-threaded (``fastnn.fused`` sets that with
threadpoolctl), because an earlier prototype that let OpenBLAS start 2 threads under each of
Numba's 2 measured 11 s per epoch against 0.8 s with one BLAS thread.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ._checks import (
    as_float_array,
    check_matmul,
    check_same_shape,
    prefers_dot_kernel,
    run_elementwise,
    run_softmax,
    run_softmax_cross_entropy,
    run_softmax_cross_entropy_backward,
)
from .numba_forward import softmax_row

NAME = "numba"

@njit(cache=True, parallel=True, fastmath={"contract"})
def _matmul_kernel(a, b, out):
    """out (m, n) = a (m, k) @ b (k, n): out[i] = sum_p a[i, p] * b[p]; rows of out split across threads."""
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        orow = out[i]
        for j in range(n):
            orow[j] = 0
        for p in range(k):
            aip = a[i, p]
            if aip == 0:               # zero inputs (MNIST is ~80% zero pixels) add nothing
                continue
            brow = b[p]
            for j in range(n):         # contiguous: vectorized by LLVM
                orow[j] += aip * brow[j]


@njit(cache=True, fastmath={"contract", "reassoc"})
def _pack_columns(b, j0, w, bt):
    """bt[jj, p] = b[p, j0 + jj] for jj < w: columns of b as contiguous rows (a block of b^T)."""
    for p in range(b.shape[0]):
        brow = b[p, j0:j0 + w]
        for jj in range(w):
            bt[jj, p] = brow[jj]


@njit(cache=True, fastmath={"contract", "reassoc"})
def _dot_tiles(a, bt, out, j0, w):
    """out[:, j0:j0+w] = a @ bt[:w].T: out[i, j0 + jj] = sum_p a[i, p] * bt[jj, p].

    2 x 4 tiles of out are 8 simultaneous dot products over p: 8 vector accumulators stay in
    registers (``reassoc`` lets LLVM vectorize the sums) and each step loads 2 values of a and
    4 of bt for 8 FMAs."""
    m, k = a.shape
    zero = a.dtype.type(0)
    for i in range(0, m - 1, 2):
        a0 = a[i]
        a1 = a[i + 1]
        for jj in range(0, w - 3, 4):
            b0 = bt[jj]
            b1 = bt[jj + 1]
            b2 = bt[jj + 2]
            b3 = bt[jj + 3]
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = zero
            for p in range(k):
                x0 = a0[p]
                x1 = a1[p]
                c00 += x0 * b0[p]
                c01 += x0 * b1[p]
                c02 += x0 * b2[p]
                c03 += x0 * b3[p]
                c10 += x1 * b0[p]
                c11 += x1 * b1[p]
                c12 += x1 * b2[p]
                c13 += x1 * b3[p]
            o0 = out[i, j0 + jj:j0 + jj + 4]
            o1 = out[i + 1, j0 + jj:j0 + jj + 4]
            o0[0], o0[1], o0[2], o0[3] = c00, c01, c02, c03
            o1[0], o1[1], o1[2], o1[3] = c10, c11, c12, c13
        for jj in range(w - w % 4, w):                      # leftover columns
            bj = bt[jj]
            c0 = c1 = zero
            for p in range(k):
                c0 += a0[p] * bj[p]
                c1 += a1[p] * bj[p]
            out[i, j0 + jj] = c0
            out[i + 1, j0 + jj] = c1
    if m % 2:                                               # leftover row
        a0 = a[m - 1]
        for jj in range(w):
            bj = bt[jj]
            c0 = zero
            for p in range(k):
                c0 += a0[p] * bj[p]
            out[m - 1, j0 + jj] = c0


@njit(cache=True, parallel=True)
def _matmul_dot_kernel(a, b, out):
    """out (m, n) = a (m, k) @ b (k, n) as dot products; column blocks of 16 in parallel, each
    packing its own (16, k) block of b^T first."""
    k, n = b.shape
    for blk in prange((n + 15) // 16):
        j0 = blk * 16
        w = min(16, n - j0)
        bt = np.empty((16, k), dtype=b.dtype)
        _pack_columns(b, j0, w, bt)
        _dot_tiles(a, bt, out, j0, w)


@njit(cache=True)
def _relu_kernel(z, out):
    """out = max(z, 0), flat arrays."""
    for i in range(z.size):
        out[i] = z[i] if z[i] > 0 else 0


@njit(cache=True)
def _relu_backward_kernel(grad_out, z, out):
    """out = grad_out * [z > 0], flat arrays."""
    for i in range(z.size):
        out[i] = grad_out[i] if z[i] > 0 else 0


@njit(cache=True)
def _sigmoid_kernel(z, out):
    """out = 1 / (1 + exp(-z)), evaluated in float64 so that exp never overflows, rounded once."""
    for i in range(z.size):
        x = np.float64(z[i])
        if x >= 0:
            out[i] = 1.0 / (1.0 + np.exp(-x))
        else:
            e = np.exp(x)
            out[i] = e / (1.0 + e)


@njit(cache=True)
def _sigmoid_backward_kernel(grad_out, a, out):
    """out = grad_out * a * (1 - a), a = sigmoid(z)."""
    for i in range(a.size):
        out[i] = grad_out[i] * a[i] * (1 - a[i])


@njit(cache=True)
def _tanh_kernel(z, out):
    for i in range(z.size):
        out[i] = np.tanh(z[i])


@njit(cache=True)
def _tanh_backward_kernel(grad_out, a, out):
    """out = grad_out * (1 - a^2), a = tanh(z)."""
    for i in range(a.size):
        out[i] = grad_out[i] * (1 - a[i] * a[i])


@njit(cache=True)
def _softmax_xent_kernel(logits, labels, probs):
    """probs = softmax(logits) row by row (max subtracted); returns the summed loss in float64."""
    total = 0.0
    for i in range(logits.shape[0]):
        s, mx = softmax_row(logits[i], probs[i])
        if labels.size:
            total += np.log(s) - (logits[i, labels[i]] - mx)
    return total


@njit(cache=True)
def _softmax_xent_backward_kernel(probs, labels, out):
    """out = (probs - one_hot(labels)) / N."""
    n, c = probs.shape
    inv_n = 1.0 / n
    for i in range(n):
        for j in range(c):
            out[i, j] = probs[i, j] * inv_n
        out[i, labels[i]] -= inv_n


# ---------------------------------------------------------------- the kernel interface
def matmul(a, b):
    """(m, k) @ (k, n) -> (m, n) with hand-written loop nests (no BLAS).

    Chosen by the input: a mostly-zero ``a`` (MNIST pixels) or a shallow k goes to the
    row-axpy kernel, which skips zero entries; a dense ``a`` with a deep k goes to the
    register-tiled dot-product kernel (2-3x faster on dense inputs, but it cannot skip zeros).
    (``_checks.prefers_dot_kernel`` decides.)
    """
    a, b = check_matmul(a, b)
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if out.size == 0:
        return out
    if prefers_dot_kernel(a):
        _matmul_dot_kernel(np.ascontiguousarray(a), b, out)
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
# The whole evaluation-mode forward pass in one compiled call (fastnn.inference), and whole
# training steps in one compiled call (fastnn/backends/numba_fused.py; arguments in fastnn.fused).
from .numba_forward import fused_forward  # noqa: E402,F401
from .numba_fused import ACT_CODES, augment_csr, fused_steps, read_cycles  # noqa: E402,F401


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
    for name in ("numba_backend", "numba_fused", "numba_forward", "numba_simd"):
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
    return any(f.is_dir() and os.access(f, os.R_OK) and any(f.rglob("numba_fused.fused_steps-*.nbi"))
               for f in folders)
