"""The numba backend's fused training step: whole SGD steps in one compiled call.

``fused_steps`` runs ``n_steps`` steps (forward, softmax cross-entropy, backward, optimizer
update) with no Python in between. Its arguments are the named groups of
``fastnn.backends.fused_interface``; the algorithm is described in ``fastnn.training.fused``;
``fastnn/backends/cython/fused_step.pyx`` is the same function, loop for loop, with the same
local names. In short, each step is two phases over the T threads, each of T parts (part t
normally on thread t; ``_team_member``):

- region 1, by **parameters** (``_finish_step``, ``_layer0_forward``): part t owns rows
  ``row_bounds[t]:row_bounds[t+1]`` of W0 (a range of pixels) and columns
  ``col_bounds[l, t]:col_bounds[l, t+1]`` of the biases and the dense W_l (rows of a narrow W_l,
  fewer than ``fused_interface.NARROW`` outputs). It finishes the
  previous step for what it owns (each weight gradient fused with the optimizer update: W0's
  rows gathered through the CSC index it built, the dense layers' columns through the packed GEMM), then
  runs this step's layer 0 over its pixels: its share of z0 for every batch row, and the CSC
  index of those pixels. A thread only ever writes parameters it owns, so nothing is reduced
  across threads and no per-thread copy of the gradient exists.

- region 2, by **samples** (``_thread_step``): part t takes batch rows i0:i1: z0 = b0 + the
  threads' shares, the dense layers forward, the softmax cross-entropy, and backward down to dL/dz of layer 0
  (the packed GEMM of ``gemm.py`` for the products).

One ``prange`` over the threads runs the whole call; a phase's parts are claimed and counted
with atomic adds and a thread waits for them all before the next phase (Cython's step uses an
OpenMP team and its barrier instead: Numba has neither).


fastmath: ``contract`` (FMA) and ``reassoc`` (vectorized sums); never the no-NaN/no-inf flags,
so a diverging run still reports a NaN loss. The hot loops index with unsigned positions
(``np.uint64``): Numba then skips its negative-index fix-up, which cost the epoch 5% (REPORT).
Phase timers (``prof``) read the CPU's cycle counter only when ``prof`` has rows: one
predictable branch per phase when it has none.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from fastnn.backends.fused_interface import NARROW, check_steps, raise_unsorted_row
from fastnn.backends.numba._shared import (
    _activate,
    _activate_backward,
    _prefetch_address,
    _prefetch_row,
    _row_ascending,
    atomic_add,
    atomic_load,
    cycles,
    denormals_off,
    fp_mode_restore,
    spin_pause,
)
from fastnn.backends.numba.gemm import gemm, use_dtype
from fastnn.backends.numba.simd import sparse_row_cols, sparse_update

COLUMN_BLOCK = 256   # layer 0's forward, columns at a time (the Cython step's COLUMN_BLOCK)


# ---------------------------------------------------------------- named regions of the buffers
@njit(cache=True)
def _rows(buf, off, n, i0, i1):
    """Rows i0:i1 of the (rows, n) block that starts at ``off`` in the flat ``buf``: (i1 - i0, n)."""
    return buf[off + i0 * n:off + i1 * n].reshape(i1 - i0, n)


@njit(cache=True, fastmath={"contract"}, inline="always")
def _update(p, g, s1, s2, wd, opt, lr, mu, beta1, beta2, eps, step_size, v_corr):
    """One optimizer update of parameters ``p`` from gradient ``g`` (1-D slices, same length), as
    ``fastnn.training.optim``: with g' = g + wd p, sgd: p -= lr g'; momentum: s1 = mu s1 + g', p -= lr s1;
    adam: s1 = b1 s1 + (1-b1) g', s2 = b2 s2 + (1-b2) g'^2, p -= step_size s1 / (sqrt(s2 / v_corr) + eps)."""
    one = p.dtype.type(1)
    n = np.uint64(p.size)                   # unsigned positions: no negative-index fix-up
    if opt == 0:
        for k in range(n):
            p[k] -= lr * (g[k] + wd * p[k])
    elif opt == 1:
        for k in range(n):
            v = mu * s1[k] + (g[k] + wd * p[k])
            s1[k] = v
            p[k] -= lr * v
    else:
        for k in range(n):
            gk = g[k] + wd * p[k]
            m = beta1 * s1[k] + (one - beta1) * gk
            v = beta2 * s2[k] + (one - beta2) * (gk * gk)
            s1[k] = m
            s2[k] = v
            p[k] -= step_size * m / (np.sqrt(v / v_corr) + eps)


# ---------------------------------------------------------------- per-step pieces
@njit(cache=True, fastmath={"contract", "reassoc"})
def _layer0_forward(indptr, indices, pixels, order, lo, nb, W0, r0, r1, Z, ptr, sample, value, span):
    """Z[i] = sum_q x_q W0[q] over sample i's non-zero pixels q in [r0, r1) (CSR rows, x = pixel / 255),
    for every batch row i: thread t's share of z = x W0 (the bias is added when the shares are summed).

    It also builds the CSC index of those entries for the weight gradient: for pixel p in
    [r0, r1), entries ptr[p]:ptr[p+1] of (sample, value) are the batch rows where p is non-zero;
    span (2 nb,): sample i's pixels in [r0, r1) are indices[span[2i]:span[2i+1]] (searched for once,
    by the first pass, for the second). The rows' indptr entries are prefetched all at once, each
    row's pixels two samples ahead. Wider than COLUMN_BLOCK, the columns go a block at a time (the
    first with the checks and the index), so that the block of the thread's W0 rows stays in L2
    while every sample reads it. Returns -1, or the first sample whose pixel indices do not rise
    strictly below D (then before reading any W0 row through them, leaving Z and the index unfinished)."""
    inv255 = W0.dtype.type(1.0 / 255.0)
    one = np.uint64(1)
    D, H0 = W0.shape
    W0_flat = W0.reshape(W0.size)                                            # (D * H0,)
    c1 = min(H0, COLUMN_BLOCK)
    for p in range(r0, r1 + 1):
        ptr[p] = 0
    for i in range(nb):                            # the rows' starts: random reads of indptr
        _prefetch_address(indptr, order[lo + i])
    for i in range(min(nb, 2)):
        _prefetch_row(indptr, indices, pixels, order[lo + i])
    for i in range(nb):
        z = Z[i]
        z[:] = 0
        row = order[lo + i]
        if i + 2 < nb:                             # a later sample's row comes from memory meanwhile
            _prefetch_row(indptr, indices, pixels, order[lo + i + 2])
        if not _row_ascending(indices, indptr[row], indptr[row + 1], D):
            return row
        q = indptr[row] + np.searchsorted(indices[indptr[row]:indptr[row + 1]], r0)
        q_end = indptr[row] + np.searchsorted(indices[indptr[row]:indptr[row + 1]], r1)
        span[2 * i] = q
        span[2 * i + 1] = q_end
        sparse_row_cols(W0_flat, H0, 0, c1, indices, pixels, q, q_end, inv255, z, z)   # sums in registers
        for u in range(np.uint64(q), np.uint64(q_end)):     # unsigned: no negative-index fix-up
            ptr[np.uint64(indices[u]) + one] += 1
    c0 = c1
    while c0 < H0:                                 # the other column blocks
        c1 = min(c0 + COLUMN_BLOCK, H0)
        for i in range(nb):
            sparse_row_cols(W0_flat, H0, c0, c1, indices, pixels, span[2 * i], span[2 * i + 1], inv255, Z[i], Z[i])
        c0 = c1
    # the CSC index: counts -> starts, fill (ptr[p] walks to the end of p), shift back to starts
    ptr[r0] = 0
    for p in range(r0, r1):
        ptr[p + 1] += ptr[p]
    for i in range(nb):
        for u in range(np.uint64(span[2 * i]), np.uint64(span[2 * i + 1])):
            p = np.uint64(indices[u])
            e = np.uint64(ptr[p])
            sample[e] = i
            value[e] = W0.dtype.type(pixels[u]) * inv255
            ptr[p] = e + one
    for p in range(r1, r0, -1):
        ptr[p] = ptr[p - 1]
    ptr[r0] = 0
    return np.int64(-1)


@njit(cache=True, fastmath={"contract", "reassoc"})
def _layer0_grad_update(ptr, sample, value, G0, W0, S1, S2, r0, r1, acc, wd, opt, lr, mu, beta1, beta2,
                        eps, step_size, v_corr):
    """For every row p in [r0, r1) of W0: grad W0[p] = sum_e value[e] G0[sample[e]] over the CSC
    entries of pixel p (the batch rows where it is non-zero), then that row's update. With SGD or
    momentum, the whole blocks of columns are updated from the registers the sums are in
    (``sparse_update``: the gradient row is never stored); Adam's update, and the last
    columns short of a block, go through ``acc``."""
    H0 = W0.shape[1]
    g = acc[:H0]
    G0_flat = G0.reshape(G0.size)                                            # (nb * H0,)
    W0_flat, S1_flat = W0.reshape(W0.size), S1.reshape(S1.size)              # (D * H0,)
    one = W0.dtype.type(1)
    zero = W0.dtype.type(0)
    fused = opt <= 1
    momentum = opt == 1
    uH0 = np.uint64(H0)
    for p in range(np.uint64(r0), np.uint64(r1)):                           # unsigned: no index fix-up
        q0, q1 = ptr[p], ptr[p + np.uint64(1)]
        j0 = sparse_update(G0_flat, H0, sample, value, q0, q1, W0_flat, S1_flat, p * uH0, wd, mu, lr,
                           momentum) if fused else 0
        if j0 == H0:
            continue
        for j in range(np.uint64(j0), uH0):
            g[j] = zero
        sparse_row_cols(G0_flat, H0, j0, H0, sample, value, q0, q1, one, g, g)     # sums in registers
        _update(W0[p, j0:], g[j0:], S1[p, j0:], S2[p, j0:], wd, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)


@njit(cache=True, fastmath={"contract", "reassoc"})
def _dense_grad_update(A_in, G, W, S1, S2, c0, c1, nb, scratch, wd, opt, lr, mu, beta1, beta2, eps,
                       step_size, v_corr):
    """grad W[:, c0:c1] = A_in^T G[:, c0:c1] (fastnn's packed GEMM, A_in transposed and G's columns
    c0.. read through their strides), then each row's update. A_in (nb, n_in), G (nb, n_out)."""
    n_in, n_out = W.shape
    w = c1 - c0
    gW = scratch[:n_in * w].reshape(n_in, w)                    # (n_in, w)
    one = gW.dtype.type(1)
    yes, no, unit = np.bool_(True), np.bool_(False), np.int64(1)   # typed values, not literals: one
    gemm(yes, no, n_in, w, nb, one, A_in.reshape(A_in.size), n_in, G.reshape(G.size)[c0:], n_out,  # compilation
         one - one, gW.reshape(gW.size), w, unit)
    for r in range(n_in):
        _update(W[r, c0:c1], gW[r], S1[r, c0:c1], S2[r, c0:c1], wd, opt, lr, mu, beta1, beta2, eps,
                step_size, v_corr)


