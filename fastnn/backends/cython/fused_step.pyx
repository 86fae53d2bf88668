# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The cython backend's fused training step: ``fused_steps``, whole SGD steps in one call
(``fastnn/backends/numba/fused_step.py`` is the same algorithm, loop for loop)."""
from cython.parallel cimport parallel, threadid
from libc.math cimport exp, log, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from cython cimport floating
from fastnn.backends.cython._shared cimport (
    __builtin_prefetch, _activate, _activate_backward, _gemm, _gemm_into_transposed, _now, _prefetch_row,
    _row_ascending, _sparse_pixels, _sparse_pixels_cols, _sparse_row_cols, _sparse_update, exp_shifted_float,
    fastnn_gemm_init,
)

import numpy as np

from fastnn.backends.fused_interface import check_steps, raise_unsorted_row

fastnn_gemm_init()                     # pick gemm.h's micro-kernel for this CPU

cdef extern from "team.h" nogil:
    int fastnn_team_size()
    void fastnn_team_barrier()
    unsigned int fastnn_denormals_off()
    void fastnn_fp_mode_restore(unsigned int mode)

cdef enum:
    COLUMN_BLOCK = 256  # layer 0's forward, columns at a time: a thread's W0 rows x 256 floats stay in L2
    NARROW = 16      # fewer outputs than this: a dense layer's W is split by rows (fused_interface.NARROW)


# ---------------------------------------------------------------- the fused training path
# The same algorithm, arguments and local names as fastnn/backends/numba/fused_step.py (documented
# in fastnn.training.fused): per step two phases over T threads, one OpenMP team for the whole
# call with a barrier after each phase. Region 1, by parameters:
# thread t finishes the previous step for the parameters it owns (W0 rows row_bounds[t]..,
# columns col_bounds[l, t].. of the biases and dense W_l, rows of a narrow W_l: weight gradient
# fused with the optimizer update) and runs this step's layer 0 over its pixels (its share of z0 and the
# CSC index of its pixels). Region 2, by samples: z0 = b0 + the shares, the dense layers,
# softmax cross-entropy and backward to dL/dz of layer 0. The dense products call fastnn's
# packed GEMM (gemm.h, on the calling thread) through the row-major ``_gemm`` of _shared.pxd. Timers: ``clock_gettime`` nanoseconds into ``prof`` when it has rows.



cdef inline void _update(floating* p, const floating* g, floating* s1, floating* s2, Py_ssize_t count,
                         floating wd, int opt, floating lr, floating mu, floating beta1, floating beta2,
                         floating eps, floating step_size, floating v_corr) noexcept nogil:
    """One optimizer update of ``count`` parameters p from gradient g, as ``fastnn.training.optim``: with
    g' = g + wd p, sgd: p -= lr g'; momentum: s1 = mu s1 + g', p -= lr s1; adam: s1 = b1 s1 +
    (1-b1) g', s2 = b2 s2 + (1-b2) g'^2, p -= step_size s1 / (sqrt(s2 / v_corr) + eps)."""
    cdef Py_ssize_t k
    cdef floating v, m, gk
    if opt == 0:
        for k in range(count):
            p[k] -= lr * (g[k] + wd * p[k])
    elif opt == 1:
        for k in range(count):
            v = mu * s1[k] + (g[k] + wd * p[k])
            s1[k] = v
            p[k] -= lr * v
    else:
        for k in range(count):
            gk = g[k] + wd * p[k]
            m = beta1 * s1[k] + (1 - beta1) * gk
            v = beta2 * s2[k] + (1 - beta2) * (gk * gk)
            s1[k] = m
            s2[k] = v
            p[k] -= step_size * m / (<floating>sqrt(v / v_corr) + eps)


cdef inline Py_ssize_t _lower_bound(const uint16_t* indices, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t key) noexcept nogil:
    """First q in [lo, hi) with indices[q] >= key (indices sorted), else hi."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int64_t _layer0_forward(const int64_t* indptr, const uint16_t* indices, const uint8_t* pixels,
                             const int64_t* batch, Py_ssize_t nb, const floating* W0, Py_ssize_t D,
                             Py_ssize_t H0, Py_ssize_t r0, Py_ssize_t r1, floating* Z, int32_t* ptr,
                             int32_t* sample, floating* value, int64_t* span) noexcept nogil:
    """Z (nb, H0): Z[i] = sum_q x_q W0[q] over sample i's non-zero pixels q in [r0, r1) (x = pixel
    / 255): thread t's share of z0 = x W0. Also the CSC index of those entries: for pixel p in
    [r0, r1), entries ptr[p]:ptr[p+1] of (sample, value) are the batch rows where p is non-zero;
    span (2 nb,): sample i's pixels in [r0, r1) are indices[span[2i]:span[2i+1]] (searched for once,
    by the first pass, for the second). The rows' indptr entries are prefetched all at once, each
    row's pixels two samples ahead. Wider than COLUMN_BLOCK, the columns go a block at a time (the
    first with the checks and the index), so that the block of the thread's W0 rows stays in L2
    while every sample reads it (at 1,024 columns a thread's rows are 1.6 MB). Returns -1, or the
    first sample whose pixel indices do not rise strictly below D (then before reading any W0 row
    through them, leaving Z and the index unfinished)."""
    cdef Py_ssize_t i, j, p, q, q_end, e, c0, c1 = min(H0, COLUMN_BLOCK)
    cdef int64_t row
    cdef floating inv255 = <floating>(1.0 / 255.0)
    cdef floating* z
    for p in range(r0, r1 + 1):
        ptr[p] = 0
    for i in range(nb):                             # the rows' starts: random reads of indptr
        __builtin_prefetch(&indptr[batch[i]], 0, 3)
    for i in range(min(nb, 2)):
        _prefetch_row(indptr, indices, pixels, batch[i])
    for i in range(nb):
        z = Z + i * H0
        for j in range(H0):
            z[j] = 0
        row = batch[i]
        if i + 2 < nb:                              # a later sample's row comes from memory meanwhile
            _prefetch_row(indptr, indices, pixels, batch[i + 2])
        if not _row_ascending(indices, indptr[row], indptr[row + 1], D):
            return row
        q = _lower_bound(indices, indptr[row], indptr[row + 1], r0)
        q_end = _lower_bound(indices, q, indptr[row + 1], r1)
        span[2 * i] = q
        span[2 * i + 1] = q_end
        if c1 == H0:                                # sums in registers
            _sparse_pixels(W0, H0, indices + q, pixels + q, q_end - q, inv255, z)
        else:
            _sparse_pixels_cols(W0, H0, c1, indices + q, pixels + q, q_end - q, inv255, z)
        for q in range(q, q_end):
            ptr[indices[q] + 1] += 1
    c0 = c1
    while c0 < H0:                                  # the other column blocks
        c1 = min(c0 + COLUMN_BLOCK, H0)
        for i in range(nb):
            q = span[2 * i]
            _sparse_pixels_cols(W0 + c0, H0, c1 - c0, indices + q, pixels + q, span[2 * i + 1] - q, inv255,
                                Z + i * H0 + c0)
        c0 = c1
    # the CSC index: counts -> starts, fill (ptr[p] walks to the end of p), shift back to starts
    ptr[r0] = 0
    for p in range(r0, r1):
        ptr[p + 1] += ptr[p]
    for i in range(nb):
        for q in range(span[2 * i], span[2 * i + 1]):
            e = ptr[indices[q]]
            sample[e] = <int32_t>i
            value[e] = <floating>pixels[q] * inv255
            ptr[indices[q]] = <int32_t>(e + 1)
    for p in range(r1, r0, -1):
        ptr[p] = ptr[p - 1]
    ptr[r0] = 0
    return -1


