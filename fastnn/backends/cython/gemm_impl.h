/* One element type of the packed GEMM of gemm.h; included twice by gemm.h, with FASTNN_T the
 * element type (float, double) and FASTNN_S its suffix (s, d). Read gemm.h first.
 *
 * Names: fastnn_<S>uk_<isa> the micro-kernels, fastnn_<S>pack_a / _b the packing routines,
 * fastnn_<S>gemm_part one thread's share of one call, fastnn_<S>gemm the entry point.
 */
#define FASTNN_CAT2(a, b) a##b
#define FASTNN_CAT(a, b) FASTNN_CAT2(a, b)
#define FASTNN_NAME(n) FASTNN_CAT(FASTNN_CAT(fastnn_, FASTNN_S), n)

/* The micro-kernel: c (mr, nr) = alpha * a_panel^T b_panel + beta * c, with element (i, p) of the
 * A panel at a[i lda + p lpa]: packed (lda = 1, lpa = MR; zero-padded past mr), MR full rows of a
 * row-major A in place (lda its row stride, lpa = 1) or MR columns of a transposed one (lda = 1,
 * lpa its row stride: depth p's MR values are contiguous); and b_panel (kc, NR) with row stride ldb: packed (ldb = NR,
 * zero-padded past nr) or read in place from a row-major B (a full panel); element (i, j) of c at
 * c[i ldc + j cs] (cs = 1: row-major, vector stores for a full tile; else through the tile). The MR x NV
 * accumulators are vectors of L lanes (NR = NV * L) held in registers for the whole loop over kc:
 * each step loads NV vectors of b, broadcasts MR values of a, and does MR * NV FMAs.
 * beta == 0 never reads c (it may hold NaN). A partial tile (mr < MR or nr < NR) goes through a
 * local tile. */
#define FASTNN_UKERNEL(NAME, T, L, MR, NV, TARGET, TSTORE)                                        \
TARGET static void NAME(ptrdiff_t kc, const T *restrict a, ptrdiff_t lda, ptrdiff_t lpa, const T *restrict b,  \
                        ptrdiff_t ldb, T *restrict c, ptrdiff_t ldc, ptrdiff_t cs, int mr, int nr, T alpha,   \
                        T beta) {                                                                 \
    typedef T vec __attribute__((vector_size((L) * sizeof(T))));                                 \
    typedef T uvec __attribute__((vector_size((L) * sizeof(T)), aligned(sizeof(T))));            \
    vec acc[MR][NV];                                                /* (MR, NR) in registers */  \
    for (int i = 0; i < (MR); i++)                                                               \
        for (int v = 0; v < (NV); v++) acc[i][v] = (vec){0};                                     \
    for (ptrdiff_t p = 0; p < kc; p++) {                                                         \
        vec bv[NV];                                                                              \
        for (int v = 0; v < (NV); v++) bv[v] = *(const uvec *)(b + p * ldb + v * (L));           \
        for (int i = 0; i < (MR); i++) {                                                         \
            const T ai = a[i * lda + p * lpa];                                                   \
            for (int v = 0; v < (NV); v++) acc[i][v] += ai * bv[v];                              \
        }                                                                                        \
    }                                                                                            \
    if (mr == (MR) && nr == (NV) * (L) && cs == 1) {                                             \
        for (int i = 0; i < (MR); i++)                                                           \
            for (int v = 0; v < (NV); v++) {                                                     \
                uvec *dst = (uvec *)(c + i * ldc + v * (L));                                     \
                *dst = beta == 0 ? alpha * acc[i][v] : alpha * acc[i][v] + beta * *dst;           \
            }                                                                                    \
        return;                                                                                  \
    }                                                                                            \
    if (mr == (MR) && nr == (NV) * (L) && ldc == 1 && beta == 0 && TSTORE((const void *)acc, c, cs, alpha)) \
        return;                                          /* C^T by vector permutes (AVX-512 float) */ \
    T tile[(MR) * (NV) * (L)] __attribute__((aligned(64)));             /* (MR, NR) */           \
    for (int i = 0; i < (MR); i++)                                                               \
        for (int v = 0; v < (NV); v++) *(vec *)(tile + i * (NV) * (L) + v * (L)) = acc[i][v];    \
    for (int j = 0; j < nr; j++)            /* C^T (ldc = 1, the backward pass) stores along i */ \
        for (int i = 0; i < mr; i++) {                                                           \
            T *dst = c + i * ldc + j * cs;                                                       \
            *dst = beta == 0 ? alpha * tile[i * (NV) * (L) + j]                                  \
                             : alpha * tile[i * (NV) * (L) + j] + beta * *dst;                   \
        }                                                                                        \
}

