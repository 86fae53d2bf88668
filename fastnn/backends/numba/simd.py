"""Register-blocked row accumulation for the numba backend, written in LLVM IR (``@intrinsic``).

``accumulate_rows(W, n_out, col0, idx, val, q0, q1, scale, z_in, z)``: for the 8 vectors of
columns col0 .. col0 + 8 L (L = 32 bytes / itemsize: 8 float32 or 4 float64),

    z[col0 + j] = z_in[col0 + j] + sum_{q0 <= q < q1} x_q W[idx[q] n_out + col0 + j]

with W (n_in * n_out,) the flat row-major weights and (idx, val) the non-zeros: x_q = val[q]
for float values, x_q = float(val[q]) * scale for integer ones (uint8 pixels: scale = 1/255,
bit-identical to ``fastnn.data.datasets.to_float``); idx of any integer type (uint16 pixel indices,
int32 batch rows). z_in may be z itself (accumulate).
Why IR: in plain numba the loop over j with z in memory is vectorized, but LLVM cannot prove
that z does not overlap W, so z is loaded and stored for every non-zero; here the eight partial
sums are SSA values (eight vector registers) for the whole q loop, and z is read and written once
(the same kernel as the Cython backend's ``fastnn/backends/cython/sparse_row.h``). Each sum is accumulated in q
order with ``llvm.fmuladd`` (an FMA where the CPU has one), as the Cython kernel does; the two
backends' logits still differ in the last place here and there (measured: at most 2.4e-7 on MNIST
logits), where one compiler fuses a multiply-add that the other rounds twice.
No bounds checks: the caller guarantees col0 + 8 L <= n_out and valid indices.

``sparse_row`` is the whole row (every column) on top of it, the numba twin of the Cython
backend's ``sparse_row_T``/``sparse_pixels_T``: the fused forward (``fused_forward.py``) and the
fused training path's layer 0 forward and weight gradient (``fused_step.py``) call it.

``sparse_update`` is the weight gradient's row fused with its SGD or momentum update: the
sums stay in registers and update the parameters from there (the Cython twin: sparse_row.h's
``sparse_update_T``).
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

VECTOR_BYTES = 32    # AVX2 registers; AVX-512 CPUs run them as well (LLVM may fuse pairs)
BLOCK_VECTORS = 8    # eight partial-sum vectors (16 AVX2 registers: 8 sums, the loads, the broadcast)


def host_isa() -> str:
    """The widest vector ISA the CPU reports to LLVM: 'avx512', 'avx2' (with FMA) or 'generic'."""
    features = llvm.get_host_cpu_features()
    if features.get("avx512f"):
        return "avx512"
    if features.get("avx2") and features.get("fma"):
        return "avx2"
    return "generic"


# With AVX-512, the widest column blocks go 8 or 4 64-byte vectors at a time (the Cython
# backend's sparse_row.h does the same under __AVX512F__): one pass over the non-zeros for 128
# float outputs instead of two. Same sums, same order.
WIDE = host_isa() == "avx512"


def lanes(dtype, vector_bytes: int = VECTOR_BYTES) -> int:
    """Vector lanes of one ``vector_bytes`` register for a numba float type."""
    return vector_bytes // (dtype.bitwidth // 8)


def broadcast(builder, x, vec):
    """IR: the scalar x in every lane of the vector type ``vec`` (insert, then a zero shuffle)."""
    xv = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(xv, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count))


class _VectorIO:
    """IR helpers for one vector type: ``load``/``store`` of a vector at a pointer to its element
    type (element-aligned), and ``fma`` (``llvm.fmuladd``: an FMA where the CPU has one)."""

    def __init__(self, builder, fty, llf, n_lanes):
        self.builder, self.align = builder, fty.bitwidth // 8
        self.vec = ir.VectorType(llf, n_lanes)
        self.n_lanes = n_lanes
        self.fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.vec, [self.vec] * 3),
                                                      f"llvm.fmuladd.v{n_lanes}f{fty.bitwidth}")

    def load(self, ptr):
        inst = self.builder.load(self.builder.bitcast(ptr, self.vec.as_pointer()))
        inst.align = self.align
        return inst

    def store(self, value, ptr):
        inst = self.builder.store(value, self.builder.bitcast(ptr, self.vec.as_pointer()))
        inst.align = self.align

    def fma(self, a, b, c):
        return self.builder.call(self.fmuladd, [a, b, c])

    def at(self, data, base, k):
        """The pointer to vector k of the block that starts at element ``base`` of ``data``."""
        return self.builder.gep(data, [self.builder.add(base, ir.Constant(ir.IntType(64), k * self.n_lanes))])


def counted_loop(builder, lo, hi, start, body, name="loop"):
    """IR: ``for q in [lo, hi): values = body(q, values)`` (q int64), the values SSA phis (kept in
    registers) from ``start``; ``body`` emits the step and returns the new values. Returns the
    values after the loop, the builder positioned after it. The micro-kernels' common skeleton."""
    i64 = ir.IntType(64)
    entry = builder.block
    head = builder.append_basic_block(f"{name}.head")
    step = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    q = builder.phi(i64)
    q.add_incoming(lo, entry)
    values = []
    for value in start:
        phi = builder.phi(value.type)
        phi.add_incoming(value, entry)
        values.append(phi)
    builder.cbranch(builder.icmp_signed("<", q, hi), step, done)
    builder.position_at_end(step)
    new = body(q, values)
    q_next = builder.add(q, ir.Constant(i64, 1))
    step_end = builder.block
    builder.branch(head)
    q.add_incoming(q_next, step_end)
    for phi, value in zip(values, new):
        phi.add_incoming(value, step_end)
    builder.position_at_end(done)
    return values


