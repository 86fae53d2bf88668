"""The numba backend's packed GEMM: c = alpha a @ b + beta c, no BLAS (mirror of the Cython
backend's ``fastnn/backends/cython/gemm.h``; read that file's header for the algorithm).

Goto and van de Geijn, "Anatomy of High-Performance Matrix Multiplication" (ACM TOMS 2008), in
the loop order of BLIS (Van Zee and van de Geijn, ACM TOMS 2015): a KC x NC block of b and an
MC x KC block of a are packed into contiguous panels; the micro-kernel ``_tile_sums`` (LLVM IR,
``@intrinsic``: the MR x NR sums stay in vector registers as SSA values, which plain numba loops
do not manage) multiplies an MR-row panel of a by an NR-column panel of b over the depth KC.

The micro-kernel is chosen when this module is first compiled, by what the CPU reports to LLVM:
AVX-512: 8 x 32 float32 / 8 x 16 float64 (two 64-byte vectors per row, 16 accumulators);
AVX2: 6 x 16 / 6 x 8 (12 accumulators); otherwise 16-byte vectors, 4 x 8 / 4 x 4. (Numba's
on-disk cache is keyed by the CPU, so another machine compiles its own; unlike the Cython
GEMM, ``FASTNN_GEMM_ISA`` does not apply, since cached code does not see it.) ``ISA`` names it.

``gemm(a, b, c, alpha, beta)`` runs on the calling thread (the fused training step calls it from
inside its own threads); ``gemm_parallel(a, b, c, alpha, beta, threads)`` shares the packing and
splits the micro-tiles between ``threads`` numba threads. a (m, k), b (k, n), c (m, n): 2-D
arrays of one float dtype in any layout (``W.T`` is a view, packed as it is read); the caller
checks shapes and dtypes: nothing here does. beta == 0 never reads c. Sums run in depth order
per output with ``llvm.fmuladd`` (an FMA where the CPU has one), as the Cython kernel's do.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from fastnn.backends.numba.simd import host_isa

ISA = host_isa()
VECTOR_BYTES = {"avx512": 64, "avx2": 32, "generic": 16}[ISA]
MR = {"avx512": 8, "avx2": 6, "generic": 4}[ISA]    # rows of a per micro-tile
NV = 2                                               # vectors of columns per micro-tile row
MC = {"avx512": 128, "avx2": 120, "generic": 64}[ISA]
KC_BYTES = {"avx512": 4096, "avx2": 2048, "generic": 1024}[ISA]   # KC = 1024 float32 / 512 float64 on AVX-512
NC = 2048


@intrinsic
def _tile_sums(typingctx, kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile):
    """tile[i NR + j] = sum_{p < kc} ap[a_off + p a_ps + i a_is] * bp[b_off + p ldb + j] for the
    MR x NR micro-tile (NR = NV lanes), the MR * NV partial-sum vectors held as SSA values for the
    whole loop over p, each sum accumulated in p order with ``llvm.fmuladd``. ap: the packed
    panels (a_ps = MR, a_is = 1) or A itself (a_ps = 1, a_is = its row stride); bp: the packed
    panels (ldb = NR) or B itself (any rank; offsets and strides in elements from the first one)."""
    if not (isinstance(ap, types.Array) and isinstance(ap.dtype, types.Float) and ap.dtype == bp.dtype == tile.dtype):
        return None
    fty = ap.dtype
    n_lanes = VECTOR_BYTES // (fty.bitwidth // 8)
    nr = NV * n_lanes
    sig = types.none(kc, ap, a_off, a_ps, a_is, bp, b_off, ldb, tile)

    def codegen(context, builder, signature, args):
        kc_v, ap_a, aoff_v, aps_v, ais_v, bp_a, boff_v, ldb_v, tile_a = args
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
        entry = builder.block
        loop = builder.append_basic_block("tile.loop")
        body = builder.append_basic_block("tile.body")
        done = builder.append_basic_block("tile.done")
        builder.branch(loop)
        builder.position_at_end(loop)
        p = builder.phi(i64)
        p.add_incoming(ir.Constant(i64, 0), entry)
        accs = []
        for _ in range(MR * NV):
            phi = builder.phi(vec)
            phi.add_incoming(zero, entry)
            accs.append(phi)
        builder.cbranch(builder.icmp_signed("<", p, kc_v), body, done)
        builder.position_at_end(body)
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
            xv = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
            xv = builder.shuffle_vector(xv, ir.Constant(vec, ir.Undefined),
                                        ir.Constant(ir.VectorType(ir.IntType(32), n_lanes), [0] * n_lanes))
            for v in range(NV):
                new.append(builder.call(fmuladd, [xv, b_vecs[v], accs[i * NV + v]]))
        p_next = builder.add(p, ir.Constant(i64, 1))
        body_end = builder.block
        builder.branch(loop)
        p.add_incoming(p_next, body_end)
        for phi, value in zip(accs, new):
            phi.add_incoming(value, body_end)
        builder.position_at_end(done)
        for i in range(MR):
            for v in range(NV):
                store = builder.store(accs[i * NV + v], builder.bitcast(
                    builder.gep(tile_data, [ir.Constant(i64, i * nr + v * n_lanes)]), vptr))
                store.align = align
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _blocks(c):
    """(NR, KC) for c's dtype: NV vectors of VECTOR_BYTES, KC_BYTES of depth."""
    return NV * VECTOR_BYTES // c.itemsize, KC_BYTES // c.itemsize


