/* The AVX-512 row kernels of the Cython backend's fused forward, float32 only (fused_forward.pyx).
 * Contract: the same sums, in the same order, as sparse_row.h's kernels (so the same bits), with
 * each 16 inputs checked, gathered and counted by a handful of mask instructions instead of one
 * branch-free step per input. FASTNN_FORWARD512 is 1 where the build has AVX-512F (-march=native
 * on such a CPU), else 0 and the functions are stubs that the caller never reaches.
 *
 * gather_check_f512(a, n, check, idx, val, bounds, every, bad) -> m: the non-zeros of the
 *   contiguous row a (n,) as (idx[q], val[q]), q < m, in index order (v != 0: -0.0 dropped, NaN
 *   kept, as gather_nonzeros). check 1: *bad = 1 when an entry is not finite; 2: also outside
 *   [0, 1] (NaN fails every test); 0: no check. bounds (may be NULL): bounds[b] = the number of
 *   non-zeros among a[0 : 16 * every * b], for b = 0 .. ceil(ceil(n / 16) / every), so a block of
 *   16 * every inputs owns non-zeros bounds[b] .. bounds[b + 1]. Each chunk of 16 is one masked
 *   load, compares to masks, and VCOMPRESSPS/VPCOMPRESSD into registers stored under a mask of
 *   the count (never past m: the buffers need no slack).
 * relu_gather_f512(z, n, idx, val, bounds, every) -> m: z = max(z, 0) in place (NaN -> 0, as
 *   relu_gather) and its non-zeros gathered, with bounds as above.
 * sparse_row_f512(W, n_out, idx, val, m, z_in, z): z (n_out,) = z_in + sum_q val[q] W[idx[q]]
 *   (W (n_in, n_out) row-major; z_in may be z): columns in blocks of 8, 4, 2 and 1 64-byte
 *   vectors held in registers while the non-zeros stream past, then the last n_out % 16 columns
 *   under a mask; each output summed in the order of the non-zeros, one FMA per term.
 */
#ifndef FASTNN_FORWARD512_H
#define FASTNN_FORWARD512_H
#include <stddef.h>
#include <stdint.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define FASTNN_FORWARD512 1
/* bytes ahead of the gather that it asks for: the next rows of X come from DRAM (the test set is
 * 31 MB), and the hardware prefetcher alone left the gather waiting on them (0.53 against 0.66 us
 * an image in a C harness over the MNIST test set, one Zen 5 thread) */
#define FASTNN_PREFETCH_AHEAD 2048

static inline __mmask16 fastnn_first_lanes(ptrdiff_t count) {          /* lanes 0 .. count-1 */
    return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1u);
}

/* one chunk's non-zeros (mask nz of v, indices iota) appended at idx + m, val + m; returns m */
static inline ptrdiff_t fastnn_compress16(__m512 v, __mmask16 nz, __m512i iota, int32_t *idx, float *val,
                                          ptrdiff_t m) {
    const unsigned count = (unsigned)_mm_popcnt_u32(nz);
    const __mmask16 head = fastnn_first_lanes(count);
    _mm512_mask_storeu_ps(val + m, head, _mm512_maskz_compress_ps(nz, v));
    _mm512_mask_storeu_epi32(idx + m, head, _mm512_maskz_compress_epi32(nz, iota));
    return m + count;
}

/* The gathers' loop, inlined into each caller with CHECK and BOUNDS constant (so neither is a
 * test per chunk); the bounds counted down, not by a division per chunk. */
#define FASTNN_GATHER_LOOP(CHECK, BOUNDS, LOAD_AND_MASK)                                       \
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);                       \
    const __m512i sixteen = _mm512_set1_epi32(16);                                             \
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);    \
    __mmask16 wrong = 0;                                                                       \
    ptrdiff_t m = 0, block = 0, left = every;                                                  \
    (void)one; (void)wrong;                                                                    \
    if (BOUNDS) bounds[0] = 0;                                                                 \
    for (ptrdiff_t k = 0; k < n; k += 16) {                                                    \
        const __mmask16 in = fastnn_first_lanes(n - k);                                        \
        LOAD_AND_MASK                                                                          \
        if ((CHECK) == 2)                                                                      \
            wrong |= _mm512_cmp_ps_mask(v, zero, _CMP_NGE_UQ) | _mm512_cmp_ps_mask(v, one, _CMP_NLE_UQ); \
        else if ((CHECK) == 1)                                                                 \
            wrong |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), zero, _CMP_NEQ_UQ);  /* inf - inf, NaN */ \
        m = fastnn_compress16(v, keep, iota, idx, val, m);                                     \
        iota = _mm512_add_epi32(iota, sixteen);                                                \
        if ((BOUNDS) && --left == 0) { bounds[++block] = (int32_t)m; left = every; }           \
    }                                                                                          \
    if ((BOUNDS) && left != every) bounds[++block] = (int32_t)m;

static inline __attribute__((always_inline)) ptrdiff_t fastnn_gather_f512(
        const float *a, ptrdiff_t n, const int check, int32_t *idx, float *val, int32_t *bounds, ptrdiff_t every,
        int *bad) {
    FASTNN_GATHER_LOOP(check, bounds != NULL,
        const __m512 v = _mm512_maskz_loadu_ps(in, a + k);               /* lanes past n read as 0 */
        _mm_prefetch((const char *)(a + k) + FASTNN_PREFETCH_AHEAD, _MM_HINT_T0);   /* never faults */
        const __mmask16 keep = _mm512_cmp_ps_mask(v, zero, _CMP_NEQ_UQ);)
    *bad = wrong != 0;
    return m;
}