cdef void _layer0_grad_update(const int32_t* ptr, const int32_t* sample, const floating* value,
                              const floating* G0, floating* W0, floating* S1, floating* S2, Py_ssize_t H0,
                              Py_ssize_t r0, Py_ssize_t r1, floating* acc, floating wd, int opt, floating lr,
                              floating mu, floating beta1, floating beta2, floating eps, floating step_size,
                              floating v_corr) noexcept nogil:
    """For every row p in [r0, r1) of W0 (D, H0): grad W0[p] = sum_e value[e] G0[sample[e]] over the
    CSC entries of pixel p (the batch rows where it is non-zero), then that row's update. With SGD or
    momentum, the whole blocks of columns are updated from the registers the sums are in
    (``_sparse_update``: the gradient row is never stored); Adam's update, and the last columns
    short of a block, go through ``acc``."""
    cdef Py_ssize_t p, j, j0
    cdef floating* g = acc
    for p in range(r0, r1):
        j0 = 0
        if opt <= 1:
            j0 = _sparse_update(G0, H0, sample + ptr[p], value + ptr[p], ptr[p + 1] - ptr[p], W0 + p * H0,
                                S1 + p * H0, wd, mu, lr, opt == 1)
        if j0 == H0:
            continue
        for j in range(j0, H0):
            g[j] = 0
        _sparse_row_cols(G0 + j0, H0, H0 - j0, sample + ptr[p], value + ptr[p], ptr[p + 1] - ptr[p], g + j0)
        _update(W0 + p * H0 + j0, g + j0, S1 + p * H0 + j0, S2 + p * H0 + j0, H0 - j0, wd, opt, lr, mu, beta1,
                beta2, eps, step_size, v_corr)


