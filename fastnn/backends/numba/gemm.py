"""The numba backend's packed GEMM: c = alpha a @ b + beta c, no BLAS (mirror of the Cython
backend's ``fastnn/backends/cython/gemm.h``; read that file's header for the algorithm).

Goto and van de Geijn, "Anatomy of High-Performance Matrix Multiplication" (ACM TOMS 2008), in
the loop order of BLIS (Van Zee and van de Geijn, ACM TOMS 2015): a KC x NC block of b and an
MC x KC block of a are packed into contiguous panels; the micro-kernel ``_tile_sums`` (LLVM IR,
``@intrinsic``: the MR x NR sums stay in vector registers as SSA values, which plain numba loops
do not manage) multiplies an MR-row panel of a by an NR-column panel of b over the depth KC.

The micro-kernel is chosen when this module is first compiled, by what the CPU reports to LLVM:
AVX-512: 8 x 32 float32 / 8 x 16 float64 (two 64-byte vectors per row, 16 accumulators);
AVX2: 6 x 16 / 6 x 8 (12 accumulators); otherwise 16-byte vectors, 4 x 8 / 4 x 4. A product of
at most one vector of columns (the 10 outputs) runs the narrow kernel, MR x one vector
(``_tile_sums1``, gemm.h's uk1). A full tile of a row-major C is stored from the registers; a
partial or transposed one goes through a tile on the stack. Nothing is allocated for a product
that packs nothing (A and B read in place, the fused step's usual case). (Numba's
on-disk cache is keyed by the CPU, so another machine compiles its own; unlike the Cython
GEMM, ``FASTNN_GEMM_ISA`` does not apply, since cached code does not see it.) ``ISA`` names it.

The arguments are gemm.h's, on 1-D arrays (a slice gives the offset):
``gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs)`` computes
c[i ldc + j cs] = alpha sum_p op(A)[i, p] op(B)[p, j] + beta c[i ldc + j cs] with op(A)[i, p] =
a[i lda + p] (a[p lda + i] when trans_a) and op(B)[p, j] = b[p ldb + j] (b[j ldb + p] when
trans_b), on the calling thread (the fused training step calls it from inside its own
threads); ``gemm_parallel(..., threads)`` shares the packing and splits the micro-tiles between
``threads`` numba threads. One array type for every call, so Numba compiles each function once
per dtype (callers pass the flags and unit strides as typed values, ``np.bool_``/``np.int64``:
literals make a compilation each): with 2-D views of every layout (``W.T``, ``G[:, c0:c1]``)
and literal flags the fused step's first compilation took 34 s against 16 without the GEMM.
Each entry point checks that the extents it will touch lie inside a, b and c (ValueError), once
per call. beta == 0 never reads c. Sums run in depth order per output with ``llvm.fmuladd`` (an
FMA where the CPU has one), as the Cython kernel's do.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from fastnn.backends.numba.simd import broadcast, counted_loop, host_isa

ISA = host_isa()
VECTOR_BYTES = {"avx512": 64, "avx2": 32, "generic": 16}[ISA]
MR = {"avx512": 8, "avx2": 6, "generic": 4}[ISA]    # rows of a per micro-tile
NV = 2                                               # vectors of columns per micro-tile row
NR1 = 1                                              # the narrow micro-kernel's vectors (n <= one vector)
MC = {"avx512": 128, "avx2": 144, "generic": 64}[ISA]     # >= 128 hidden units: gemm.h says why
KC_BYTES = {"avx512": 4096, "avx2": 2048, "generic": 1024}[ISA]   # KC = 1024 float32 / 512 float64 on AVX-512
NC = 2048


def _tile_sums_codegen(n_vectors, kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile, c, c_off, ldc, direct, alpha,
                       beta):
    """tile[i NR + j] = sum_{p < kc} ap[a_off + p a_ps + i a_is] * bp[b_off + p ldb + j] for the
    MR x NR micro-tile (NR = ``n_vectors`` vectors of lanes), the MR * n_vectors partial-sum vectors held as
    SSA values for the whole loop over p, each sum accumulated in p order with ``llvm.fmuladd``. ap: the packed
    panels (a_ps = MR, a_is = 1) or A itself (a_ps = 1, a_is = its row stride); bp: the packed
    panels (ldb = NR) or B itself (any rank; offsets and strides in elements from the first one).
    With ``direct`` (a full tile of a row-major C), the sums go to C instead, from the registers:
    c[c_off + i ldc + j] = alpha sum + beta c[...] (c not read when beta == 0), as gemm.h's kernel."""
    if not (isinstance(ap, types.Array) and isinstance(ap.dtype, types.Float)
            and ap.dtype == bp.dtype == tile.dtype == c.dtype):
        return None
    fty = ap.dtype
    n_lanes = VECTOR_BYTES // (fty.bitwidth // 8)
    NV = n_vectors                                    # noqa: N806 - the module's name for it
    nr = NV * n_lanes
    sig = types.none(kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile, c, c_off, ldc, direct, alpha, beta)

    def codegen(context, builder, signature, args):
        (kc_v, ap_a, aoff_v, aps_v, ais_v, bp_a, boff_v, ldb_v, tile_a, c_a, coff_v, ldc_v, direct_v, alpha_v,
         beta_v) = args
        i64 = ir.IntType(64)
        llf = context.get_value_type(fty)
        vec = ir.VectorType(llf, n_lanes)
        vptr = vec.as_pointer()
        ap_data = context.make_array(signature.args[1])(context, builder, ap_a).data
        bp_data = context.make_array(signature.args[5])(context, builder, bp_a).data
        tile_data = context.make_array(signature.args[8])(context, builder, tile_a).data
        ldb_v = context.cast(builder, ldb_v, signature.args[7], types.int64)
        aps_v = context.cast(builder, aps_v, signature.args[3], types.int64)
        ais_v = context.cast(builder, ais_v, signature.args[4], types.int64)
        kc_v = context.cast(builder, kc_v, signature.args[0], types.int64)
        aoff_v = context.cast(builder, aoff_v, signature.args[2], types.int64)
        boff_v = context.cast(builder, boff_v, signature.args[6], types.int64)
        align = fty.bitwidth // 8
        fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                                 f"llvm.fmuladd.v{n_lanes}f{fty.bitwidth}")
        zero = ir.Constant(vec, [0.0] * n_lanes)

        def step(p, accs):                          # depth p: NV vectors of b, MR broadcasts of a
            b_base = builder.add(boff_v, builder.mul(p, ldb_v))
            b_vecs = []
            for v in range(NV):
                address = builder.gep(bp_data, [builder.add(b_base, ir.Constant(i64, v * n_lanes))])
                load = builder.load(builder.bitcast(address, vptr))
                load.align = align
                b_vecs.append(load)
            a_base = builder.add(aoff_v, builder.mul(p, aps_v))
            new = []
            for i in range(MR):
                x = builder.load(builder.gep(ap_data, [builder.add(a_base, builder.mul(ir.Constant(i64, i), ais_v))]))
                xv = broadcast(builder, x, vec)
                for v in range(NV):
                    new.append(builder.call(fmuladd, [xv, b_vecs[v], accs[i * NV + v]]))
            return new

        accs = counted_loop(builder, ir.Constant(i64, 0), kc_v, [zero] * (MR * NV), step, "tile")
        c_data = context.make_array(signature.args[9])(context, builder, c_a).data
        coff_v = context.cast(builder, coff_v, signature.args[10], types.int64)
        ldc_v = context.cast(builder, ldc_v, signature.args[11], types.int64)
        direct_v = context.cast(builder, direct_v, signature.args[12], types.boolean)
        alpha_vec = broadcast(builder, context.cast(builder, alpha_v, signature.args[13], fty), vec)
        beta_s = context.cast(builder, beta_v, signature.args[14], fty)
        beta_vec = broadcast(builder, beta_s, vec)
        with builder.if_else(direct_v) as (to_c, to_tile):
            with to_c:                                      # straight to C: alpha sum (+ beta c)
                beta_zero = builder.fcmp_ordered("==", beta_s, ir.Constant(llf, 0.0))
                for i in range(MR):
                    row = builder.add(coff_v, builder.mul(ir.Constant(i64, i), ldc_v))
                    for v in range(NV):
                        ptr = builder.bitcast(builder.gep(c_data, [builder.add(row, ir.Constant(i64, v * n_lanes))]),
                                              vptr)
                        scaled = builder.fmul(alpha_vec, accs[i * NV + v])
                        with builder.if_else(beta_zero) as (no_c, with_c):
                            with no_c:
                                store = builder.store(scaled, ptr)
                                store.align = align
                            with with_c:
                                old = builder.load(ptr)
                                old.align = align
                                store = builder.store(builder.call(fmuladd, [beta_vec, old, scaled]), ptr)
                                store.align = align
            with to_tile:
                for i in range(MR):
                    for v in range(NV):
                        store = builder.store(accs[i * NV + v], builder.bitcast(
                            builder.gep(tile_data, [ir.Constant(i64, i * nr + v * n_lanes)]), vptr))
                        store.align = align
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _tile_sums(typingctx, kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile, c, c_off, ldc, direct, alpha, beta):
    """The MR x NR micro-kernel, NR = NV vectors (``_tile_sums_codegen``)."""
    return _tile_sums_codegen(NV, kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile, c, c_off, ldc, direct, alpha, beta)