/* A full tile's transposed store (ldc = 1: element (i, j) at c[i + j cs], the backward pass's
 * G_in^T = W G^T): the AVX-512 float kernel's 8 x 32 tile, 16 vectors of 16 lanes, permuted in
 * registers in three rounds of two-source shuffles (row pairs, row quads, then 8 rows of 2 columns),
 * 48 shuffles and 32 stores of a column's 8 contiguous values, instead of 256 scalar stores from a
 * local tile. Returns 0 (not done: the caller stores through the tile) for other kernels. */
#define FASTNN_NO_TSTORE(acc, c, cs, alpha) 0
#if FASTNN_GEMM_X86
#if FASTNN_T_IS_FLOAT
typedef float fastnn_v16sf_t __attribute__((vector_size(64)));
typedef int fastnn_v16si_t __attribute__((vector_size(64)));
__attribute__((always_inline, target("avx512f"))) static inline int
fastnn_store_t_avx512(const void *acc_, float *c, ptrdiff_t cs, float alpha) {
    const fastnn_v16sf_t(*acc)[2] = (const fastnn_v16sf_t(*)[2])acc_;            /* (8, 2) vectors */
    const fastnn_v16si_t pair_lo = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    const fastnn_v16si_t pair_hi = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const fastnn_v16si_t quad_lo = {0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23};
    const fastnn_v16si_t quad_hi = {8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31};
    const fastnn_v16si_t oct_lo = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23};
    const fastnn_v16si_t oct_hi = {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};
    for (int v = 0; v < 2; v++) {                             /* columns 16 v .. 16 v + 15 */
        fastnn_v16sf_t p[8], q[8];
        for (int k = 0; k < 4; k++) {                         /* rows 2k, 2k+1 of columns 0-7, 8-15 */
            p[2 * k] = __builtin_shuffle(acc[2 * k][v], acc[2 * k + 1][v], pair_lo);
            p[2 * k + 1] = __builtin_shuffle(acc[2 * k][v], acc[2 * k + 1][v], pair_hi);
        }
        for (int h = 0; h < 2; h++) {                         /* rows 0-3 and 4-7 of 4 columns each */
            q[4 * h] = __builtin_shuffle(p[h], p[h + 2], quad_lo);             /* rows 0-3, columns 8h + 0-3 */
            q[4 * h + 1] = __builtin_shuffle(p[h], p[h + 2], quad_hi);         /* rows 0-3, columns 8h + 4-7 */
            q[4 * h + 2] = __builtin_shuffle(p[h + 4], p[h + 6], quad_lo);     /* rows 4-7, columns 8h + 0-3 */
            q[4 * h + 3] = __builtin_shuffle(p[h + 4], p[h + 6], quad_hi);     /* rows 4-7, columns 8h + 4-7 */
        }
        for (int blk = 0; blk < 4; blk++) {                   /* columns 4 blk .. 4 blk + 3 of the 16 */
            const int top = 4 * (blk / 2) + blk % 2;          /* q[top]: rows 0-3; q[top + 2]: rows 4-7 */
            const fastnn_v16sf_t r01 = alpha * __builtin_shuffle(q[top], q[top + 2], oct_lo);
            const fastnn_v16sf_t r23 = alpha * __builtin_shuffle(q[top], q[top + 2], oct_hi);
            float *col = c + (16 * v + 4 * blk) * cs;         /* column j's 8 rows at c[j cs ..] */
            memcpy(col, &r01, 32);
            memcpy(col + cs, (const float *)&r01 + 8, 32);
            memcpy(col + 2 * cs, &r23, 32);
            memcpy(col + 3 * cs, (const float *)&r23 + 8, 32);
        }
    }
    return 1;
}
#define FASTNN_TSTORE_AVX512 fastnn_store_t_avx512
#else
#define FASTNN_TSTORE_AVX512 FASTNN_NO_TSTORE
#endif
FASTNN_UKERNEL(FASTNN_NAME(uk_avx512), FASTNN_T, 64 / sizeof(FASTNN_T), FASTNN_MR_AVX512,
               FASTNN_NV_AVX512, __attribute__((target("avx512f,fma"))), FASTNN_TSTORE_AVX512)