cdef void _dense_grad_update(const floating* A_in, const floating* G, floating* W, floating* S1, floating* S2,
                             Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t nb,
                             floating* scratch, floating wd, int opt, floating lr, floating mu, floating beta1,
                             floating beta2, floating eps, floating step_size, floating v_corr) noexcept nogil:
    """grad W[:, c0:c1] = A_in^T @ G[:, c0:c1] (packed GEMM, into scratch), then each row's update.
    A_in (nb, n_in), G (nb, n_out), W (n_in, n_out)."""
    cdef Py_ssize_t r, w = c1 - c0
    cdef floating* gW = scratch                    # (n_in, w)
    _gemm(True, False, n_in, w, nb, 1, A_in, n_in, G + c0, n_out, 0, gW, w)
    for r in range(n_in):
        _update(W + r * n_out + c0, gW + r * w, S1 + r * n_out + c0, S2 + r * n_out + c0, w, wd, opt, lr, mu,
                beta1, beta2, eps, step_size, v_corr)


cdef void _dense_rows_grad_update(const floating* A_in, const floating* G, floating* W, floating* S1,
                                  floating* S2, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t r0, Py_ssize_t r1,
                                  Py_ssize_t nb, floating* scratch, floating wd, int opt, floating lr, floating mu,
                                  floating beta1, floating beta2, floating eps, floating step_size,
                                  floating v_corr) noexcept nogil:
    """A narrow layer's share by rows: grad W[r0:r1] = A_in[:, r0:r1]^T @ G (packed GEMM, into
    scratch), then one update of those rows, a contiguous run of (r1 - r0) n_out parameters.
    A_in (nb, n_in), G (nb, n_out), W (n_in, n_out)."""
    cdef floating* gW = scratch                    # (r1 - r0, n_out)
    if r1 <= r0:
        return
    _gemm(True, False, r1 - r0, n_out, nb, 1, A_in + r0, n_in, G, n_out, 0, gW, n_out)
    _update(W + r0 * n_out, gW, S1 + r0 * n_out, S2 + r0 * n_out, (r1 - r0) * n_out, wd, opt, lr, mu, beta1, beta2,
            eps, step_size, v_corr)