@njit(cache=True)
def _pack_a(a, r0, m, p0, kc, ap, panel0, panel1):
    """ap[panel][p][i] (kc, MR) = a[r0 + panel MR + i, p0 + p] for the row panels [panel0, panel1)
    of the m rows from r0; rows past m zero. (Slices, not 2-D indexing in the loops: on views
    LLVM drops the per-element index arithmetic; 2-D indexing made packing 6-20x slower.) A
    transposed a (``A_in.T`` in the weight gradient) is read a depth at a time, its rows contiguous."""
    by_columns = a.strides[0] < a.strides[1]               # a transposed view (A.T): depths contiguous
    for panel in range(panel0, panel1):
        out = ap[panel * kc * MR:(panel + 1) * kc * MR]                                    # (kc, MR)
        i0 = panel * MR
        rows = min(MR, m - i0)
        if by_columns:
            for p in range(kc):
                col = a[r0 + i0:r0 + i0 + rows, p0 + p]                                    # (rows,)
                for i in range(rows):
                    out[p * MR + i] = col[i]
                for i in range(rows, MR):
                    out[p * MR + i] = 0
            continue
        for i in range(rows):
            src = a[r0 + i0 + i, p0:p0 + kc]                                               # (kc,)
            for p in range(kc):
                out[p * MR + i] = src[p]
        for i in range(rows, MR):
            for p in range(kc):
                out[p * MR + i] = 0


@njit(cache=True)
def _pack_b(b, p0, kc, c0, n, nr, bp, panel0, panel1):
    """bp[panel][p][j] (kc, nr) = b[p0 + p, c0 + panel nr + j] for the column panels
    [panel0, panel1) of the n columns from c0; columns past n zero. A transposed b (its columns
    contiguous, e.g. ``W.T``) is read 16 depths of a column at a time (one 64-byte line)."""
    by_columns = b.strides[0] < b.strides[1]
    for panel in range(panel0, panel1):
        j0 = panel * nr
        cols = min(nr, n - j0)
        out = bp[panel * kc * nr:(panel + 1) * kc * nr]                                    # (kc, nr)
        if by_columns:
            for pb in range(0, kc, 16):
                pe = min(pb + 16, kc)
                for j in range(cols):
                    src = b[p0 + pb:p0 + pe, c0 + j0 + j]                                  # (pe - pb,)
                    for p in range(pe - pb):
                        out[(pb + p) * nr + j] = src[p]
                for j in range(cols, nr):
                    for p in range(pb, pe):
                        out[p * nr + j] = 0
        else:
            for p in range(kc):
                src = b[p0 + p, c0 + j0:c0 + j0 + cols]                                    # (cols,)
                dst = out[p * nr:(p + 1) * nr]                                             # (nr,)
                for j in range(cols):
                    dst[j] = src[j]
                for j in range(cols, nr):
                    dst[j] = 0