FASTNN_UKERNEL(FASTNN_NAME(uk_avx2), FASTNN_T, 32 / sizeof(FASTNN_T), FASTNN_MR_AVX2,
               FASTNN_NV_AVX2, __attribute__((target("avx2,fma"))), FASTNN_NO_TSTORE)
FASTNN_UKERNEL(FASTNN_NAME(uk1_avx512), FASTNN_T, 64 / sizeof(FASTNN_T), FASTNN_MR_AVX512, 1,
               __attribute__((target("avx512f,fma"))), FASTNN_NO_TSTORE)
FASTNN_UKERNEL(FASTNN_NAME(uk1_avx2), FASTNN_T, 32 / sizeof(FASTNN_T), FASTNN_MR_AVX2, 1,
               __attribute__((target("avx2,fma"))), FASTNN_NO_TSTORE)
#undef FASTNN_TSTORE_AVX512
#endif
FASTNN_UKERNEL(FASTNN_NAME(uk_generic), FASTNN_T, 16 / sizeof(FASTNN_T), FASTNN_MR_GENERIC,
               FASTNN_NV_GENERIC, , FASTNN_NO_TSTORE)
FASTNN_UKERNEL(FASTNN_NAME(uk1_generic), FASTNN_T, 16 / sizeof(FASTNN_T), FASTNN_MR_GENERIC, 1, ,
               FASTNN_NO_TSTORE)

/* Pack rows r0 .. r0 + m of op(A)[:, p0 : p0 + kc] as panels of mr_ rows: ap[panel][p][i]
 * (kc, mr_), rows past m zero. op(A)[i, p] = a[i * lda + p], or a[p * lda + i] when trans. */
static void FASTNN_NAME(pack_a)(int trans, const FASTNN_T *a, ptrdiff_t lda, ptrdiff_t r0, ptrdiff_t m,
                                ptrdiff_t p0, ptrdiff_t kc, int mr_, FASTNN_T *ap,
                                ptrdiff_t panel0, ptrdiff_t panel1) {
    for (ptrdiff_t panel = panel0; panel < panel1; panel++) {
        FASTNN_T *dst = ap + panel * kc * mr_;                                 /* (kc, mr_) */
        ptrdiff_t i0 = panel * mr_, rows = m - i0 < mr_ ? m - i0 : mr_;
        if (trans) {                        /* op(A)'s rows are A's columns: each depth p is contiguous */
            for (ptrdiff_t p = 0; p < kc; p++) {
                const FASTNN_T *src = a + (p0 + p) * lda + r0 + i0;
                ptrdiff_t i = 0;
                for (; i < rows; i++) dst[p * mr_ + i] = src[i];
                for (; i < mr_; i++) dst[p * mr_ + i] = 0;
            }
            continue;
        }
        for (ptrdiff_t i = 0; i < rows; i++) {
            const FASTNN_T *src = a + (r0 + i0 + i) * lda + p0;
            for (ptrdiff_t p = 0; p < kc; p++) dst[p * mr_ + i] = src[p];
        }
        for (ptrdiff_t i = rows; i < mr_; i++)
            for (ptrdiff_t p = 0; p < kc; p++) dst[p * mr_ + i] = 0;
    }
}