cdef void _bias_grad_update(const floating* G, floating* b, floating* s1, floating* s2, Py_ssize_t n_out,
                            Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t nb, floating* acc, int opt, floating lr,
                            floating mu, floating beta1, floating beta2, floating eps, floating step_size,
                            floating v_corr) noexcept nogil:
    """grad b[c0:c1] = sum_i G[i, c0:c1], then its update (no weight decay on biases)."""
    cdef Py_ssize_t i, j
    for j in range(c1 - c0):
        acc[j] = 0
    for i in range(nb):
        for j in range(c1 - c0):
            acc[j] += G[i * n_out + c0 + j]
    _update(b + c0, acc, s1 + c0, s2 + c0, c1 - c0, 0, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)


cdef double _softmax_xent_rows(const floating* logits, Py_ssize_t m, Py_ssize_t c, const int64_t* labels,
                               const int64_t* batch, floating* G, floating inv_nb, floating smooth) noexcept nogil:
    """G[i] = (softmax(logits[i]) - t_i) / nb for m rows of c, with the smoothed target t_i = (1 - smooth)
    one_hot(y_i) + smooth / c; returns sum_i -sum_j t_ij log p_ij (the cross-entropy at smooth 0).
    float32's exponentials by exp_vector.h's polynomial, a row at once; float64's by libm."""
    cdef Py_ssize_t i, j
    cdef int64_t y
    cdef floating mx, tot, p
    cdef floating off = smooth / c                      # t_ij for j != y_i
    cdef floating on = (1 - smooth) + off               # t_ij for j == y_i
    cdef const floating* z
    cdef floating* g
    cdef double total = 0, shifted_sum
    for i in range(m):
        z = logits + i * c
        g = G + i * c
        mx = z[0]
        for j in range(1, c):
            if z[j] > mx:
                mx = z[j]
        tot = 0
        shifted_sum = 0
        if floating is float:
            exp_shifted_float(z, c, mx, g)          # 16 lanes at a time (exp_vector.h)
        else:
            for j in range(c):
                g[j] = exp(z[j] - mx)
        for j in range(c):
            tot += g[j]
            shifted_sum += <double>(z[j] - mx)
        y = labels[batch[i]]
        # -sum_j t_j log p_j = log(tot) - (1 - smooth) (z_y - mx) - smooth / c sum_j (z_j - mx)
        total += log(<double>tot) - (1.0 - <double>smooth) * <double>(z[y] - mx)
        if smooth != 0:
            total -= <double>smooth / c * shifted_sum
        for j in range(c):
            p = g[j] / tot
            g[j] = (p - on) * inv_nb if j == y else (p - off) * inv_nb
    return total


cdef void _hidden_output(floating* A, floating* O, const floating* mask, Py_ssize_t m, Py_ssize_t n, int act,
                         bint dropout) noexcept nogil:
    """Hidden rows (m, n): O = act(A) and A = O * mask with dropout, else A = act(A) in place (O is A)."""
    cdef Py_ssize_t k
    _activate(A, O, m * n, act)
    if dropout:
        for k in range(m * n):
            A[k] = O[k] * mask[k]


cdef struct Hyper:
    # fastnn.backends.fused_interface.Hyperparameters' floats, as C doubles (each a value of theta's
    # dtype, so the cast back to float is exact)
    double lr, momentum, weight_decay, beta1, beta2, eps, keep, label_smoothing