@njit(cache=True, fastmath={"contract", "reassoc"})
def _dense_rows_grad_update(A_in, G, W, S1, S2, r0, r1, nb, scratch, wd, opt, lr, mu, beta1, beta2, eps, step_size,
                            v_corr):
    """A narrow layer's share by rows: grad W[r0:r1] = A_in[:, r0:r1]^T G (fastnn's packed GEMM), then
    one update of those rows, a contiguous run of (r1 - r0) n_out parameters. A_in (nb, n_in), G (nb, n_out)."""
    n_in, n_out = W.shape
    if r1 <= r0:
        return
    gW = scratch[:(r1 - r0) * n_out]                            # (r1 - r0, n_out) row-major
    one = gW.dtype.type(1)
    yes, no, unit = np.bool_(True), np.bool_(False), np.int64(1)
    gemm(yes, no, r1 - r0, n_out, nb, one, A_in.reshape(A_in.size)[r0:], n_in, G.reshape(G.size), n_out,
         one - one, gW, n_out, unit)
    W_flat, S1_flat, S2_flat = W.reshape(W.size), S1.reshape(S1.size), S2.reshape(S2.size)
    _update(W_flat[r0 * n_out:r1 * n_out], gW, S1_flat[r0 * n_out:r1 * n_out], S2_flat[r0 * n_out:r1 * n_out], wd, opt,
            lr, mu, beta1, beta2, eps, step_size, v_corr)