@intrinsic
def _tile_sums1(typingctx, kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile, c, c_off, ldc, direct, alpha, beta):
    """The narrow micro-kernel, MR x one vector (gemm.h's uk1): for a B of at most one vector
    of columns (the 10 outputs of the last layer), half the padded work of the two-vector tile."""
    return _tile_sums_codegen(1, kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile, c, c_off, ldc, direct, alpha, beta)


# A full tile's transposed store (ldc = 1, the backward pass's C^T), as gemm.h's
# fastnn_store_t_avx512: the AVX-512 float32 8 x 32 tile permuted in registers, three rounds of
# two-source shuffles (row pairs, row quads, then 8 rows of 2 columns), each column's 8 values
# stored as one vector. Other kernels and dtypes store through ``_store``'s loop.
_PAIR_LO = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23]
_PAIR_HI = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31]
_QUAD_LO = [0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23]
_QUAD_HI = [8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31]
_OCT_LO = [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23]
_OCT_HI = [8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31]


@intrinsic
def _store_tile_t(typingctx, tile, c, c_off, cs, alpha):
    """c[c_off + j cs + i] = alpha tile[i 32 + j] for the 8 x 32 float32 tile (AVX-512 only; the
    caller checks: a full tile, beta == 0, ldc == 1)."""
    if not (isinstance(tile, types.Array) and tile.dtype == types.float32 and c == tile):
        return None

    def codegen(context, builder, signature, args):
        tile_a, c_a, off_v, cs_v, alpha_v = args
        i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
        v16, v8 = ir.VectorType(f32, 16), ir.VectorType(f32, 8)
        tile_data = context.make_array(signature.args[0])(context, builder, tile_a).data
        c_data = context.make_array(signature.args[1])(context, builder, c_a).data
        off_v = context.cast(builder, off_v, signature.args[2], types.int64)
        cs_v = context.cast(builder, cs_v, signature.args[3], types.int64)
        alpha_vec = broadcast(builder, alpha_v, v16)

        def mask(values):
            return ir.Constant(ir.VectorType(i32, len(values)), values)

        def shuffle(a, b, values):
            return builder.shuffle_vector(a, b, mask(values))

        rows = []
        for i in range(8):
            pair = []
            for v in range(2):
                load = builder.load(builder.bitcast(builder.gep(tile_data, [ir.Constant(i64, i * 32 + v * 16)]),
                                                    v16.as_pointer()))
                load.align = 4
                pair.append(load)
            rows.append(pair)
        for v in range(2):
            p = []
            for k in range(4):
                p += [shuffle(rows[2 * k][v], rows[2 * k + 1][v], _PAIR_LO),
                      shuffle(rows[2 * k][v], rows[2 * k + 1][v], _PAIR_HI)]
            q = [None] * 8
            for h in range(2):
                q[4 * h] = shuffle(p[h], p[h + 2], _QUAD_LO)
                q[4 * h + 1] = shuffle(p[h], p[h + 2], _QUAD_HI)
                q[4 * h + 2] = shuffle(p[h + 4], p[h + 6], _QUAD_LO)
                q[4 * h + 3] = shuffle(p[h + 4], p[h + 6], _QUAD_HI)
            for blk in range(4):
                top = 4 * (blk // 2) + blk % 2
                for half, values in enumerate((_OCT_LO, _OCT_HI)):
                    both = builder.fmul(shuffle(q[top], q[top + 2], values), alpha_vec)   # columns j, j + 1
                    for col in range(2):
                        j = 16 * v + 4 * blk + 2 * half + col
                        column = shuffle(both, ir.Constant(v16, ir.Undefined), list(range(8 * col, 8 * col + 8)))
                        at = builder.add(off_v, builder.mul(ir.Constant(i64, j), cs_v))
                        store = builder.store(column, builder.bitcast(builder.gep(c_data, [at]), v8.as_pointer()))
                        store.align = 4
        return context.get_dummy_value()

    return types.none(tile, c, c_off, cs, alpha), codegen


def _store_transposed(tile, c, c_off, cs, alpha):
    """Store a full tile transposed by ``_store_tile_t`` and return True, where there is one for
    tile's dtype and this CPU's kernel (AVX-512, float32); else False (the caller's loop stores it)."""
    raise NotImplementedError("compiled only: called from Numba code")


@overload(_store_transposed, jit_options={"cache": True})
def _store_transposed_impl(tile, c, c_off, cs, alpha):
    if ISA == "avx512" and MR == 8 and NV == 2 and tile.dtype == types.float32:
        def permuted(tile, c, c_off, cs, alpha):
            _store_tile_t(tile, c, c_off, cs, alpha)
            return True
        return permuted
    return lambda tile, c, c_off, cs, alpha: False


@njit(cache=True, inline="always")
def _blocks(n, c):
    """(NR, KC) for c's dtype and a product of n columns: NV vectors of VECTOR_BYTES (NR1 = one
    vector when n fits in one: the narrow micro-kernel), KC_BYTES of depth."""
    one_vector = NR1 * VECTOR_BYTES // c.itemsize
    return one_vector if n <= one_vector else NV * VECTOR_BYTES // c.itemsize, KC_BYTES // c.itemsize


@njit(cache=True)
def _pack_a(trans, a, lda, r0, m, p0, kc, ap, panel0, panel1):
    """ap[panel][p][i] (kc, MR) = op(A)[r0 + panel MR + i, p0 + p] for the row panels
    [panel0, panel1) of the m rows from r0; rows past m zero. (Slices, not element indexing in
    the loops: LLVM then drops the index arithmetic; indexing made packing 6-20x slower.) A
    transposed A (the weight gradient's A_in^T) is read a depth at a time, its rows contiguous."""
    for panel in range(panel0, panel1):
        out = ap[panel * kc * MR:(panel + 1) * kc * MR]                                    # (kc, MR)
        i0 = panel * MR
        rows = min(MR, m - i0)
        if trans:
            for p in range(kc):
                start = (p0 + p) * lda + r0 + i0
                src = a[start:start + rows]                                                # (rows,)
                for i in range(rows):
                    out[p * MR + i] = src[i]
                for i in range(rows, MR):
                    out[p * MR + i] = 0
            continue
        for i in range(rows):
            start = (r0 + i0 + i) * lda + p0
            src = a[start:start + kc]                                                      # (kc,)
            for p in range(kc):
                out[p * MR + i] = src[p]
        for i in range(rows, MR):
            for p in range(kc):
                out[p * MR + i] = 0


@njit(cache=True)
def _pack_b(trans, b, ldb, p0, kc, c0, n, nr, bp, panel0, panel1):
    """bp[panel][p][j] (kc, nr) = op(B)[p0 + p, c0 + panel nr + j] for the column panels
    [panel0, panel1) of the n columns from c0; columns past n zero. A transposed B is read 16
    depths of a column at a time (one 64-byte line)."""
    for panel in range(panel0, panel1):
        j0 = panel * nr
        cols = min(nr, n - j0)
        out = bp[panel * kc * nr:(panel + 1) * kc * nr]                                    # (kc, nr)
        if trans:
            for pb in range(0, kc, 16):
                pe = min(pb + 16, kc)
                for j in range(cols):
                    start = (c0 + j0 + j) * ldb + p0 + pb
                    src = b[start:start + pe - pb]                                         # (pe - pb,)
                    for p in range(pe - pb):
                        out[(pb + p) * nr + j] = src[p]
                for j in range(cols, nr):
                    for p in range(pb, pe):
                        out[p * nr + j] = 0
        else:
            for p in range(kc):
                start = (p0 + p) * ldb + c0 + j0
                src = b[start:start + cols]                                                # (cols,)
                dst = out[p * nr:(p + 1) * nr]                                             # (nr,)
                for j in range(cols):
                    dst[j] = src[j]
                for j in range(cols, nr):
                    dst[j] = 0


@njit(cache=True)
def _store(tile, nr, c, ldc, cs, i0, j0, mr, ncols, alpha, beta):
    """c[(i0 + i) ldc + (j0 + j) cs] = alpha tile[i nr + j] + beta c[...] (not read when beta == 0):
    a row at a time when cs == 1, a column at a time when ldc == 1 (C^T, the backward pass: row
    by row, its strided writes halved the product's speed)."""
    if cs == 1:
        for i in range(mr):
            start = (i0 + i) * ldc + j0
            src = tile[i * nr:i * nr + ncols]                                              # (ncols,)
            dst = c[start:start + ncols]                                                   # (ncols,)
            if beta == 0:
                for j in range(ncols):
                    dst[j] = alpha * src[j]
            else:
                for j in range(ncols):
                    dst[j] = alpha * src[j] + beta * dst[j]
        return
    if ldc != 1:
        for i in range(mr):
            for j in range(ncols):
                v = alpha * tile[i * nr + j]
                at = (i0 + i) * ldc + (j0 + j) * cs
                c[at] = v if beta == 0 else v + beta * c[at]
        return
    full = mr == MR and ncols == nr and nr == NV * VECTOR_BYTES // c.itemsize     # a full two-vector tile
    if full and beta == 0 and _store_transposed(tile, c, j0 * cs + i0, cs, alpha):
        return
    for j in range(ncols):
        start = (j0 + j) * cs + i0
        col = c[start:start + mr]                                                          # (mr,)
        for i in range(mr):
            v = alpha * tile[i * nr + j]
            col[i] = v if beta == 0 else v + beta * col[i]


@njit(cache=True)
def _tiles(ap, trans_a, a, lda, a_first, bp, b, ldb, b_first, c, ldc, cs, ic, mc, jc, nc, pc, kc, nr, alpha, beta,
           t0, t1, tile):
    """Micro-tiles t0 .. t1 of the (mc, nc) block at (ic, jc), column-panel major; row panels before
    ``a_first`` are read in place from a (rows lda apart; transposed, each depth's MR values
    contiguous), column panels before ``b_first`` from b (rows ldb apart), the others from the
    packed ap and bp."""
    m_panels = (mc + MR - 1) // MR
    for t in range(t0, t1):
        jp = t // m_panels
        ip = t % m_panels
        if ip < a_first and trans_a:
            src_a, off_a, ps_a, is_a = a, pc * lda + ic + ip * MR, lda, 1
        elif ip < a_first:
            src_a, off_a, ps_a, is_a = a, (ic + ip * MR) * lda + pc, 1, lda
        else:
            src_a, off_a, ps_a, is_a = ap, ip * kc * MR, MR, 1
        if jp < b_first:
            src_b, off_b, ld_b = b, pc * ldb + jc + jp * nr, ldb
        else:
            src_b, off_b, ld_b = bp, jp * kc * nr, nr
        i0, j0 = ic + ip * MR, jc + jp * nr
        mr, ncols = min(MR, mc - ip * MR), min(nr, nc - jp * nr)
        direct = cs == 1 and mr == MR and ncols == nr           # a full tile of a row-major C: from registers
        if nr == NR1 * VECTOR_BYTES // c.itemsize:                           # narrow: one vector of columns
            _tile_sums1(kc, src_a, off_a, ps_a, is_a, src_b, off_b, ld_b, tile, c, i0 * ldc + j0, ldc, direct, alpha,
                        beta)
        else:
            _tile_sums(kc, src_a, off_a, ps_a, is_a, src_b, off_b, ld_b, tile, c, i0 * ldc + j0, ldc, direct, alpha,
                       beta)   # one copy of the IR
        if not direct:
            _store(tile, nr, c, ldc, cs, i0, j0, mr, ncols, alpha, beta)


@njit(cache=True)
def _check(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, cs):
    """The boundary check of both entry points: every element the loops will touch lies inside a,
    b and c (rows and strides as gemm.h's); raises ValueError otherwise."""
    if m < 0 or n < 0 or k < 0 or lda < 0 or ldb < 0 or ldc < 0 or cs < 0:
        raise ValueError("gemm: negative size or stride")
    if m == 0 or n == 0:
        return
    if k > 0:
        a_last = (k - 1) * lda + m - 1 if trans_a else (m - 1) * lda + k - 1
        b_last = (n - 1) * ldb + k - 1 if trans_b else (k - 1) * ldb + n - 1
        if a_last >= a.size or b_last >= b.size:
            raise ValueError("gemm: a or b is smaller than its shape and stride say")
    if (m - 1) * ldc + (n - 1) * cs >= c.size:
        raise ValueError("gemm: c is smaller than its shape and stride say")


@njit(cache=True)
def _scale(m, n, c, ldc, cs, beta):
    """c = beta c (0 when beta == 0, whatever c held): the product of an empty depth."""
    for i in range(m):
        for j in range(n):
            c[i * ldc + j * cs] = 0 if beta == 0 else beta * c[i * ldc + j * cs]


@intrinsic
def _stack_tile(typingctx, like):
    """A pointer to MR * NV * VECTOR_BYTES bytes (one micro-tile of like's dtype) on the caller's
    stack: the tile ``_tile_sums`` writes, without an allocation per call."""
    if not (isinstance(like, types.Array) and isinstance(like.dtype, types.Float)):
        return None
    fty = like.dtype

    def codegen(context, builder, signature, args):
        n = MR * NV * VECTOR_BYTES // (fty.bitwidth // 8)
        slot = cgutils.alloca_once(builder, context.get_value_type(fty), size=n)
        slot.align = 64
        return slot

    return types.CPointer(fty)(like), codegen


@njit(cache=True)
def _reads_a_in_place(trans_a, m, n, k, lda, itemsize, nr, KC):
    """Whether A's full row panels are read in place rather than packed (gemm.h's direct_a): the
    depth fits one block (k <= KC; either layout: transposed, depth p's MR values are contiguous,
    unless A has several row blocks and its rows lie a multiple of 4 KB apart, one L1 set for a
    panel's depths), or each A element serves one column panel (n <= NR, not transposed)."""
    return ((k <= KC and (not trans_a or m <= MC or lda * itemsize % 4096 != 0))
            or (not trans_a and n <= nr))


@njit(cache=True)
def _packing_buffers(m, n, k, trans_a, trans_b, lda, c):
    """(NR, KC, ap, bp): the block sizes for c's dtype and the packing buffers, ap (MC, KC) and
    bp (KC, NC), each no larger than this product needs, and empty (no allocation) when nothing
    is packed: A read in place whole (full row panels) or B's full panels read in place."""
    nr, KC = _blocks(n, c)
    kc_max = min(k, KC)
    # every block's row panels full and read in place
    a_whole = _reads_a_in_place(trans_a, m, n, k, lda, c.itemsize, nr, KC) and m % MR == 0
    b_whole = not trans_b and m <= MC and n % nr == 0 and n <= NC
    a_size = 0 if a_whole else ((min(m, MC) + MR - 1) // MR * MR) * kc_max
    b_size = 0 if b_whole else ((min(n, NC) + nr - 1) // nr * nr) * kc_max
    ap = c[:0] if a_size == 0 else np.empty(a_size, dtype=c.dtype)                 # (MC, KC) packed
    bp = c[:0] if b_size == 0 else np.empty(b_size, dtype=c.dtype)                 # (KC, NC) packed
    return nr, KC, ap, bp


@njit(cache=True)
def _gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs):
    """``gemm``'s loops on the calling thread, unchecked (the entry points check)."""
    if m == 0 or n == 0:
        return
    if k == 0:
        _scale(m, n, c, ldc, cs, beta)
        return
    nr, KC, ap, bp = _packing_buffers(m, n, k, trans_a, trans_b, lda, c)
    tile = carray(_stack_tile(c), MR * nr)                                          # (MR, NR)
    for jc in range(0, n, NC):
        nc = min(NC, n - jc)
        n_panels = (nc + nr - 1) // nr
        # B's full panels read in place when A has one row block (each B element then serves one
        # block: packing would copy as many bytes as the product reads); gemm.h's direct_b
        b_first = nc // nr if not trans_b and m <= MC else 0
        for pc in range(0, k, KC):
            kc = min(KC, k - pc)
            beta_pc = beta if pc == 0 else c.dtype.type(1)           # later depth blocks accumulate
            _pack_b(trans_b, b, ldb, pc, kc, jc, nc, nr, bp, b_first, n_panels)
            for ic in range(0, m, MC):
                mc = min(MC, m - ic)
                m_panels = (mc + MR - 1) // MR
                in_place = _reads_a_in_place(trans_a, m, n, k, lda, c.itemsize, nr, KC)     # gemm.h's direct_a
                a_first = mc // MR if in_place else 0
                _pack_a(trans_a, a, lda, ic, mc, pc, kc, ap, a_first, m_panels)
                _tiles(ap, trans_a, a, lda, a_first, bp, b, ldb, b_first, c, ldc, cs, ic, mc, jc, nc, pc, kc, nr, alpha,
                       beta_pc, 0, n_panels * m_panels, tile)


# ---------------------------------------------------------------- the compiled boundary
# The serial GEMM is compiled once per dtype as a C-callable function (``cfunc``) whose address is
# given to LLVM as a named symbol, ``fastnn_numba_gemm_<dtype>``; ``gemm`` calls it through that
# name. Numba links a callee's IR into every caller and optimizes it again there: with the loops
# linked in, the fused step's own compilation took 11.8 s instead of 6.1 s. Behind the symbol,
# callers see a declaration only, as they saw BLAS. Cached callers name the symbol, not an
# address, so a process registers it before it loads them: at import for a dtype already in
# Numba's cache (a load, no compilation), else ``use_dtype`` (compiling a caller calls it, and
# so do the Python entry points that run cached callers: ``fused_step.fused_steps``).
_SIGNATURES = {}
_C_GEMMS = {}


def _c_gemm_body(trans_a, trans_b, m, n, k, alpha, a, a_size, lda, b, b_size, ldb, beta, c, c_size, ldc, cs):
    """The cfunc: ``_gemm_serial`` on a, b, c as contiguous arrays of a_size, b_size, c_size elements."""
    _gemm_serial(trans_a != 0, trans_b != 0, m, n, k, alpha, carray(a, a_size), lda, carray(b, b_size), ldb,
                 beta, carray(c, c_size), ldc, cs)


for _dtype in (types.float32, types.float64):
    _ptr, _i64 = types.CPointer(_dtype), types.int64
    _SIGNATURES[str(_dtype)] = types.void(_i64, _i64, _i64, _i64, _i64, _dtype, _ptr, _i64, _i64, _ptr, _i64, _i64,
                                          _dtype, _ptr, _i64, _i64, _i64)


def _register(name: str, compiled) -> None:
    llvm.add_symbol(f"fastnn_numba_gemm_{name}", compiled.address)
    _C_GEMMS[name] = compiled


def use_dtype(dtype) -> None:
    """Make ``fastnn_numba_gemm_<dtype>`` callable in this process (float32 or float64; a numba
    type, numpy dtype or scalar type, or a name): loaded from Numba's cache, else compiled (~3 s, once
    per machine). Raises ValueError for any other dtype."""
    try:
        name = str(np.dtype(dtype))            # a numpy dtype, scalar type or name
    except TypeError:
        name = str(np.dtype(str(dtype)))       # a numba type (types.float32: "float32")
    if name not in _SIGNATURES:
        raise ValueError(f"fastnn's GEMM runs float32 and float64, not {name}")
    if name not in _C_GEMMS:
        _register(name, cfunc(_SIGNATURES[name], cache=True)(_c_gemm_body))


def _load_cached() -> None:
    """Register each dtype whose cfunc Numba's cache already holds, compiling none (what
    ``numba.cfunc`` does before it compiles: ``CFunc.compile``, Numba 0.68)."""
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    for name, signature in _SIGNATURES.items():
        try:
            compiled = CFunc(_c_gemm_body, sigutils.normalize_signature(signature), locals={}, options={})
            compiled.enable_caching()
            cres = compiled._cache.load_overload(compiled._sig, compiled._targetdescr.target_context)
        except Exception:        # a Numba without these internals: use_dtype compiles or loads it later
            return
        if cres is not None:
            compiled.compile()                                       # a second load, from memory
            _register(name, compiled)


_load_cached()


@intrinsic
def _call_c_gemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs):
    """Call ``fastnn_numba_gemm_<dtype>`` (above) on the data of the 1-D C-contiguous a, b, c.
    Typing fails for any other layout: the symbol reads a, b and c as plain contiguous memory."""
    arrays = (a, b, c)
    if not all(isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" for x in arrays):
        return None
    if not (a.dtype == b.dtype == c.dtype and str(c.dtype) in _SIGNATURES):
        return None
    fty = c.dtype
    use_dtype(fty)                                   # the symbol, before this caller is linked
    sig = types.none(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)

        def as_i64(i):
            return context.cast(builder, args[i], signature.args[i], types.int64)

        def data_size(i):
            array = context.make_array(signature.args[i])(context, builder, args[i])
            return [array.data, builder.extract_value(array.shape, 0)]

        llf = context.get_value_type(fty)
        values = [as_i64(0), as_i64(1), as_i64(2), as_i64(3), as_i64(4),
                  context.cast(builder, args[5], signature.args[5], fty), *data_size(6), as_i64(7),
                  *data_size(8), as_i64(9), context.cast(builder, args[10], signature.args[10], fty),
                  *data_size(11), as_i64(12), as_i64(13)]
        ptr = llf.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i64] * 5 + [llf, ptr, i64, i64, ptr, i64, i64, llf, ptr, i64, i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"fastnn_numba_gemm_{fty}")
        builder.call(fn, values)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs):
    """See the module docstring: on the calling thread. Raises ValueError (``_check``)."""
    _check(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, cs)
    dtype = c.dtype.type
    _call_c_gemm(np.int64(trans_a), np.int64(trans_b), np.int64(m), np.int64(n), np.int64(k), dtype(alpha), a,
                 np.int64(lda), b, np.int64(ldb), dtype(beta), c, np.int64(ldc), np.int64(cs))