cdef void _finish_step(Py_ssize_t t, Py_ssize_t nb, const int64_t[::1] sizes, const int64_t[::1] w_off,
                       const int64_t[::1] b_off, const int64_t[::1] act_off, const int64_t[::1] row_bounds,
                       const int64_t[:, ::1] col_bounds, floating* th, floating* st1, floating* st2,
                       const floating* ac, const floating* ga, int32_t* ptr, int32_t* sample, floating* value,
                       floating* acc, int opt, const Hyper* hyper, floating step_size, floating v_corr,
                       long long* prof_t) noexcept nogil:
    """Region 1, first half: thread t's weight gradients of the step just run (nb rows), each
    fused with its update, for the parameters t owns: W0 rows row_bounds[t]:row_bounds[t+1]
    (through its CSC index), columns col_bounds[l, t]:col_bounds[l, t+1] of b_l and dense W_l (of a
    narrow one, fewer than NARROW outputs, rows n_in t // T .. n_in (t + 1) // T)."""
    cdef Py_ssize_t n_layers = sizes.shape[0] - 1, l, n_in, n_out, c0, c1
    cdef Py_ssize_t n_threads = col_bounds.shape[1] - 1
    cdef floating lr = <floating>hyper.lr, mu = <floating>hyper.momentum, wd = <floating>hyper.weight_decay
    cdef floating beta1 = <floating>hyper.beta1, beta2 = <floating>hyper.beta2, eps = <floating>hyper.eps
    cdef floating* S1
    cdef floating* S2
    cdef const floating* G
    cdef long long tick = _now() if prof_t != NULL else 0, now
    for l in range(n_layers):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        c0 = col_bounds[l, t]
        c1 = col_bounds[l, t + 1]
        S1 = st1 + w_off[l] if opt > 0 else th + w_off[l]
        S2 = st2 + w_off[l] if opt == 2 else th + w_off[l]
        G = ga + act_off[l]                                                             # (nb, n_out)
        if l == 0:
            _layer0_grad_update(ptr, sample, value, G, th + w_off[0], S1, S2, n_out, row_bounds[t],
                                row_bounds[t + 1], acc, wd, opt, lr, mu, beta1, beta2, eps, step_size, v_corr)
        elif n_out < NARROW:                                # a narrow layer: thread t's rows of W_l
            _dense_rows_grad_update(ac + act_off[l - 1], G, th + w_off[l], S1, S2, n_in, n_out,
                                    (n_in * t) // n_threads, (n_in * (t + 1)) // n_threads, nb, acc, wd, opt, lr,
                                    mu, beta1, beta2, eps, step_size, v_corr)
        elif c1 > c0:
            _dense_grad_update(ac + act_off[l - 1], G, th + w_off[l], S1, S2, n_in, n_out, c0, c1, nb, acc, wd,
                               opt, lr, mu, beta1, beta2, eps, step_size, v_corr)
        if c1 > c0:
            _bias_grad_update(G, th + b_off[l], st1 + b_off[l] if opt > 0 else th + b_off[l],
                              st2 + b_off[l] if opt == 2 else th + b_off[l], n_out, c0, c1, nb, acc, opt, lr, mu,
                              beta1, beta2, eps, step_size, v_corr)
        if prof_t != NULL:
            now = _now()
            prof_t[2 + 2 * n_layers + l] += now - tick
            tick = now