@njit(cache=True, fastmath={"contract", "reassoc"})
def _bias_grad_update(G, b, s1, s2, c0, c1, nb, acc, opt, lr, mu, beta1, beta2, eps, step_size, v_corr):
    """grad b[c0:c1] = sum_i G[i, c0:c1], then its update (no weight decay on biases)."""
    g = acc[:c1 - c0]
    g[:] = 0
    for i in range(nb):
        gi = G[i, c0:c1]
        for j in range(c1 - c0):
            g[j] += gi[j]
    zero = b.dtype.type(0)
    _update(b[c0:c1], g, s1[c0:c1], s2[c0:c1], zero, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)


@njit(cache=True, fastmath={"contract"})
def _softmax_xent_rows(logits, labels, order, lo, i0, G, inv_nb, smooth):
    """G[i] = (softmax(logits[i]) - t_i) / nb with the smoothed target t_i = (1 - smooth) one_hot(y_i)
    + smooth / C; returns sum_i -sum_j t_ij log softmax(logits[i])_j (the cross-entropy at smooth 0)."""
    c = logits.shape[1]
    off = G.dtype.type(smooth / c)                    # t_ij for j != y_i
    on = G.dtype.type(1 - smooth) + off               # t_ij for j == y_i
    total = 0.0
    for i in range(logits.shape[0]):
        z = logits[i]
        g = G[i]
        mx = z[0]
        for j in range(1, z.size):
            if z[j] > mx:
                mx = z[j]
        tot = G.dtype.type(0)
        shifted_sum = 0.0
        for j in range(z.size):
            e = np.exp(z[j] - mx)
            g[j] = e
            tot += e
            shifted_sum += np.float64(z[j] - mx)
        y = labels[order[lo + i0 + i]]
        # -sum_j t_j log p_j = log(tot) - (1 - smooth) (z_y - mx) - smooth / C sum_j (z_j - mx)
        total += np.log(np.float64(tot)) - (1.0 - np.float64(smooth)) * np.float64(z[y] - mx)
        if smooth != 0:
            total -= np.float64(smooth) / c * shifted_sum
        for j in range(z.size):
            p = g[j] / tot
            g[j] = (p - on) * inv_nb if j == y else (p - off) * inv_nb
    return total