/* Pack op(B)[p0 : p0 + kc, c0 : c0 + n] as panels of nr_ columns: bp[panel][p][j] (kc, nr_),
 * columns past n zero. op(B)[p, j] = b[p * ldb + j], or b[j * ldb + p] when trans. */
static void FASTNN_NAME(pack_b)(int trans, const FASTNN_T *b, ptrdiff_t ldb, ptrdiff_t p0, ptrdiff_t kc,
                                ptrdiff_t c0, ptrdiff_t n, int nr_, FASTNN_T *bp,
                                ptrdiff_t panel0, ptrdiff_t panel1) {
    for (ptrdiff_t panel = panel0; panel < panel1; panel++) {
        FASTNN_T *dst = bp + panel * kc * nr_;                                 /* (kc, nr_) */
        ptrdiff_t j0 = panel * nr_, cols = n - j0 < nr_ ? n - j0 : nr_;
        if (trans) {
            for (ptrdiff_t p = 0; p < kc; p++)
                for (ptrdiff_t j = cols; j < nr_; j++) dst[p * nr_ + j] = 0;
            const FASTNN_T *src = b + (c0 + j0) * ldb + p0;        /* (cols, kc), row stride ldb */
            for (ptrdiff_t pb = 0; pb < kc; pb += 16) {     /* 16 depths: one 64-byte line per source row */
                const ptrdiff_t pe = pb + 16 < kc ? pb + 16 : kc;
                for (ptrdiff_t j = 0; j < cols; j++)
                    for (ptrdiff_t p = pb; p < pe; p++) dst[p * nr_ + j] = src[j * ldb + p];
            }
        } else {
            for (ptrdiff_t p = 0; p < kc; p++) {
                const FASTNN_T *src = b + (p0 + p) * ldb + c0 + j0;
                ptrdiff_t j = 0;
                for (; j < cols; j++) dst[p * nr_ + j] = src[j];
                for (; j < nr_; j++) dst[p * nr_ + j] = 0;
            }
        }
    }
}

typedef void (*FASTNN_NAME(uk_fn))(ptrdiff_t, const FASTNN_T *restrict, ptrdiff_t, ptrdiff_t, const FASTNN_T *restrict, ptrdiff_t,
                                  FASTNN_T *restrict, ptrdiff_t, ptrdiff_t, int, int, FASTNN_T, FASTNN_T);

/* Thread tid of nt's share of C = alpha op(A) op(B) + beta C (m, n, k >= 1), with ap and bp the
 * packing buffers every thread of the call shares (MC x KC and KC x NC). Loops as in BLIS:
 * columns of NC, depth of KC (pack B), rows of MC (pack A), then the (row panel, column panel)
 * micro-tiles of the block split evenly between the threads. Barriers (only when nt > 1) keep a
 * buffer from being packed while another thread still reads it. When all of A fits one MC block
 * and B is not transposed, each B element is used by one block only: the micro-kernel then
 * reads B's full panels in place (packing them would copy as many bytes as the product reads:
 * at m = 32, a third of the time) and only a last partial panel is packed. Likewise A's full
 * row panels are read in place whenever the depth fits one block (k <= KC), however many MC
 * blocks of rows, in either layout (transposed, depth p's MR values are contiguous): the fused
 * step's products at a thread's 32 rows and its weight gradients A_in^T G at every width (REPORT;
 * packing A at k = 64, one float copied per 32 multiply-adds, took as long as the product on
 * AVX2), except a transposed A of several blocks whose rows lie a multiple of 4 KB apart: a
 * panel's depths would share one set of the L1 cache (1024 x 512 x 32 at width 1,024 ran at 63
 * GFLOP/s packed, 46-60 in place); and whenever B has a single
 * column panel (n <= NR) and A is not transposed, however large A is: the backward's W G^T at
 * a thread's 32 rows, where packing W (2 MB at width 1,024) cost more than the product. */