cdef double _thread_step(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t nb, const int64_t* labels,
                         const int64_t* batch, const int64_t[::1] sizes, const int64_t[::1] w_off,
                         const int64_t[::1] b_off, const int64_t[::1] act_off, const int64_t[::1] mask_off,
                         const floating* th, const floating* z0_parts, Py_ssize_t z0_stride, int n_threads,
                         floating* ac, floating* ou, floating* ga, int act, const floating* mask_s, bint dropout,
                         floating smooth, long long* prof_t) noexcept nogil:
    """Region 2: batch rows i0:i1 (sample ids batch[i]): z0 = b0 + the threads' shares of x W0,
    the dense layers forward (packed GEMM), softmax cross-entropy, backward down to dL/dz of
    layer 0 (packed GEMM). Returns the rows' summed cross-entropy."""
    cdef Py_ssize_t n_layers = sizes.shape[0] - 1, m = i1 - i0, H0 = sizes[1], l, i, j, u, n_in, n_out, c
    cdef floating inv_nb = <floating>1.0 / nb
    cdef floating* A
    cdef floating* O
    cdef floating* G
    cdef floating* G_in
    cdef const floating* mask
    cdef const floating* Z_part
    cdef double loss
    cdef long long tick = _now() if prof_t != NULL else 0, now
    A = ac + act_off[0] + i0 * H0                                                       # (m, H0)
    for i in range(m):
        for j in range(H0):
            A[i * H0 + j] = th[b_off[0] + j]
    for u in range(n_threads):
        Z_part = z0_parts + u * z0_stride + i0 * H0                                     # (m, H0)
        for j in range(m * H0):
            A[j] += Z_part[j]
    if n_layers > 1:
        _hidden_output(A, ou + act_off[0] + i0 * H0, mask_s + nb * mask_off[0] + i0 * H0 if dropout else A,
                       m, H0, act, dropout)
    if prof_t != NULL:
        now = _now()
        prof_t[2] += now - tick
        tick = now
    for l in range(1, n_layers):                                    # forward, dense layers
        n_in = sizes[l]
        n_out = sizes[l + 1]
        A = ac + act_off[l] + i0 * n_out                                                # (m, n_out)
        for i in range(m):
            for j in range(n_out):
                A[i * n_out + j] = th[b_off[l] + j]
        _gemm(False, False, m, n_out, n_in, 1, ac + act_off[l - 1] + i0 * n_in, n_in,
              th + w_off[l], n_out, 1, A, n_out)                                       # A += A_in @ W
        if l < n_layers - 1:
            _hidden_output(A, ou + act_off[l] + i0 * n_out, mask_s + nb * mask_off[l] + i0 * n_out if dropout else A,
                           m, n_out, act, dropout)
        if prof_t != NULL:
            now = _now()
            prof_t[2 + l] += now - tick
            tick = now
    c = sizes[n_layers]
    loss = _softmax_xent_rows(ac + act_off[n_layers - 1] + i0 * c, m, c, labels, batch + i0,
                              ga + act_off[n_layers - 1] + i0 * c, inv_nb, smooth)
    if prof_t != NULL:
        now = _now()
        prof_t[0] += now - tick
        tick = now
    for l in range(n_layers - 1, 0, -1):                            # backward, down to layer 0
        n_in = sizes[l]
        n_out = sizes[l + 1]
        G = ga + act_off[l] + i0 * n_out                                                # (m, n_out)
        G_in = ga + act_off[l - 1] + i0 * n_in                                          # (m, n_in)
        _gemm_into_transposed(False, True, n_in, m, n_out, th + w_off[l], n_out, G, n_out, G_in,
                              n_in)                                  # G_in^T = W @ G^T: W packed along its rows
        O = ou + act_off[l - 1] + i0 * n_in                                             # (m, n_in)
        if dropout:
            mask = mask_s + nb * mask_off[l - 1] + i0 * n_in
            for j in range(m * n_in):
                G_in[j] *= mask[j]
        _activate_backward(G_in, O, m * n_in, act)
        if prof_t != NULL:
            now = _now()
            prof_t[2 + n_layers + l] += now - tick
            tick = now
    return loss