@njit(cache=True, fastmath={"contract"}, inline="always")
def _hidden_output(A, O, mask, act, dropout):
    """Hidden rows: O = act(A) and A = O * mask with dropout, else A = act(A) in place (O is A)."""
    for i in range(A.shape[0]):
        _activate(A[i], O[i], act)
        if dropout:
            for j in range(A.shape[1]):
                A[i, j] = O[i, j] * mask[i, j]


# ---------------------------------------------------------------- one thread's share of a step
@njit(cache=True, fastmath={"contract", "reassoc"})
def _finish_step(t, nb, sizes, w_off, b_off, act_off, row_bounds, col_bounds, theta, state1, state2, acts,
                 grads_act, csc_ptr, csc_sample, csc_value, scratch, hyper, step_size, v_corr, prof):
    """Region 1, first half: thread t's weight gradients of the step just run (nb rows), each
    fused with its update, for the parameters t owns: W0 rows row_bounds[t]:row_bounds[t+1]
    (through its CSC index), columns col_bounds[l, t]:col_bounds[l, t+1] of b_l and dense W_l (of a
    narrow one, fewer than NARROW outputs, rows n_in t // T .. n_in (t + 1) // T)."""
    n_layers = sizes.shape[0] - 1
    n_threads = col_bounds.shape[1] - 1
    lr, mu, wd, beta1, beta2, eps = hyper.lr, hyper.momentum, hyper.weight_decay, hyper.beta1, hyper.beta2, hyper.eps
    opt = hyper.opt
    timing = prof.shape[0] > 0
    tick = cycles() if timing else 0
    acc = scratch[t]
    for l in range(n_layers):
        n_in, n_out = sizes[l], sizes[l + 1]
        c0, c1 = col_bounds[l, t], col_bounds[l, t + 1]
        W = theta[w_off[l]:w_off[l] + n_in * n_out].reshape(n_in, n_out)                   # (n_in, n_out)
        S1 = state1[w_off[l]:w_off[l] + n_in * n_out].reshape(n_in, n_out) if opt else W
        S2 = state2[w_off[l]:w_off[l] + n_in * n_out].reshape(n_in, n_out) if opt == 2 else W
        G = _rows(grads_act, act_off[l], n_out, 0, nb)                                     # (nb, n_out)
        if l == 0:
            _layer0_grad_update(csc_ptr[t], csc_sample[t], csc_value[t], G, W, S1, S2, row_bounds[t],
                                row_bounds[t + 1], acc, wd, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)
        elif n_out < NARROW:                                       # a narrow layer: thread t's rows of W_l
            A_in = _rows(acts, act_off[l - 1], n_in, 0, nb)                                # (nb, n_in)
            _dense_rows_grad_update(A_in, G, W, S1, S2, (n_in * t) // n_threads, (n_in * (t + 1)) // n_threads, nb,
                                    acc, wd, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)
        elif c1 > c0:
            A_in = _rows(acts, act_off[l - 1], n_in, 0, nb)                                # (nb, n_in)
            _dense_grad_update(A_in, G, W, S1, S2, c0, c1, nb, acc, wd, opt, lr, mu, beta1, beta2, eps,
                               step_size, v_corr)
        if c1 > c0:
            b = theta[b_off[l]:b_off[l] + n_out]
            s1 = state1[b_off[l]:b_off[l] + n_out] if opt else b
            s2 = state2[b_off[l]:b_off[l] + n_out] if opt == 2 else b
            _bias_grad_update(G, b, s1, s2, c0, c1, nb, acc, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)
        if timing:
            now = cycles()
            prof[t, 2 + 2 * n_layers + l] += now - tick
            tick = now