def _row_sums(builder, io, start, q0_v, q1_v, idx_data, idx_signed, value_of, W_data, n_out_v, col0_v):
    """IR: the loop over q0 <= q < q1 of acc_k = fma(x_q, W[idx[q] n_out + col0 + k L ..], acc_k),
    the sums in q order, from the vectors ``start``, as SSA values (registers) for the whole loop.
    ``value_of(q)`` emits x_q (a scalar). Returns the sums, the builder after the loop."""
    i64 = ir.IntType(64)

    def step(q, accs):
        row = builder.load(builder.gep(idx_data, [q]))
        row = builder.sext(row, i64) if idx_signed else builder.zext(row, i64)
        base = builder.add(builder.mul(row, n_out_v), col0_v)
        xv = broadcast(builder, value_of(q), io.vec)
        return [io.fma(xv, io.load(io.at(W_data, base, k)), acc) for k, acc in enumerate(accs)]

    return counted_loop(builder, q0_v, q1_v, start, step, "rows")


def _accumulate_rows(vector_bytes: int, n_vectors: int):
    """``accumulate_rows`` for ``n_vectors`` vectors of ``vector_bytes`` (see the module docstring)."""
    @intrinsic
    def accumulate(typingctx, W, n_out, col0, idx, val, q0, q1, scale, z_in, z):
        return _accumulate_codegen(vector_bytes, n_vectors, W, n_out, col0, idx, val, q0, q1, scale, z_in, z)
    return accumulate


def _accumulate_codegen(vector_bytes, n_vectors, W, n_out, col0, idx, val, q0, q1, scale, z_in, z):
    """The signature and code of ``accumulate_rows``. W, z_in, z: 1-D arrays of one float type;
    idx: integers; val: that float type, or integers scaled by ``scale`` (of the float type)."""
    if not (isinstance(W, types.Array) and isinstance(W.dtype, types.Float) and W.dtype == z.dtype == z_in.dtype
            and isinstance(idx.dtype, types.Integer)
            and (val.dtype == W.dtype or isinstance(val.dtype, types.Integer))):
        return None
    fty = W.dtype
    n_lanes = lanes(fty, vector_bytes)
    sig = types.none(W, n_out, col0, idx, val, q0, q1, scale, z_in, z)

    def codegen(context, builder, signature, args):
        idx_ty, val_ty = signature.args[3].dtype, signature.args[4].dtype
        llf = context.get_value_type(fty)
        io = _VectorIO(builder, fty, llf, n_lanes)

        def data(k):
            return context.make_array(signature.args[k])(context, builder, args[k]).data

        W_data, idx_data, val_data, zin_data, z_data = data(0), data(3), data(4), data(8), data(9)
        scale_v = context.cast(builder, args[7], signature.args[7], fty)
        n_out_v, col0_v, q0_v, q1_v = (context.cast(builder, args[k], signature.args[k], types.int64)
                                       for k in (1, 2, 5, 6))

        def value_of(q):
            x = builder.load(builder.gep(val_data, [q]))
            if isinstance(val_ty, types.Integer):               # a pixel: float(pixel) * scale
                x = builder.fmul(builder.sitofp(x, llf) if val_ty.signed else builder.uitofp(x, llf), scale_v)
            return x

        start = [io.load(io.at(zin_data, col0_v, k)) for k in range(n_vectors)]
        accs = _row_sums(builder, io, start, q0_v, q1_v, idx_data, idx_ty.signed, value_of, W_data, n_out_v, col0_v)
        for k, acc in enumerate(accs):
            io.store(acc, io.at(z_data, col0_v, k))
        return context.get_dummy_value()

    return sig, codegen