def fused_steps(batch, params, work, hyper, Py_ssize_t first_step, Py_ssize_t n_steps, Py_ssize_t batch_size,
                losses, prof):
    """SGD steps first_step .. first_step + n_steps - 1 of an epoch, in place; losses[s] = mean CE
    of step s. The groups (``CsrBatch``, ``Parameters``, ``WorkBuffers``, ``Hyperparameters``)
    and ``prof`` are documented in ``fastnn.backends.fused_interface``, whose ``check_steps``
    checks every size and index first; the algorithm is in ``fastnn.training.fused``. A thin
    wrapper: the fields go by name to ``_fused_steps``, the ``nogil`` core."""
    check_steps(batch, params, work, hyper, first_step, n_steps, batch_size, losses, prof)
    cdef Hyper h
    h.lr, h.momentum, h.weight_decay = hyper.lr, hyper.momentum, hyper.weight_decay
    h.beta1, h.beta2, h.eps = hyper.beta1, hyper.beta2, hyper.eps
    h.keep, h.label_smoothing = hyper.keep, hyper.label_smoothing
    bad_row = _fused_steps(batch.indptr, batch.indices, batch.pixels, batch.labels, batch.order, first_step,
                           n_steps, batch_size, params.sizes, params.w_off, params.b_off, work.act_off,
                           work.mask_off, work.row_bounds, work.col_bounds, params.theta, params.state1,
                           params.state2, work.z0_parts, work.acts, work.outs, work.grads_act, work.csc_ptr,
                           work.csc_sample, work.csc_value, work.csc_span, work.scratch, hyper.act, work.drop_mask,
                           hyper.opt, h,
                           hyper.t0, losses, prof)
    if bad_row >= 0:
        raise_unsorted_row(bad_row, int(params.sizes[0]))