@njit(cache=True, fastmath={"contract", "reassoc"})
def _thread_step(t, i0, i1, nb, s, lo, labels, order, sizes, w_off, b_off, act_off, mask_off, theta, z0_parts,
                 acts, outs, grads_act, act, drop_mask, dropout, smooth, prof):
    """Region 2: batch rows i0:i1 of step s: z0 = b0 + the threads' shares of x W0, the dense
    layers forward, softmax cross-entropy, backward down to dL/dz of layer 0 (the products by
    fastnn's packed GEMM, ``gemm.py``, on this thread).
    Returns the rows' summed cross-entropy."""
    n_layers = sizes.shape[0] - 1
    n_threads = z0_parts.shape[0]
    timing = prof.shape[0] > 0
    tick = cycles() if timing else 0
    m, H0 = i1 - i0, sizes[1]
    inv_nb = theta.dtype.type(1) / nb
    one, zero = theta.dtype.type(1), theta.dtype.type(0)
    yes, no, unit = np.bool_(True), np.bool_(False), np.int64(1)   # typed values, not literals (see gemm.py)
    A = _rows(acts, act_off[0], H0, i0, i1)                                                 # (m, H0)
    b0 = theta[b_off[0]:b_off[0] + H0]
    a_flat = A.reshape(A.size)                                                              # (m H0,)
    uH0 = np.uint64(H0)
    for i in range(np.uint64(m)):                    # unsigned positions: no negative-index fix-up
        for j in range(uH0):
            a_flat[i * uH0 + j] = b0[j]
    for u in range(n_threads):
        z_part = z0_parts[u, i0 * H0:i1 * H0]                                               # (m H0,)
        for k in range(np.uint64(m) * uH0):
            a_flat[k] += z_part[k]
    if n_layers > 1:
        O = _rows(outs, act_off[0], H0, i0, i1) if dropout else A
        mask = _rows(drop_mask[s], nb * mask_off[0], H0, i0, i1) if dropout else A
        _hidden_output(A, O, mask, act, dropout)
    if timing:
        now = cycles()
        prof[t, 2] += now - tick
        tick = now
    for l in range(1, n_layers):                                       # forward, dense layers
        n_in, n_out = sizes[l], sizes[l + 1]
        W = theta[w_off[l]:w_off[l] + n_in * n_out].reshape(n_in, n_out)                   # (n_in, n_out)
        A_in = _rows(acts, act_off[l - 1], n_in, i0, i1)                                   # (m, n_in)
        A = _rows(acts, act_off[l], n_out, i0, i1)                                         # (m, n_out)
        gemm(no, no, i1 - i0, n_out, n_in, one, A_in.reshape(A_in.size), n_in, W.reshape(W.size), n_out, zero,
             A.reshape(A.size), n_out, unit)                                              # A = A_in @ W
        bias = theta[b_off[l]:b_off[l] + n_out]
        for i in range(m):
            for j in range(n_out):
                A[i, j] += bias[j]
        if l < n_layers - 1:
            O = _rows(outs, act_off[l], n_out, i0, i1) if dropout else A
            mask = _rows(drop_mask[s], nb * mask_off[l], n_out, i0, i1) if dropout else A
            _hidden_output(A, O, mask, act, dropout)
        if timing:
            now = cycles()
            prof[t, 2 + l] += now - tick
            tick = now
    c = sizes[n_layers]
    logits = _rows(acts, act_off[n_layers - 1], c, i0, i1)                                  # (m, C)
    G = _rows(grads_act, act_off[n_layers - 1], c, i0, i1)                                  # (m, C)
    loss = _softmax_xent_rows(logits, labels, order, lo, i0, G, inv_nb, smooth)
    if timing:
        now = cycles()
        prof[t, 0] += now - tick
        tick = now
    for l in range(n_layers - 1, 0, -1):                               # backward, down to layer 0
        n_in, n_out = sizes[l], sizes[l + 1]
        W = theta[w_off[l]:w_off[l] + n_in * n_out].reshape(n_in, n_out)                   # (n_in, n_out)
        G = _rows(grads_act, act_off[l], n_out, i0, i1)                                    # (m, n_out)
        G_in = _rows(grads_act, act_off[l - 1], n_in, i0, i1)                              # (m, n_in)
        gemm(no, yes, n_in, i1 - i0, n_out, one, W.reshape(W.size), n_out, G.reshape(G.size), n_out, zero,
             G_in.reshape(G_in.size), unit, n_in)                # G_in^T = W @ G^T: W read along its rows
        O = _rows(outs if dropout else acts, act_off[l - 1], n_in, i0, i1)                 # (m, n_in)
        mask = _rows(drop_mask[s], nb * mask_off[l - 1], n_in, i0, i1) if dropout else O
        for i in range(m):
            if dropout:
                for j in range(n_in):
                    G_in[i, j] *= mask[i, j]
            _activate_backward(G_in[i], O[i], act)
        if timing:
            now = cycles()
            prof[t, 2 + n_layers + l] += now - tick
            tick = now
    return loss