static void FASTNN_NAME(gemm_part)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                   FASTNN_T alpha, const FASTNN_T *a, ptrdiff_t lda, const FASTNN_T *b,
                                   ptrdiff_t ldb, FASTNN_T beta, FASTNN_T *c, ptrdiff_t ldc, ptrdiff_t cs,
                                   FASTNN_T *ap, FASTNN_T *bp, int tid, int nt) {
    const fastnn_gemm_shape *s = &FASTNN_CAT(FASTNN_CAT(fastnn_, FASTNN_S), gemm_shape);
    const int narrow = n <= s->nr1 && s->kernel1 != NULL;          /* one vector of columns: the narrow kernel */
    const int MR = s->mr, NR = narrow ? s->nr1 : s->nr;
    const ptrdiff_t MC = s->mc, KC = s->kc, NC = s->nc;
    const FASTNN_NAME(uk_fn) uk = (FASTNN_NAME(uk_fn))(narrow ? s->kernel1 : s->kernel);
    for (ptrdiff_t jc = 0; jc < n; jc += NC) {
        const ptrdiff_t nc = n - jc < NC ? n - jc : NC, n_panels = (nc + NR - 1) / NR;
        const int direct_b = !trans_b && m <= MC;
        const int direct_a = (k <= KC                   /* A's blocks: read in place (either layout), */
                              && (!trans_a || m <= MC || lda * (ptrdiff_t)sizeof(FASTNN_T) % 4096 != 0))
                             || (!trans_a && n <= NR);  /* or each A element is used once (one column panel) */
        const ptrdiff_t first_packed = direct_b ? nc / NR : 0;      /* panels before it read in place */
        for (ptrdiff_t pc = 0; pc < k; pc += KC) {
            const ptrdiff_t kc = k - pc < KC ? k - pc : KC;
            const FASTNN_T beta_pc = pc == 0 ? beta : 1;          /* later depth blocks accumulate */
            if (nt > 1 && (jc > 0 || pc > 0)) {                   /* bp free: the last block's tiles done */
                _Pragma("omp barrier")
            }
            const ptrdiff_t n_packed = n_panels - first_packed;
            FASTNN_NAME(pack_b)(trans_b, b, ldb, pc, kc, jc, nc, NR, bp,
                                first_packed + n_packed * tid / nt, first_packed + n_packed * (tid + 1) / nt);
            for (ptrdiff_t ic = 0; ic < m; ic += MC) {
                const ptrdiff_t mc = m - ic < MC ? m - ic : MC, m_panels = (mc + MR - 1) / MR;
                const ptrdiff_t a_first = direct_a ? mc / MR : 0;        /* full panels read in place */
                const int packs_a = a_first < m_panels;                  /* some panel of this block */
                /* barriers only where a buffer changes hands: ap free before it is packed again
                 * (the last block's tiles done; at ic = 0 the barrier above saw to it), then ap
                 * and, at ic = 0, bp packed before any tile reads them. A block read wholly in
                 * place needs neither after the first (256 x 128 @ 128 x 64: 5 barriers -> 1) */
                if (nt > 1 && packs_a && ic > 0) {
                    _Pragma("omp barrier")
                }
                FASTNN_NAME(pack_a)(trans_a, a, lda, ic, mc, pc, kc, MR, ap,
                                    a_first + (m_panels - a_first) * tid / nt,
                                    a_first + (m_panels - a_first) * (tid + 1) / nt);
                if (nt > 1 && (packs_a || ic == 0)) {
                    _Pragma("omp barrier")
                }
                const ptrdiff_t tiles = n_panels * m_panels;
                for (ptrdiff_t t = tiles * tid / nt; t < tiles * (tid + 1) / nt; t++) {
                    const ptrdiff_t jp = t / m_panels, ip = t % m_panels;     /* column-panel major */
                    const ptrdiff_t i = ip * MR, j = jp * NR;
                    const int in_place = jp < first_packed;
                    const int a_in_place = direct_a && i + MR <= mc;
                    const FASTNN_T *a_tile = !a_in_place ? ap + ip * kc * MR
                                           : trans_a ? a + pc * lda + ic + i : a + (ic + i) * lda + pc;
                    uk(kc, a_tile, !a_in_place ? 1 : trans_a ? 1 : lda, !a_in_place ? MR : trans_a ? lda : 1,
                       in_place ? b + pc * ldb + jc + j : bp + jp * kc * NR,
                       in_place ? ldb : NR, c + (ic + i) * ldc + (jc + j) * cs, ldc, cs,
                       (int)(mc - i < MR ? mc - i : MR), (int)(nc - j < NR ? nc - j : NR), alpha, beta_pc);
                }
            }
        }
    }
}