accumulate_rows = _accumulate_rows(VECTOR_BYTES, BLOCK_VECTORS)
accumulate_rows_wide8 = _accumulate_rows(64, 8)
accumulate_rows_wide4 = _accumulate_rows(64, 4)


def _sparse_update(vector_bytes: int, n_vectors: int):
    """``sparse_update`` for ``n_vectors`` vectors of ``vector_bytes`` (see its docstring)."""
    @intrinsic
    def update(typingctx, G, n_out, col0, idx, val, q0, q1, P, S, p_off, wd, mu, lr, momentum):
        return _sparse_update_codegen(vector_bytes, n_vectors, G, n_out, col0, idx, val, q0, q1, P, S, p_off, wd, mu,
                                      lr, momentum)
    return update


def _sparse_update_codegen(vector_bytes, n_vectors, G, n_out, col0, idx, val, q0, q1, P, S, p_off, wd, mu, lr,
                           momentum):
    """The signature and code of a ``sparse_update`` block: columns col0 .. col0 + n_vectors L of
    g = sum_{q0 <= q < q1} val[q] G[idx[q] n_out + col0 + j], the sums from zero in q order
    (``llvm.fmuladd``) held in registers, then the update of P[p_off + col0 + j] (and the velocity
    S[...] when ``momentum``) from the registers, with the contractions ``_update`` compiles to:
    t = fma(wd, p, g); momentum: s = fma(mu, s, t), p = fma(-lr, s, p); sgd: p = fma(-lr, t, p)."""
    if not (isinstance(G, types.Array) and isinstance(G.dtype, types.Float) and G.dtype == P.dtype == S.dtype
            and val.dtype == G.dtype and isinstance(idx.dtype, types.Integer)):
        return None
    fty = G.dtype
    n_lanes = lanes(fty, vector_bytes)
    sig = types.none(G, n_out, col0, idx, val, q0, q1, P, S, p_off, wd, mu, lr, momentum)

    def codegen(context, builder, signature, args):
        idx_ty = signature.args[3].dtype
        llf = context.get_value_type(fty)
        io = _VectorIO(builder, fty, llf, n_lanes)

        def data(k):
            return context.make_array(signature.args[k])(context, builder, args[k]).data

        G_data, idx_data, val_data, P_data, S_data = data(0), data(3), data(4), data(7), data(8)
        n_out_v, col0_v, q0_v, q1_v, poff_v = (context.cast(builder, args[k], signature.args[k], types.int64)
                                               for k in (1, 2, 5, 6, 9))
        wd_vec, mu_vec = (broadcast(builder, context.cast(builder, args[k], signature.args[k], fty), io.vec)
                          for k in (10, 11))
        neg_lr = broadcast(builder, builder.fneg(context.cast(builder, args[12], signature.args[12], fty)), io.vec)
        momentum = context.cast(builder, args[13], signature.args[13], types.boolean)
        zero = ir.Constant(io.vec, [0.0] * n_lanes)
        accs = _row_sums(builder, io, [zero] * n_vectors, q0_v, q1_v, idx_data, idx_ty.signed,
                         lambda q: builder.load(builder.gep(val_data, [q])), G_data, n_out_v, col0_v)
        start = builder.add(poff_v, col0_v)
        with builder.if_else(momentum) as (with_velocity, plain):
            with with_velocity:
                for k, g in enumerate(accs):
                    p_ptr, s_ptr = io.at(P_data, start, k), io.at(S_data, start, k)
                    p = io.load(p_ptr)
                    v = io.fma(mu_vec, io.load(s_ptr), io.fma(wd_vec, p, g))     # s = mu s + (g + wd p)
                    io.store(v, s_ptr)
                    io.store(io.fma(neg_lr, v, p), p_ptr)                       # p -= lr s
            with plain:
                for k, g in enumerate(accs):
                    p_ptr = io.at(P_data, start, k)
                    p = io.load(p_ptr)
                    io.store(io.fma(neg_lr, io.fma(wd_vec, p, g), p), p_ptr)          # p -= lr (g + wd p)
        return context.get_dummy_value()

    return sig, codegen