# ---------------------------------------------------------------- the fused steps
def fused_steps(batch, params, work, hyper, first_step, n_steps, batch_size, losses, prof):
    """SGD steps first_step .. first_step + n_steps - 1 of an epoch, in place; losses[s] = mean CE
    of step s. The groups (``CsrBatch``, ``Parameters``, ``WorkBuffers``, ``Hyperparameters``)
    and ``prof`` are documented in ``fastnn.backends.fused_interface``, whose ``check_steps``
    checks every size and index first; the algorithm is in ``fastnn.training.fused``."""
    check_steps(batch, params, work, hyper, first_step, n_steps, batch_size, losses, prof)
    use_dtype(params.theta.dtype)                     # the GEMM's symbol, before a cached _fused_steps loads
    bad_row = _fused_steps(batch.indptr, batch.indices, batch.pixels, batch.labels, batch.order, np.int64(first_step),
                           np.int64(n_steps), np.int64(batch_size), params.sizes, params.w_off, params.b_off,
                           work.act_off, work.mask_off, work.row_bounds, work.col_bounds, params.theta, params.state1,
                           params.state2, work.z0_parts, work.acts, work.outs, work.grads_act, work.csc_ptr,
                           work.csc_sample, work.csc_value, work.csc_span, work.scratch, work.drop_mask, hyper, losses,
                           prof)
    if bad_row >= 0:
        raise_unsorted_row(int(bad_row), int(params.sizes[0]))


