"""The numba backend's fused forward pass: every layer of a batch in one compiled call.

``fused_forward(params, work, options, X, out_f, out_i)`` (the groups of
``fastnn.backends.fused_interface``) runs the network in evaluation mode on X (N, D) and writes,
by ``mode`` (``FORWARD_MODES``): the logits (0) or the probabilities (1) into ``out_f`` (N, C),
or the predicted labels (2) into ``out_i`` (N,) int64. The algorithm, one sample (row) at a time
through all the layers:

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

``params.weights`` is a tuple of C-contiguous (n_in, n_out) arrays, ``params.biases`` a tuple of
(n_out,) arrays, all of one float dtype, X's too (any strides). Numba's compiled signature fixes
the dtypes, ranks and layouts; ``_size_error`` checks every size, in compiled code, once per call.
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


# fused_forward's size errors: _size_error's code -> message
SIZE_ERRORS = {
    1: "1 or more layers, as many biases as weights",
    2: "weights[l] must be (n_in of layer l, n_out) and biases[l] (n_out,), X (N, D) with D = weights[0]'s rows",
    3: "act and mode must be codes of fastnn.backends.fused_interface",
    4: "work_f must be (T, >= S + Dmax) and work_i (T, >= Dmax)",
    5: "out_i must be (N,) for labels",
    6: "out_f must be (N, C)",
}


@njit(cache=True, inline="always")
def _size_error(weights, biases, X, act, mode, out_f, out_i, work_f, work_i):
    """0, or the ``SIZE_ERRORS`` code of the first size fused_forward cannot rely on (dtypes,
    ranks and layouts are fixed by the compiled signature)."""
    n_layers = len(weights)
    if n_layers < 1 or len(biases) != n_layers:
        return 1
    d, d_max, total = X.shape[1], 0, 0
    for l in range(n_layers):
        if weights[l].shape[0] != d or biases[l].shape[0] != weights[l].shape[1]:
            return 2
        d_max = max(d_max, d)
        d = weights[l].shape[1]
        total += d
    if act < 0 or act > 2 or mode < 0 or mode > 2:
        return 3
    if (work_f.shape[0] < 1 or work_i.shape[0] != work_f.shape[0] or work_f.shape[1] < total + d_max
            or work_i.shape[1] < d_max):
        return 4
    if mode == 2 and out_i.shape[0] != X.shape[0]:
        return 5
    if mode != 2 and (out_f.shape[0] != X.shape[0] or out_f.shape[1] != d):
        return 6
    return 0


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
        elif mode == 1:                                           # probs, as the backend's softmax
            softmax_row(logits, out_f[i])
        else:
            for j in range(c):
                out_f[i, j] = logits[j]
    return -1


@njit(cache=True)
def _forward_serial(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f, work_i):
    """Every row on the calling thread; returns -1, a bad row, or -2 - a ``SIZE_ERRORS`` code."""
    error = _size_error(weights, biases, X, act, mode, out_f, out_i, work_f, work_i)
    if error:
        return -2 - error
    return _forward_rows(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f[0], work_i[0], 0, X.shape[0])


@njit(cache=True, parallel=True)
def _forward_parallel(weights, biases, X, act, mode, unit_range, out_f, out_i, work_f, work_i):
    """Rows split evenly between the T = work_f.shape[0] threads; returns -1, a bad row, or -2 - a
    ``SIZE_ERRORS`` code."""
    error = _size_error(weights, biases, X, act, mode, out_f, out_i, work_f, work_i)
    if error:
        return -2 - error
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


def fused_forward(params, work, options, X, out_f, out_i) -> int:
    """Every layer of X (N, D) in one compiled call; see the module docstring. The groups
    (``ForwardParameters``, ``ForwardWork``, ``ForwardOptions``) are documented in
    ``fastnn.backends.fused_interface``. Returns -1, or the first row of X with an input outside
    [0, 1] (``options.unit_range``) or not finite: the outputs are then incomplete. Raises
    ValueError for a size the loops cannot rely on (checked in compiled code, once per call)."""
    run = _forward_parallel if X.shape[0] >= PARALLEL_ROWS and work.work_f.shape[0] > 1 else _forward_serial
    bad = run(params.weights, params.biases, X, options.act, options.mode, options.unit_range, out_f, out_i,
              work.work_f, work.work_i)
    if bad <= -2:
        raise ValueError(f"fused_forward: {SIZE_ERRORS[-2 - bad]}")
    return bad