@njit(cache=True)
def _store(tile, nr, c, i0, j0, mr, ncols, alpha, beta):
    """c[i0 + i, j0 + j] = alpha tile[i nr + j] + beta c[...] (c not read when beta == 0). A c with
    contiguous columns (``G_in.T`` in the backward pass) is written a column at a time (row by
    row, its strided writes halved the backward product's speed)."""
    if c.strides[0] < c.strides[1]:
        for j in range(ncols):
            col = c[i0:i0 + mr, j0 + j]                                                    # (mr,)
            if beta == 0:
                for i in range(mr):
                    col[i] = alpha * tile[i * nr + j]
            else:
                for i in range(mr):
                    col[i] = alpha * tile[i * nr + j] + beta * col[i]
        return
    for i in range(mr):
        src = tile[i * nr:i * nr + ncols]                                                  # (ncols,)
        dst = c[i0 + i, j0:j0 + ncols]                                                     # (ncols,)
        if beta == 0:
            for j in range(ncols):
                dst[j] = alpha * src[j]
        else:
            for j in range(ncols):
                dst[j] = alpha * src[j] + beta * dst[j]


@njit(cache=True)
def _tiles(ap, a, a_first, bp, b, pc, first_packed, c, ic, mc, jc, nc, kc, nr, alpha, beta, t0, t1, tile):
    """Micro-tiles t0 .. t1 of the (mc, nc) block at (ic, jc), column-panel major; row panels before
    ``a_first`` are read in place from a (C-contiguous rows), column panels before
    ``first_packed`` from b (rows pc..), the others from the packed ap and bp."""
    m_panels = (mc + MR - 1) // MR
    ldb = b.strides[0] // b.itemsize
    lda = a.strides[0] // a.itemsize
    for t in range(t0, t1):
        jp = t // m_panels
        ip = t % m_panels
        if ip < a_first:
            if jp < first_packed:
                _tile_sums(kc, a, (ic + ip * MR) * lda + pc, 1, lda, b, pc * ldb + jc + jp * nr, ldb, tile)
            else:
                _tile_sums(kc, a, (ic + ip * MR) * lda + pc, 1, lda, bp, jp * kc * nr, nr, tile)
        elif jp < first_packed:
            _tile_sums(kc, ap, ip * kc * MR, MR, 1, b, pc * ldb + jc + jp * nr, ldb, tile)
        else:
            _tile_sums(kc, ap, ip * kc * MR, MR, 1, bp, jp * kc * nr, nr, tile)
        _store(tile, nr, c, ic + ip * MR, jc + jp * nr, min(MR, mc - ip * MR), min(nr, nc - jp * nr), alpha, beta)


@njit(cache=True, inline="always")
def _a_in_place(a, mc, n, nr):
    """Row panels of a read in place: all full ones when b has one column panel (n <= NR: each a
    element then serves one micro-tile only; the backward pass's W G^T) and a's rows are
    contiguous; else none (gemm.h's ``direct_a``)."""
    if n <= nr and a.strides[1] == a.itemsize and a.strides[0] % a.itemsize == 0:
        return mc // MR
    return 0


@njit(cache=True, inline="always")
def _first_packed(b, m, nc, nr):
    """Column panels of b read in place: all full ones when every row of a fits one MC block
    (each b element then serves one block only, and packing would copy as many bytes as the
    product reads) and b's rows are contiguous; else none (gemm.h's ``direct_b``)."""
    if m <= MC and b.strides[1] == b.itemsize and b.strides[0] % b.itemsize == 0:
        return nc // nr
    return 0