@njit(cache=True, fastmath={"contract", "reassoc"})
def _team_member(me, claims, done, step_loss, thread_bad, indptr, indices, pixels, labels, order, first_step, n_steps,
                 batch_size, sizes, w_off, b_off, act_off, mask_off, row_bounds, col_bounds, theta, state1, state2,
                 z0_parts, acts, outs, grads_act, csc_ptr, csc_sample, csc_value, csc_span, scratch, drop_mask, hyper,
                 prof):
    """One thread of ``_fused_steps``' team (``me``, its own part of every phase): step s is phase 2s
    (region 1, by parameters: ``_finish_step`` of step s - 1, then ``_layer0_forward`` of step s)
    and phase 2s + 1 (region 2, by samples: ``_thread_step``), T parts each. The thread claims its
    own part first (``atomic_add`` on claims[phase, part] returns 0 to the first claimant), then
    any part not yet claimed, and waits until done[phase] counts all T parts before the next
    phase. Part t of region 2 writes its rows' summed cross-entropy to step_loss[s, t]; part t of
    region 1 its bad row (or -1) to thread_bad[t], after which every thread stops before step s.
    The thread flushes subnormals to zero meanwhile and restores its floating-point mode after
    (``denormals_off``)."""
    act, opt, t0 = hyper.act, hyper.opt, hyper.t0
    n = order.shape[0]
    n_threads = col_bounds.shape[1] - 1
    timing = prof.shape[0] > 0
    lr, beta1, beta2, keep, smooth = hyper.lr, hyper.beta1, hyper.beta2, hyper.keep, hyper.label_smoothing
    dropout = keep < 1
    D, H0 = sizes[0], sizes[1]
    step_size = lr
    v_corr = theta.dtype.type(1)
    fp_mode = denormals_off()                        # subnormals as zero in this thread until the member ends
    for s in range(n_steps + 1):
        # ---- region 1, by parameters: finish step s - 1, then step s's layer 0 over the part's W0 rows
        if opt == 2 and s > 0:                       # Adam's bias corrections for step t0 + s
            step_size = theta.dtype.type(np.float64(lr) / (1.0 - np.float64(beta1) ** (t0 + s)))
            v_corr = theta.dtype.type(1.0 - np.float64(beta2) ** (t0 + s))
        phase = 2 * s
        t_region = cycles() if timing and me == 0 else 0
        for k in range(n_threads):
            t = (me + k) % n_threads                 # this thread's own part first
            if atomic_add(claims, phase * n_threads + t, 1) != 0:
                continue
            if s > 0:
                nb_prev = min((first_step + s) * batch_size, n) - (first_step + s - 1) * batch_size
                _finish_step(t, nb_prev, sizes, w_off, b_off, act_off, row_bounds, col_bounds, theta, state1,
                             state2, acts, grads_act, csc_ptr, csc_sample, csc_value, scratch, hyper,
                             step_size, v_corr, prof)
            if s < n_steps:
                tick = cycles() if timing else 0
                lo = (first_step + s) * batch_size
                nb = min(lo + batch_size, n) - lo
                W0 = theta[w_off[0]:w_off[0] + D * H0].reshape(D, H0)                          # (D, H0)
                Z_part = z0_parts[t, :nb * H0].reshape(nb, H0)                                 # (nb, H0)
                thread_bad[t] = _layer0_forward(indptr, indices, pixels, order, lo, nb, W0, row_bounds[t],
                                                row_bounds[t + 1], Z_part, csc_ptr[t], csc_sample[t], csc_value[t],
                                                csc_span[t])
                if timing:
                    prof[t, 2] += cycles() - tick
            atomic_add(done, phase, 1)
        while atomic_load(done, phase) < n_threads:
            spin_pause()
        if timing and me == 0:
            prof[n_threads, 0] += cycles() - t_region
        if s == n_steps:
            break
        bad = False
        for t in range(n_threads):                   # a row the kernel cannot read: every thread stops before step s
            if thread_bad[t] >= 0:
                bad = True
        if bad:
            break
        # ---- region 2, by samples
        phase = 2 * s + 1
        lo = (first_step + s) * batch_size
        nb = min(lo + batch_size, n) - lo
        t_region = cycles() if timing and me == 0 else 0
        for k in range(n_threads):
            t = (me + k) % n_threads
            if atomic_add(claims, phase * n_threads + t, 1) != 0:
                continue
            i0 = (nb * t) // n_threads
            i1 = (nb * (t + 1)) // n_threads
            step_loss[s, t] = 0.0
            if i1 > i0:
                step_loss[s, t] = _thread_step(t, i0, i1, nb, s, lo, labels, order, sizes, w_off, b_off, act_off,
                                               mask_off, theta, z0_parts, acts, outs, grads_act, act, drop_mask,
                                               dropout, smooth, prof)
            atomic_add(done, phase, 1)
        while atomic_load(done, phase) < n_threads:
            spin_pause()
        if timing and me == 0:
            prof[n_threads, 1] += cycles() - t_region
    fp_mode_restore(fp_mode)