/* The plain loop, for when no packing buffer can be had: the same sums in depth order, slowly. */
static void FASTNN_NAME(gemm_unpacked)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                       FASTNN_T alpha, const FASTNN_T *a, ptrdiff_t lda, const FASTNN_T *b,
                                       ptrdiff_t ldb, FASTNN_T beta, FASTNN_T *c, ptrdiff_t ldc, ptrdiff_t cs) {
    for (ptrdiff_t i = 0; i < m; i++)
        for (ptrdiff_t j = 0; j < n; j++) {
            FASTNN_T sum = 0;
            for (ptrdiff_t p = 0; p < k; p++)
                sum += (trans_a ? a[p * lda + i] : a[i * lda + p]) * (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j * cs] = beta == 0 ? alpha * sum : alpha * sum + beta * c[i * ldc + j * cs];
        }
}

/* C (m, n) = alpha op(A) op(B) + beta C, element (i, j) of C at c[i ldc + j cs], on `threads`
 * OpenMP threads (1: the calling thread only, no parallel region: safe inside another one). k == 0 gives C = beta C. Without memory for the
 * packing buffer it falls back to the plain loop (same result, slower): it never fails. */
static void FASTNN_NAME(gemm_strided)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, FASTNN_T alpha,
                              const FASTNN_T *a, ptrdiff_t lda, const FASTNN_T *b, ptrdiff_t ldb,
                              FASTNN_T beta, FASTNN_T *c, ptrdiff_t ldc, ptrdiff_t cs,
                                      int threads) {
    if (m <= 0 || n <= 0)
        return;
    const fastnn_gemm_shape *s = &FASTNN_CAT(FASTNN_CAT(fastnn_, FASTNN_S), gemm_shape);
    FASTNN_T *buffer = k <= 0 ? NULL
        : (FASTNN_T *)fastnn_gemm_buffer((size_t)(s->mc * s->kc + s->kc * s->nc) * sizeof(FASTNN_T));
    if (buffer == NULL || s->kernel == NULL) {
        FASTNN_NAME(gemm_unpacked)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs);
        return;
    }
    FASTNN_T *ap = buffer, *bp = buffer + s->mc * s->kc;         /* (MC, KC) and (KC, NC), packed */
    if (threads <= 1) {
        FASTNN_NAME(gemm_part)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs, ap, bp, 0, 1);
        return;
    }
#ifdef _OPENMP
    _Pragma("omp parallel num_threads(threads)")
    FASTNN_NAME(gemm_part)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs, ap, bp,
                           omp_get_thread_num(), omp_get_num_threads());
#else
    FASTNN_NAME(gemm_part)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cs, ap, bp, 0, 1);
#endif
}

/* The row-major case, cs = 1. */
static void FASTNN_NAME(gemm)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, FASTNN_T alpha,
                              const FASTNN_T *a, ptrdiff_t lda, const FASTNN_T *b, ptrdiff_t ldb,
                              FASTNN_T beta, FASTNN_T *c, ptrdiff_t ldc, int threads) {
    FASTNN_NAME(gemm_strided)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, 1, threads);
}

#undef FASTNN_UKERNEL
#undef FASTNN_NO_TSTORE
#undef FASTNN_NAME
#undef FASTNN_CAT
#undef FASTNN_CAT2
