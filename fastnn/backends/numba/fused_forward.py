"""The numba backend's fused forward pass: every layer of a batch in one compiled call.

``fused_forward(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f, work_i)`` runs the
network in evaluation mode on X (N, D) and writes, by ``mode`` (``FORWARD_MODES``): the
logits (0) or the probabilities (1) into ``out_f`` (N, C), or the predicted labels (2) into
``out_i`` (N,) int64. The algorithm, one sample (row) at a time through all the layers:

    for each layer l:   a_in = the row's input to layer l          (n_in,)
        gather a_in's non-zeros into (nz_index, nz_value)           zeros skipped: MNIST pixels
        z = b_l + sum_k nz_value[k] W_l[nz_index[k]]                 rows of W_l, four per pass
        a = act(z) for hidden layers                                (n_out,)

so a mostly-zero input (19 % of MNIST pixels are non-zero; ReLU outputs are half zeros) costs
its non-zeros, a dense one a dense product, decided row by row. The weights stay in cache
from one row to the next. Rows are split evenly between the threads when N >= ``PARALLEL_ROWS``
(thread t owns rows N t / T .. N (t + 1) / T and its row of the work buffers); smaller
batches run on the calling thread, without waking the thread pool. Nothing is allocated:
``work_f`` (T, >= sum(sizes[1:]) + max(sizes[:-1])) in the weights' dtype and ``work_i``
(T, >= max(sizes[:-1])) int32 are the caller's, reused between calls (``fastnn.inference.forward``
sizes them for the Cython kernel's blocks too; this one uses the first S + Dmax and Dmax).

Arguments: ``weights`` a tuple of C-contiguous (n_in, n_out) arrays, ``biases`` a tuple of
(n_out,) arrays, all of one float dtype, X's too (any strides); ``act`` an ``ACT_CODES``
value. The caller (``fastnn.inference.forward.ForwardPlan``) checks the shapes: nothing here does.
fastmath ``contract``/``reassoc`` only (FMA and vectorized sums): NaN and inf propagate.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from fastnn.backends.numba._shared import _activate, softmax_row
from fastnn.backends.numba.simd import sparse_row

PARALLEL_ROWS = 16   # rows from which the threads share a batch (below: the calling thread alone)


@njit(cache=True, inline="always")
def _gather(a_in, nz_index, nz_value):
    """a_in's non-zeros (NaN and inf included) into (nz_index, nz_value), in index order; returns
    their count. Branch-free: ReLU's zeros are a coin toss, and a branch mispredicts half."""
    m = 0
    for k in range(a_in.size):
        v = a_in[k]
        nz_index[m] = k
        nz_value[m] = v
        m += v != 0
    return m


@njit(cache=True, inline="always")
def _inputs_ok(x, unit_range):
    """Whether every input of a row is in [0, 1] (``unit_range``: a model of pixels) or finite (any
    other model): NaN fails every comparison, and v - v is 0 only for a finite v. The policy for
    garbage in (``fastnn.inference.forward``): an error, never a confident label."""
    ok = True
    if unit_range:
        for k in range(x.size):
            ok &= (x[k] >= 0) & (x[k] <= 1)
    else:
        for k in range(x.size):
            ok &= x[k] - x[k] == 0
    return ok


@njit(cache=True, fastmath={"contract"}, inline="always")
def _activate_gather(z, act, nz_index, nz_value):
    """z = act(z) in place and its non-zeros gathered (ReLU in the same pass); returns the count."""
    if act != 0:
        _activate(z, z, act)
        return _gather(z, nz_index, nz_value)
    m = 0
    for k in range(z.size):
        v = z[k] if z[k] > 0 else z.dtype.type(0)
        z[k] = v
        nz_index[m] = k
        nz_value[m] = v
        m += v != 0
    return m


@njit(cache=True, fastmath={"contract"})
def _forward_rows(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f, work_i, i0, i1):
    """Rows i0:i1 of X through every layer, with one thread's work rows ``work_f`` (>= S + Dmax,)
    and ``work_i`` (>= Dmax,): the layers' outputs in work_f[:S], the gathered non-zeros after.
    Returns -1, or the first row with an input outside [0, 1] (it stops there)."""
    n_layers = len(weights)
    n_hidden_total = 0                                            # S = sum(sizes[1:])
    for l in range(n_layers):
        n_hidden_total += weights[l].shape[1]
    nz_value = work_f[n_hidden_total:]                            # (>= Dmax,)
    one = work_f.dtype.type(1)
    for i in range(i0, i1):
        if not _inputs_ok(X[i], unit_range):
            return i
        m = _gather(X[i], work_i, nz_value)                       # layer 0's inputs: the pixels
        off = 0
        z = work_f[:0]
        for l in range(n_layers):
            W = weights[l]                                        # (n_in, n_out)
            n_out = W.shape[1]
            z = work_f[off:off + n_out]                           # (n_out,)
            sparse_row(W.reshape(W.size), n_out, work_i, nz_value, 0, m, one, biases[l], z)
            if l < n_layers - 1:
                m = _activate_gather(z, act, work_i, nz_value)
            off += n_out
        logits = z                                                # (C,)
        c = logits.size
        if mode == 2:                                             # labels: the first maximum
            best = 0
            for j in range(1, c):
                if logits[j] > logits[best]:
                    best = j
            out_i[i] = best
        elif mode == 1:                                           # probs, as numba_backend.softmax
            softmax_row(logits, out_f[i])
        else:
            for j in range(c):
                out_f[i, j] = logits[j]
    return -1


@njit(cache=True, parallel=True)
def _forward_parallel(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f, work_i):
    """Rows split evenly between the T = work_f.shape[0] threads; returns -1 or a bad row."""
    n, n_threads = X.shape[0], work_f.shape[0]
    first_bad = np.full(n_threads, -1, dtype=np.int64)           # (T,) each thread's first bad row
    for tp in prange(n_threads):
        t = np.int64(tp)
        first_bad[t] = _forward_rows(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f[t], work_i[t],
                                     n * t // n_threads, n * (t + 1) // n_threads)
    for t in range(n_threads):
        if first_bad[t] >= 0:
            return first_bad[t]
    return -1


def fused_forward(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f, work_i) -> int:
    """Every layer of X (N, D) in one compiled call; see the module docstring. Returns -1, or the
    first row of X with an input outside [0, 1] (``unit_range``, a bool) or not finite: the
    outputs are then incomplete."""
    if X.shape[0] >= PARALLEL_ROWS and work_f.shape[0] > 1:
        return _forward_parallel(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f, work_i)
    return _forward_rows(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f[0], work_i[0], 0, X.shape[0])