@njit(cache=True, parallel=True)
def gemm_parallel(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs, threads):
    """``gemm`` on ``threads`` numba threads: each packing shared by them (panels split), then the
    block's micro-tiles split evenly, column-panel major (as gemm.h's ``gemm_part``)."""
    _check(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, cs)
    if m == 0 or n == 0:
        return
    if k == 0:
        _scale(m, n, c, ldc, cs, beta)
        return
    nr, KC, ap, bp = _packing_buffers(m, n, k, trans_a, trans_b, lda, c)
    tiles = np.empty((threads, MR * nr), dtype=c.dtype)                             # (T, MR * NR)
    for jc in range(0, n, NC):
        nc = min(NC, n - jc)
        n_panels = (nc + nr - 1) // nr
        b_first = nc // nr if not trans_b and m <= MC else 0
        for pc in range(0, k, KC):
            kc = min(KC, k - pc)
            beta_pc = beta if pc == 0 else c.dtype.type(1)
            n_packed = n_panels - b_first
            if n_packed > 0:                       # each prange is a fork and a join: none for nothing
                for t in prange(threads):
                    _pack_b(trans_b, b, ldb, pc, kc, jc, nc, nr, bp, b_first + n_packed * t // threads,
                            b_first + n_packed * (t + 1) // threads)
            for ic in range(0, m, MC):
                mc = min(MC, m - ic)
                m_panels = (mc + MR - 1) // MR
                in_place = _reads_a_in_place(trans_a, m, n, k, lda, c.itemsize, nr, KC)
                a_first = mc // MR if in_place else 0
                if a_first < m_panels:                 # some panel of this block is packed
                    for t in prange(threads):
                        _pack_a(trans_a, a, lda, ic, mc, pc, kc, ap, a_first + (m_panels - a_first) * t // threads,
                                a_first + (m_panels - a_first) * (t + 1) // threads)
                n_tiles = n_panels * m_panels
                for t in prange(threads):
                    _tiles(ap, trans_a, a, lda, a_first, bp, b, ldb, b_first, c, ldc, cs, ic, mc, jc, nc, pc, kc, nr,
                           alpha, beta_pc, n_tiles * t // threads, n_tiles * (t + 1) // threads, tiles[t])