static inline ptrdiff_t gather_check_f512(const float *a, ptrdiff_t n, int check, int32_t *idx, float *val,
                                          int32_t *bounds, ptrdiff_t every, int *bad) {
    if (bounds) {
        if (check == 2) return fastnn_gather_f512(a, n, 2, idx, val, bounds, every, bad);
        if (check == 1) return fastnn_gather_f512(a, n, 1, idx, val, bounds, every, bad);
        return fastnn_gather_f512(a, n, 0, idx, val, bounds, every, bad);
    }
    if (check == 2) return fastnn_gather_f512(a, n, 2, idx, val, NULL, 1, bad);
    if (check == 1) return fastnn_gather_f512(a, n, 1, idx, val, NULL, 1, bad);
    return fastnn_gather_f512(a, n, 0, idx, val, NULL, 1, bad);
}

static inline __attribute__((always_inline)) ptrdiff_t fastnn_relu_gather_f512(
        float *z, ptrdiff_t n, int32_t *idx, float *val, int32_t *bounds, ptrdiff_t every) {
    FASTNN_GATHER_LOOP(0, bounds != NULL,
        const __m512 v = _mm512_maskz_loadu_ps(in, z + k);
        const __mmask16 keep = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);     /* NaN, -0.0, < 0: out */
        _mm512_mask_storeu_ps(z + k, in, _mm512_maskz_mov_ps(keep, v));)
    return m;
}

static inline ptrdiff_t relu_gather_f512(float *z, ptrdiff_t n, int32_t *idx, float *val, int32_t *bounds,
                                         ptrdiff_t every) {
    return bounds ? fastnn_relu_gather_f512(z, n, idx, val, bounds, every)
                  : fastnn_relu_gather_f512(z, n, idx, val, NULL, 1);
}
#undef FASTNN_GATHER_LOOP

/* columns j0 .. j0 + 16 K of z = z_in + sum_q val[q] W[idx[q]]: K accumulators in registers */
#define FASTNN_F512_BLOCK(K)                                                                   \
    {                                                                                          \
        __m512 acc[K];                                                                         \
        for (int v = 0; v < (K); v++) acc[v] = _mm512_loadu_ps(z_in + j0 + 16 * v);            \
        for (ptrdiff_t q = 0; q < m; q++) {                                                    \
            const float *w = W + (ptrdiff_t)idx[q] * n_out + j0;                               \
            const __m512 x = _mm512_set1_ps(val[q]);                                           \
            for (int v = 0; v < (K); v++) acc[v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(w + 16 * v), acc[v]); \
        }                                                                                      \
        for (int v = 0; v < (K); v++) _mm512_storeu_ps(z + j0 + 16 * v, acc[v]);               \
        j0 += 16 * (K);                                                                        \
    }

static inline __attribute__((always_inline)) void sparse_row_f512(const float *restrict W, ptrdiff_t n_out, const int32_t *restrict idx,
                                   const float *restrict val, ptrdiff_t m, const float *z_in, float *z) {
    ptrdiff_t j0 = 0;
    while (j0 + 128 <= n_out) FASTNN_F512_BLOCK(8)
    if (j0 + 64 <= n_out) FASTNN_F512_BLOCK(4)
    if (j0 + 32 <= n_out) FASTNN_F512_BLOCK(2)
    if (j0 + 16 <= n_out) FASTNN_F512_BLOCK(1)
    if (j0 < n_out) {                                                      /* the last n_out % 16 */
        const __mmask16 tail = fastnn_first_lanes(n_out - j0);
        __m512 acc = _mm512_maskz_loadu_ps(tail, z_in + j0);
        for (ptrdiff_t q = 0; q < m; q++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(val[q]),
                                  _mm512_maskz_loadu_ps(tail, W + (ptrdiff_t)idx[q] * n_out + j0), acc);
        _mm512_mask_storeu_ps(z + j0, tail, acc);
    }
}
#undef FASTNN_F512_BLOCK

#else
#define FASTNN_FORWARD512 0
static inline ptrdiff_t gather_check_f512(const float *a, ptrdiff_t n, int check, int32_t *idx, float *val,
                                          int32_t *bounds, ptrdiff_t every, int *bad) {
    (void)a; (void)n; (void)check; (void)idx; (void)val; (void)bounds; (void)every; *bad = 1; return 0;
}
static inline ptrdiff_t relu_gather_f512(float *z, ptrdiff_t n, int32_t *idx, float *val, int32_t *bounds,
                                         ptrdiff_t every) {
    (void)z; (void)n; (void)idx; (void)val; (void)bounds; (void)every; return 0;
}
static inline void sparse_row_f512(const float *W, ptrdiff_t n_out, const int32_t *idx, const float *val,
                                   ptrdiff_t m, const float *z_in, float *z) {
    (void)W; (void)n_out; (void)idx; (void)val; (void)m; (void)z_in; (void)z;
}
#endif
#endif
