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

``fused_steps`` (bottom of the file) runs whole training steps in one call: see ``fastnn.fused``.

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

from ._checks import (as_float_array, check_matmul, check_same_shape, prefers_dot_kernel, run_elementwise,
                      run_softmax, run_softmax_cross_entropy, run_softmax_cross_entropy_backward)

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
    n, c = logits.shape
    total = 0.0
    for i in range(n):
        row = logits[i]
        mx = row[0]
        for j in range(1, c):
            if row[j] > mx:
                mx = row[j]
        s = 0.0
        for j in range(c):
            e = np.exp(row[j] - mx)
            probs[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(c):
            probs[i, j] *= inv
        if labels.size:
            total += np.log(s) - (row[labels[i]] - mx)
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



# ---------------------------------------------------------------- the fused training path
# One call runs ``n_steps`` whole SGD steps: gather each shuffled mini-batch, forward,
# softmax cross-entropy, backward and the optimizer update, with no Python in between.
# ``fastnn.fused`` packs the parameters into one flat vector and documents every argument;
# the cython backend has the same function with the same arguments.
#
# How the work is split: each of the T threads takes a contiguous share of the batch (m rows)
# and runs it layer by layer, forward then backward, accumulating its own partial gradient
# row grads[t]; a second parallel loop sums the T rows per parameter, zeroes them and applies
# the optimizer. Layer 0 reads its input as sparse rows (CSR; MNIST pixels are ~81% zero),
# so x @ W0 and the outer products x^T g cost nnz * H instead of D * H; they are hand-written
# loops. The dense products of the later layers call BLAS sgemm/dgemm through ``np.dot``
# (the one place fastnn uses BLAS outside the numpy backend): at these sizes a single-threaded
# BLAS call is ~3x our loops. The caller limits BLAS to one thread per Numba thread (see
# ``fastnn.fused``), so the two thread pools never oversubscribe the cores.
#
# fastmath: ``contract`` (FMA) and ``reassoc``; never the no-NaN/no-inf flags, so a diverging
# run still reports a NaN loss.

ACT_CODES = {"relu": 0, "sigmoid": 1, "tanh": 2}


@njit(cache=True, fastmath={"contract"})
def _activation(z, out, act):
    """out = relu(z) (act 0), sigmoid(z) (1, in float64 as in _sigmoid_kernel) or tanh(z) (2); 1-D."""
    if act == 0:
        _relu_kernel(z, out)
    elif act == 1:
        _sigmoid_kernel(z, out)
    else:
        _tanh_kernel(z, out)


@njit(cache=True, fastmath={"contract"})
def _activation_backward(grad_out, out, grad_in, act):
    """grad_in = grad_out * act'(z), from the activation's output ``out``; 1-D."""
    if act == 0:
        for k in range(out.size):                 # out > 0 exactly where z > 0
            grad_in[k] = grad_out[k] if out[k] > 0 else 0
    elif act == 1:
        _sigmoid_backward_kernel(grad_out, out, grad_in)
    else:
        _tanh_backward_kernel(grad_out, out, grad_in)


def num_threads() -> int:
    """Threads the fused path uses: Numba's (``NUMBA_NUM_THREADS``, default every core)."""
    return numba.get_num_threads()


def fused_path_cached() -> bool:
    """Whether Numba's on-disk cache already holds the fused kernel (else the first call compiles, ~15 s)."""
    import os
    from pathlib import Path

    if numba.config.CACHE_DIR:                          # NUMBA_CACHE_DIR: Numba uses only that
        folders = [Path(numba.config.CACHE_DIR)]
    else:                                               # beside the source, else the user's cache
        folders = [Path(__file__).parent / "__pycache__", Path.home() / ".cache" / "numba"]
    return any(f.is_dir() and os.access(f, os.R_OK) and any(f.rglob("numba_backend.fused_steps-*.nbi"))
               for f in folders)


@njit(cache=True, parallel=True, fastmath={"contract", "reassoc"})
def fused_steps(indptr, indices, values, labels, order, first_step, n_steps, batch_size,
                sizes, w_off, b_off, theta, grads, work, state1, state2, decay,
                act, drop_mask, opt, hyper, t0, losses):
    """SGD steps first_step .. first_step + n_steps - 1 of an epoch, in place; losses[s] = mean CE of step s."""
    # Inner loops run over slices (j >= 0 from range) so that LLVM sees contiguous, non-negative
    # indices and vectorizes them; offset arithmetic inside the index (x[off + j]) blocks that.
    n = order.shape[0]
    n_layers = sizes.shape[0] - 1
    n_threads = grads.shape[0]
    n_params = theta.shape[0]
    one = theta.dtype.type(1)
    zero = theta.dtype.type(0)
    lr, mu, beta1, beta2, eps, keep = hyper[0], hyper[1], hyper[3], hyper[4], hyper[5], hyper[6]
    rows = (batch_size + n_threads - 1) // n_threads       # most samples a thread takes per step
    s_tot = 0
    for l in range(1, n_layers + 1):
        s_tot += sizes[l]
    thread_loss = np.zeros(n_threads)
    chunk = 4096
    n_chunks = (n_params + chunk - 1) // chunk
    for s in range(n_steps):
        lo = (first_step + s) * batch_size
        nb = min(lo + batch_size, n) - lo
        inv_nb = one / nb
        for t in prange(n_threads):
            thread_loss[t] = 0.0
            i0 = (nb * t) // n_threads
            i1 = (nb * (t + 1)) // n_threads
            m = i1 - i0
            wk = work[t]
            gr = grads[t]
            if m == 0:
                continue
            # blocks (m, n_l) of layer outputs: A (after act + dropout), O (before dropout), G (gradients)
            off = 0
            for l in range(n_layers):
                n_in = sizes[l]
                n_out = sizes[l + 1]
                A = wk[rows * off:rows * off + m * n_out].reshape(m, n_out)
                bias = theta[b_off[l]:b_off[l] + n_out]
                if l == 0:                      # sparse rows: z += x_q W0[q, :], four nonzeros per pass over z
                    for i in range(m):
                        z = A[i]
                        for j in range(n_out):
                            z[j] = bias[j]
                        sample = order[lo + i0 + i]
                        q = indptr[sample]
                        q_end = indptr[sample + 1]
                        while q + 4 <= q_end:
                            x0, x1, x2, x3 = values[q], values[q + 1], values[q + 2], values[q + 3]
                            r0 = w_off[0] + indices[q] * n_out
                            r1 = w_off[0] + indices[q + 1] * n_out
                            r2 = w_off[0] + indices[q + 2] * n_out
                            r3 = w_off[0] + indices[q + 3] * n_out
                            w0, w1 = theta[r0:r0 + n_out], theta[r1:r1 + n_out]
                            w2, w3 = theta[r2:r2 + n_out], theta[r3:r3 + n_out]
                            for j in range(n_out):
                                z[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
                            q += 4
                        while q < q_end:
                            x = values[q]
                            wr = w_off[0] + indices[q] * n_out
                            w_row = theta[wr:wr + n_out]
                            for j in range(n_out):
                                z[j] += x * w_row[j]
                            q += 1
                else:
                    poff = off - n_in
                    A_in = wk[rows * poff:rows * poff + m * n_in].reshape(m, n_in)
                    W = theta[w_off[l]:w_off[l] + n_in * n_out].reshape(n_in, n_out)
                    np.dot(A_in, W, A)                                   # (m, n_out), BLAS, in place
                    for i in range(m):
                        z = A[i]
                        for j in range(n_out):
                            z[j] += bias[j]
                if l < n_layers - 1:
                    O = wk[rows * (s_tot + off):rows * (s_tot + off) + m * n_out].reshape(m, n_out)
                    for i in range(m):
                        z = A[i]
                        o = O[i]
                        _activation(z, o, act)
                        if keep < 1:
                            mask = drop_mask[s, nb * off + (i0 + i) * n_out:nb * off + (i0 + i + 1) * n_out]
                            for j in range(n_out):
                                z[j] = o[j] * mask[j]
                        else:
                            for j in range(n_out):
                                z[j] = o[j]
                off += n_out
            # softmax cross-entropy
            c = sizes[n_layers]
            lg = off - c
            L = wk[rows * lg:rows * lg + m * c].reshape(m, c)
            G = wk[rows * (2 * s_tot + lg):rows * (2 * s_tot + lg) + m * c].reshape(m, c)
            for i in range(m):
                logits = L[i]
                g_out = G[i]
                mx = logits[0]
                for j in range(1, c):
                    if logits[j] > mx:
                        mx = logits[j]
                tot = zero
                for j in range(c):
                    e = np.exp(logits[j] - mx)
                    g_out[j] = e
                    tot += e
                y = labels[order[lo + i0 + i]]
                thread_loss[t] += np.log(np.float64(tot)) - np.float64(logits[y] - mx)
                for j in range(c):
                    p = g_out[j] / tot
                    g_out[j] = (p - one) * inv_nb if j == y else p * inv_nb
            # backward
            off = lg
            for l in range(n_layers - 1, -1, -1):
                n_in = sizes[l]
                n_out = sizes[l + 1]
                G = wk[rows * (2 * s_tot + off):rows * (2 * s_tot + off) + m * n_out].reshape(m, n_out)
                g_bias = gr[b_off[l]:b_off[l] + n_out]
                for i in range(m):
                    g = G[i]
                    for j in range(n_out):
                        g_bias[j] += g[j]
                if l == 0:
                    for i in range(m):
                        g = G[i]
                        sample = order[lo + i0 + i]
                        for q in range(indptr[sample], indptr[sample + 1]):
                            x = values[q]
                            wr = w_off[0] + indices[q] * n_out
                            g_row = gr[wr:wr + n_out]
                            for j in range(n_out):
                                g_row[j] += x * g[j]
                    break
                prev = off - n_in
                A_in = wk[rows * prev:rows * prev + m * n_in].reshape(m, n_in)
                W = theta[w_off[l]:w_off[l] + n_in * n_out].reshape(n_in, n_out)
                gW = gr[w_off[l]:w_off[l] + n_in * n_out]
                scratch = wk[3 * rows * s_tot:3 * rows * s_tot + n_in * n_out]
                np.dot(A_in.T, G, scratch.reshape(n_in, n_out))          # (n_in, n_out), BLAS, no allocation
                for k in range(n_in * n_out):
                    gW[k] += scratch[k]
                O = wk[rows * (s_tot + prev):rows * (s_tot + prev) + m * n_in].reshape(m, n_in)
                G_in = wk[rows * (2 * s_tot + prev):rows * (2 * s_tot + prev) + m * n_in].reshape(m, n_in)
                D = G_in
                np.dot(G, W.T, D)                                        # (m, n_in), BLAS, in place
                for i in range(m):
                    d = D[i]
                    o = O[i]
                    g_in = G_in[i]
                    if keep < 1:
                        mask = drop_mask[s, nb * prev + (i0 + i) * n_in:nb * prev + (i0 + i + 1) * n_in]
                        for k in range(n_in):
                            d[k] *= mask[k]
                    _activation_backward(d, o, g_in, act)
                off = prev
        loss = 0.0
        for t in range(n_threads):
            loss += thread_loss[t]
        losses[s] = loss / nb
        step_size = lr
        v_corr = one
        if opt == 2:
            t_adam = t0 + s + 1
            step_size = theta.dtype.type(np.float64(lr) / (1.0 - np.float64(beta1) ** t_adam))
            v_corr = theta.dtype.type(1.0 - np.float64(beta2) ** t_adam)
        for ch in prange(n_chunks):
            k0 = ch * chunk
            k1 = min(n_params, k0 + chunk)
            p_ch = theta[k0:k1]
            g_ch = grads[0, k0:k1]
            l2 = decay[k0:k1]
            for t in range(1, n_threads):
                g_t = grads[t, k0:k1]
                for k in range(k1 - k0):
                    g_ch[k] += g_t[k]
                    g_t[k] = 0
            if opt == 0:
                for k in range(k1 - k0):
                    p_ch[k] -= lr * (g_ch[k] + l2[k] * p_ch[k])
                    g_ch[k] = 0
            elif opt == 1:
                v_ch = state1[k0:k1]
                for k in range(k1 - k0):
                    v = mu * v_ch[k] + (g_ch[k] + l2[k] * p_ch[k])
                    v_ch[k] = v
                    p_ch[k] -= lr * v
                    g_ch[k] = 0
            else:
                m_ch = state1[k0:k1]
                v_ch = state2[k0:k1]
                for k in range(k1 - k0):
                    gk = g_ch[k] + l2[k] * p_ch[k]
                    mm = beta1 * m_ch[k] + (one - beta1) * gk
                    v = beta2 * v_ch[k] + (one - beta2) * (gk * gk)
                    m_ch[k] = mm
                    v_ch[k] = v
                    p_ch[k] -= step_size * mm / (np.sqrt(v / v_corr) + eps)
                    g_ch[k] = 0