def _fused_steps(const int64_t[::1] indptr, const uint16_t[::1] indices, const uint8_t[::1] pixels,
                 const int64_t[::1] labels, const int64_t[::1] order, Py_ssize_t first_step, Py_ssize_t n_steps,
                 Py_ssize_t batch_size, const int64_t[::1] sizes, const int64_t[::1] w_off, const int64_t[::1] b_off,
                 const int64_t[::1] act_off, const int64_t[::1] mask_off, const int64_t[::1] row_bounds,
                 const int64_t[:, ::1] col_bounds, floating[::1] theta, floating[::1] state1, floating[::1] state2,
                 floating[:, ::1] z0_parts, floating[::1] acts, floating[::1] outs, floating[::1] grads_act,
                 int32_t[:, ::1] csc_ptr, int32_t[:, ::1] csc_sample, floating[:, ::1] csc_value,
                 int64_t[:, ::1] csc_span, floating[:, ::1] scratch, int act, const floating[:, ::1] drop_mask, int opt, Hyper hyper,
                 Py_ssize_t t0, double[::1] losses, long long[:, ::1] prof):
    """The core of ``fused_steps``, its groups' fields one by one. One OpenMP team for the whole
    call (team.h): each step is two phases over the T threads with a barrier after each, region 1
    (``_finish_step`` of the previous step, then ``_layer0_forward`` of this one) and region 2
    (``_thread_step``). (A parallel region per phase cost a fork and a join each: 4% of the epoch.)
    A team of fewer than T threads (the OpenMP runtime may give fewer) shares the T parts. Each
    thread flushes subnormals to zero for the call and restores its floating-point mode after it
    (``fastnn_denormals_off``, team.h)."""
    cdef Py_ssize_t n = order.shape[0], n_layers = sizes.shape[0] - 1
    cdef int n_threads = <int>(col_bounds.shape[1] - 1)
    cdef Py_ssize_t D = sizes[0], H0 = sizes[1], s = 0, t = 0, lo = 0, nb = 0, nb_prev = 0, i0 = 0, i1 = 0
    cdef floating lr = <floating>hyper.lr, beta1 = <floating>hyper.beta1, beta2 = <floating>hyper.beta2
    cdef floating keep = <floating>hyper.keep, smooth = <floating>hyper.label_smoothing
    cdef floating step_size = lr, v_corr = 1
    cdef bint dropout = keep < 1, timing = prof.shape[0] > 0
    cdef double[::1] thread_loss = np.zeros(n_threads)
    cdef int64_t[::1] thread_bad = np.full(n_threads, -1, dtype=np.int64)   # (T,) a bad row each part met
    cdef int64_t bad_row = -1, bad = -1
    cdef double total = 0
    cdef long long t_region = 0, tick = 0
    cdef floating* th = &theta[0]
    cdef floating* ac = &acts[0]
    cdef floating* ou = &outs[0] if dropout else &acts[0]
    cdef long long* prof_t = NULL
    cdef int tid = 0, team = 1                      # (set before the team: Cython copies them out after it)
    cdef unsigned int fp_mode = 0
    with nogil, parallel(num_threads=n_threads):
        fp_mode = fastnn_denormals_off()            # subnormals as zero in this thread until the call ends (team.h)
        tid = threadid()
        team = fastnn_team_size()                   # parts tid, tid + team, ... are this thread's
        step_size = lr
        v_corr = 1
        t_region = 0
        for s in range(n_steps + 1):
            # ---- region 1, by parameters: finish step s - 1, then step s's layer 0 over own W0 rows
            if opt == 2 and s > 0:                  # Adam's bias corrections for step t0 + s
                step_size = <floating>(<double>lr / (1.0 - (<double>beta1) ** (t0 + s)))
                v_corr = <floating>(1.0 - (<double>beta2) ** (t0 + s))
            if timing and tid == 0:
                t_region = _now()
            t = tid
            while t < n_threads:
                prof_t = &prof[t, 0] if timing else NULL
                if s > 0:
                    nb_prev = min((first_step + s) * batch_size, n) - (first_step + s - 1) * batch_size
                    _finish_step(t, nb_prev, sizes, w_off, b_off, act_off, row_bounds, col_bounds, th, &state1[0],
                                 &state2[0], ac, &grads_act[0], &csc_ptr[t, 0], &csc_sample[t, 0],
                                 &csc_value[t, 0], &scratch[t, 0], opt, &hyper, step_size, v_corr, prof_t)
                if s < n_steps:
                    tick = _now() if timing else 0
                    lo = (first_step + s) * batch_size
                    nb = min(lo + batch_size, n) - lo
                    thread_bad[t] = _layer0_forward(&indptr[0], &indices[0], &pixels[0], &order[lo], nb,
                                                    th + w_off[0], D, H0, row_bounds[t], row_bounds[t + 1],
                                                    &z0_parts[t, 0], &csc_ptr[t, 0], &csc_sample[t, 0],
                                                    &csc_value[t, 0], &csc_span[t, 0])
                    if timing:
                        prof_t[2] += _now() - tick
                t = t + team
            fastnn_team_barrier()
            if timing and tid == 0:
                prof[n_threads, 0] += _now() - t_region
            if s == n_steps:
                break
            bad = -1
            for t in range(n_threads):              # a row the kernel cannot read: every thread stops before step s
                if thread_bad[t] >= 0:
                    bad = thread_bad[t]
            if bad >= 0:
                break
            # ---- region 2, by samples
            lo = (first_step + s) * batch_size
            nb = min(lo + batch_size, n) - lo
            if timing and tid == 0:
                t_region = _now()
            t = tid
            while t < n_threads:
                i0 = (nb * t) // n_threads
                i1 = (nb * (t + 1)) // n_threads
                thread_loss[t] = 0
                if i1 > i0:
                    thread_loss[t] = _thread_step(i0, i1, nb, &labels[0], &order[lo], sizes, w_off, b_off, act_off,
                                                  mask_off, th, &z0_parts[0, 0], z0_parts.shape[1], n_threads, ac,
                                                  ou, &grads_act[0], act,
                                                  &drop_mask[s if dropout else 0, 0], dropout, smooth,
                                                  &prof[t, 0] if timing else NULL)
                t = t + team
            fastnn_team_barrier()                   # thread_loss is written again only after the next one
            if tid == 0:
                if timing:
                    prof[n_threads, 1] += _now() - t_region
                total = 0
                for t in range(n_threads):
                    total = total + thread_loss[t]
                losses[s] = total / nb
        fastnn_fp_mode_restore(fp_mode)
    for t in range(n_threads):
        if thread_bad[t] >= 0:
            bad_row = thread_bad[t]
    return bad_row