@njit(cache=True, parallel=True, fastmath={"contract", "reassoc"})
def _fused_steps(indptr, indices, pixels, labels, order, first_step, n_steps, batch_size, sizes, w_off, b_off,
                 act_off, mask_off, row_bounds, col_bounds, theta, state1, state2, z0_parts, acts, outs, grads_act,
                 csc_ptr, csc_sample, csc_value, csc_span, scratch, drop_mask, hyper, losses, prof):
    """The core of ``fused_steps``, its groups' fields one by one (the hyperparameters stay a
    named tuple). One parallel loop over the T threads for the whole call (``_team_member``): each
    step is two phases of T parts, and a thread waits for a phase's parts, not for the other
    threads, so the call finishes whatever threads Numba runs the loop on (one after another
    included). Two parallel loops a step, as before, cost the epoch about 4% in forks and joins."""
    n = order.shape[0]
    n_threads = col_bounds.shape[1] - 1
    n_phases = 2 * (n_steps + 1)
    claims = np.zeros(n_phases * n_threads, dtype=np.int64)   # (phases * T,) claims[phase * T + part]
    done = np.zeros(n_phases, dtype=np.int64)                  # (phases,) parts finished
    step_loss = np.zeros((max(n_steps, 1), n_threads))          # (n_steps, T) each part's summed CE
    thread_bad = np.full(n_threads, -1, dtype=np.int64)        # (T,) a bad row each part met
    for tp in prange(n_threads):
        _team_member(np.int64(tp), claims, done, step_loss, thread_bad, indptr, indices, pixels, labels, order,
                     first_step, n_steps, batch_size, sizes, w_off, b_off, act_off, mask_off, row_bounds, col_bounds,
                     theta, state1, state2, z0_parts, acts, outs, grads_act, csc_ptr, csc_sample, csc_value, csc_span,
                     scratch, drop_mask, hyper, prof)
    bad_row = np.int64(-1)
    for t in range(n_threads):
        if thread_bad[t] >= 0:
            bad_row = thread_bad[t]
    for s in range(n_steps):
        if done[2 * s + 1] < n_threads:              # stopped before step s (a bad row)
            break
        lo = (first_step + s) * batch_size
        nb = min(lo + batch_size, n) - lo
        loss = 0.0
        for t in range(n_threads):
            loss += step_loss[s, t]
        losses[s] = loss / nb
    return bad_row