sparse_update8 = _sparse_update(VECTOR_BYTES, BLOCK_VECTORS)
sparse_update_wide8 = _sparse_update(64, 8)
sparse_update_wide4 = _sparse_update(64, 4)


@njit(cache=True, fastmath={"contract"}, inline="always")
def sparse_update(G_flat, n_out, idx, val, q0, q1, P, S, p_off, wd, mu, lr, momentum):
    """A weight gradient row fused with its SGD or momentum update, for the leading columns that
    fill whole blocks: g (n_out,) = sum_{q0 <= q < q1} val[q] G[idx[q]] (G_flat the (rows * n_out,)
    row-major dL/dz; idx the rows, val their values, both from a CSC column), never stored: from
    the registers, P[p_off + j] -= lr (g_j + wd P[p_off + j]), or with ``momentum`` S[p_off + j] =
    mu S[p_off + j] + (g_j + wd P[p_off + j]) and P[p_off + j] -= lr S[p_off + j]
    (``fused_step._update``'s sums, the same bits). Returns j_end: columns [0, j_end) are done,
    the caller updates the rest (fewer than one block) through memory. Blocks as ``sparse_row``'s:
    8 or 4 64-byte vectors on AVX-512, else 8 32-byte ones. The Cython twin: sparse_row.h's
    ``sparse_update_T``."""
    j0 = 0
    if WIDE:
        wide = 8 * (64 // P.itemsize)
        while j0 + wide <= n_out:
            sparse_update_wide8(G_flat, n_out, j0, idx, val, q0, q1, P, S, p_off, wd, mu, lr, momentum)
            j0 += wide
        if j0 + wide // 2 <= n_out:
            sparse_update_wide4(G_flat, n_out, j0, idx, val, q0, q1, P, S, p_off, wd, mu, lr, momentum)
            j0 += wide // 2
    block = 8 * lanes_of(P)
    while j0 + block <= n_out:
        sparse_update8(G_flat, n_out, j0, idx, val, q0, q1, P, S, p_off, wd, mu, lr, momentum)
        j0 += block
    return j0


@njit(cache=True, fastmath={"contract"}, inline="always")
def sparse_row(W_flat, n_out, idx, val, q0, q1, scale, z_in, z):
    """z (n_out,) = z_in + sum_{q0 <= q < q1} x_q W[idx[q]] (x_q as ``accumulate_rows``);
    W_flat the (n_in * n_out,) row-major weights; z_in may be z (accumulate). Eight vectors of
    columns at a time in registers, then the last columns through z, each sum in q order (FMA):
    the same order of sums as the Cython backend's ``sparse_row_T`` (fastnn/backends/cython/sparse_row.h)."""
    sparse_row_cols(W_flat, n_out, 0, n_out, idx, val, q0, q1, scale, z_in, z)


@njit(cache=True, fastmath={"contract"}, inline="always")
def sparse_row_cols(W_flat, n_out, c0, c1, idx, val, q0, q1, scale, z_in, z):
    """``sparse_row`` for columns c0 .. c1 of z only (the Cython backend's ``sparse_row_T_strided``:
    layer 0's forward a block of columns at a time at large widths)."""
    j0 = c0
    if WIDE:
        wide = 8 * (64 // z.itemsize)
        while j0 + wide <= c1:
            accumulate_rows_wide8(W_flat, n_out, j0, idx, val, q0, q1, scale, z_in, z)
            j0 += wide
        if j0 + wide // 2 <= c1:
            accumulate_rows_wide4(W_flat, n_out, j0, idx, val, q0, q1, scale, z_in, z)
            j0 += wide // 2
    block = 8 * lanes_of(z)
    while j0 + block <= c1:
        accumulate_rows(W_flat, n_out, j0, idx, val, q0, q1, scale, z_in, z)
        j0 += block
    if j0 < c1:
        for j in range(j0, c1):
            z[j] = z_in[j]
        for q in range(q0, q1):
            x = _value(val[q], scale)
            base = np.int64(idx[q]) * n_out
            for j in range(j0, c1):
                z[j] += x * W_flat[base + j]


@njit(cache=True, inline="always")
def lanes_of(z):
    """Lanes of a 32-byte vector of z's dtype (8 float32, 4 float64)."""
    return 32 // z.itemsize


def _value(v, scale):
    """A non-zero's value: v itself for floats, dtype(v) * scale for pixels (dtype: scale's type)."""


@overload(_value, inline="always")
def _value_overload(v, scale):
    if isinstance(v, types.Float):
        return lambda v, scale: v
    float_type = scale

    def pixel(v, scale):
        return float_type(v) * scale
    return pixel