@njit(cache=True)
def _scale(c, beta):
    """c = beta c (0 when beta == 0, whatever c held): the product of an empty depth."""
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            c[i, j] = 0 if beta == 0 else beta * c[i, j]


@njit(cache=True)
def gemm(a, b, c, alpha, beta):
    """c (m, n) = alpha a (m, k) @ b (k, n) + beta c on the calling thread (see the module docstring)."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        _scale(c, beta)
        return
    nr, KC = _blocks(c)
    kc_max = min(k, KC)
    ap = np.empty(((min(m, MC) + MR - 1) // MR * MR) * kc_max, dtype=c.dtype)      # (MC, KC) packed
    bp = np.empty(((min(n, NC) + nr - 1) // nr * nr) * kc_max, dtype=c.dtype)      # (KC, NC) packed
    tile = np.empty(MR * nr, dtype=c.dtype)                                         # (MR, NR)
    for jc in range(0, n, NC):
        nc = min(NC, n - jc)
        n_panels = (nc + nr - 1) // nr
        first = _first_packed(b, m, nc, nr)
        for pc in range(0, k, KC):
            kc = min(KC, k - pc)
            beta_pc = beta if pc == 0 else c.dtype.type(1)           # later depth blocks accumulate
            _pack_b(b, pc, kc, jc, nc, nr, bp, first, n_panels)
            for ic in range(0, m, MC):
                mc = min(MC, m - ic)
                m_panels = (mc + MR - 1) // MR
                a_first = _a_in_place(a, mc, n, nr)
                _pack_a(a, ic, mc, pc, kc, ap, a_first, m_panels)
                _tiles(ap, a, a_first, bp, b, pc, first, c, ic, mc, jc, nc, kc, nr, alpha, beta_pc, 0,
                       n_panels * m_panels, tile)


@njit(cache=True, parallel=True)
def gemm_parallel(a, b, c, alpha, beta, threads):
    """``gemm`` on ``threads`` numba threads: each packing shared by them (panels split), then the
    block's micro-tiles split evenly, column-panel major (as gemm.h's ``gemm_part``)."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        _scale(c, beta)
        return
    nr, KC = _blocks(c)
    kc_max = min(k, KC)
    ap = np.empty(((min(m, MC) + MR - 1) // MR * MR) * kc_max, dtype=c.dtype)      # (MC, KC) packed
    bp = np.empty(((min(n, NC) + nr - 1) // nr * nr) * kc_max, dtype=c.dtype)      # (KC, NC) packed
    tiles = np.empty((threads, MR * nr), dtype=c.dtype)                             # (T, MR * NR)
    for jc in range(0, n, NC):
        nc = min(NC, n - jc)
        n_panels = (nc + nr - 1) // nr
        first = _first_packed(b, m, nc, nr)
        for pc in range(0, k, KC):
            kc = min(KC, k - pc)
            beta_pc = beta if pc == 0 else c.dtype.type(1)
            n_packed = n_panels - first
            for t in prange(threads):
                _pack_b(b, pc, kc, jc, nc, nr, bp, first + n_packed * t // threads,
                        first + n_packed * (t + 1) // threads)
            for ic in range(0, m, MC):
                mc = min(MC, m - ic)
                m_panels = (mc + MR - 1) // MR
                a_first = _a_in_place(a, mc, n, nr)
                for t in prange(threads):
                    _pack_a(a, ic, mc, pc, kc, ap, a_first + (m_panels - a_first) * t // threads,
                            a_first + (m_panels - a_first) * (t + 1) // threads)
                n_tiles = n_panels * m_panels
                for t in prange(threads):
                    _tiles(ap, a, a_first, bp, b, pc, first, c, ic, mc, jc, nc, kc, nr, alpha, beta_pc,
                           n_tiles * t // threads, n_tiles * (t + 1) // threads, tiles[t])
