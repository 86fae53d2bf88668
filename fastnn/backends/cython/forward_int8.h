/* Layer 0 of the int8 forward (fused_forward.pyx's Int8Runner; fastnn.inference.int8 documents
 * the quantization): inputs as 8-bit pixels, W0 as int8 with a scale per output, integer sums.
 * Contract: the integer sums are exact (int32; |sum| <= D * 255 * 127, D < 66,000), so the
 * VNNI path and the portable one give the same bits, in any order. FASTNN_INT8_VNNI is 1 where
 * the build has AVX512-VNNI (-march=native on Zen 4/5, Ice Lake and later), else 0.
 *
 * Layouts. G = ceil(D / 4) groups of 4 inputs. xq (4 G,) uint8: xq[p] = round(255 x[p]) (round
 * to nearest even, in float32), 0 past D. Wq (G, H16, 4) int8: Wq[g][j][t] = W0q[4 g + t][j],
 * H16 = H0 rounded up to 16 (the padding columns 0); the 4 bytes of a group and output are the
 * 4 products VPDPBUSD sums into one int32 lane.
 *
 * int8_quantize_gather(x, n, xq, groups, bounds, every, bad) -> m: xq from the contiguous row x
 *   (n,), and the groups g with a non-zero 4-byte word in groups[0:m], ascending. *bad = 1 when
 *   an input is NaN or outside [0, 1]. bounds (may be NULL): bounds[b] = the number of such groups
 *   among the first 16 * every * b, b = 0 .. ceil(ceil(G / 16) / every), as forward512.h.
 * int8_accumulate(Wq, h16, xq, groups, m, acc): acc (h16,) int32 += sum over groups[0:m] of
 *   the group's 4 inputs times its 4 weights, per output.
 * int8_dequantize(acc, scale, b, h, z): z (h,) = float(acc) * scale + b, one rounding (FMA).
 */
#ifndef FASTNN_FORWARD_INT8_H
#define FASTNN_FORWARD_INT8_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define FASTNN_INT8_VNNI 1

static inline __mmask16 fastnn_i8_first_lanes(ptrdiff_t count) {       /* lanes 0 .. count-1 */
    return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1u);
}

static inline __attribute__((always_inline)) ptrdiff_t fastnn_i8_gather(
        const float *x, ptrdiff_t n, uint8_t *xq, int32_t *groups, int32_t *bounds, ptrdiff_t every, int *bad) {
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), k255 = _mm512_set1_ps(255.0f);
    const ptrdiff_t G = (n + 3) / 4;
    __mmask16 wrong = 0;
    for (ptrdiff_t k = 0; k < 4 * G; k += 16) {                      /* 16 inputs -> 16 bytes */
        const __mmask16 in = fastnn_i8_first_lanes(n - k);
        const __m512 v = _mm512_maskz_loadu_ps(in, x + k);               /* lanes past n read as 0 */
        _mm_prefetch((const char *)(x + k) + 2048, _MM_HINT_T0);        /* the next rows (never faults) */
        wrong |= _mm512_cmp_ps_mask(v, zero, _CMP_NGE_UQ) | _mm512_cmp_ps_mask(v, one, _CMP_NLE_UQ);
        const __m128i q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v, k255)));
        _mm_mask_storeu_epi8(xq + k, (__mmask16)fastnn_i8_first_lanes(4 * G - k), q);
    }
    const __m512i sixteen = _mm512_set1_epi32(16);
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    ptrdiff_t m = 0, block = 0, left = every;
    if (bounds) bounds[0] = 0;
    for (ptrdiff_t g = 0; g < G; g += 16) {                          /* 16 groups: a 64-byte word load */
        const __m512i w = _mm512_maskz_loadu_epi32(fastnn_i8_first_lanes(G - g), xq + 4 * g);
        const __mmask16 nz = _mm512_test_epi32_mask(w, w);
        const unsigned count = (unsigned)_mm_popcnt_u32(nz);
        _mm512_mask_storeu_epi32(groups + m, fastnn_i8_first_lanes(count), _mm512_maskz_compress_epi32(nz, iota));
        m += count;
        iota = _mm512_add_epi32(iota, sixteen);
        if (bounds && --left == 0) { bounds[++block] = (int32_t)m; left = every; }
    }
    if (bounds && left != every) bounds[++block] = (int32_t)m;
    *bad = wrong != 0;
    return m;
}

static inline ptrdiff_t int8_quantize_gather(const float *x, ptrdiff_t n, uint8_t *xq, int32_t *groups,
                                             int32_t *bounds, ptrdiff_t every, int *bad) {
    return bounds ? fastnn_i8_gather(x, n, xq, groups, bounds, every, bad)
                  : fastnn_i8_gather(x, n, xq, groups, NULL, 1, bad);
}

/* outputs j0 .. j0 + 16 K: K int32 accumulators in registers while the groups stream past */
#define FASTNN_I8_BLOCK(K)                                                                     \
    {                                                                                          \
        __m512i acc_v[K];                                                                      \
        for (int v = 0; v < (K); v++) acc_v[v] = _mm512_loadu_si512(acc + j0 + 16 * v);        \
        for (ptrdiff_t q = 0; q < m; q++) {                                                    \
            const int32_t g = groups[q];                                                       \
            const __m512i xg = _mm512_set1_epi32(x32[g]);                                      \
            const int8_t *w = Wq + ((ptrdiff_t)g * h16 + j0) * 4;                              \
            for (int v = 0; v < (K); v++)                                                      \
                acc_v[v] = _mm512_dpbusd_epi32(acc_v[v], xg, _mm512_loadu_si512(w + 64 * v));   \
        }                                                                                      \
        for (int v = 0; v < (K); v++) _mm512_storeu_si512(acc + j0 + 16 * v, acc_v[v]);        \
        j0 += 16 * (K);                                                                        \
    }

static inline void int8_accumulate(const int8_t *restrict Wq, ptrdiff_t h16, const uint8_t *restrict xq,
                                   const int32_t *restrict groups, ptrdiff_t m, int32_t *restrict acc) {
    const int32_t *x32 = (const int32_t *)(const void *)xq;          /* a group's 4 bytes as one word */
    ptrdiff_t j0 = 0;
    while (j0 + 128 <= h16) FASTNN_I8_BLOCK(8)
    if (j0 + 64 <= h16) FASTNN_I8_BLOCK(4)
    if (j0 + 32 <= h16) FASTNN_I8_BLOCK(2)
    if (j0 + 16 <= h16) FASTNN_I8_BLOCK(1)
}
#undef FASTNN_I8_BLOCK

static inline void int8_dequantize(const int32_t *acc, const float *scale, const float *b, ptrdiff_t h, float *z) {
    for (ptrdiff_t j = 0; j < h; j += 16) {
        const __mmask16 in = fastnn_i8_first_lanes(h - j);
        _mm512_mask_storeu_ps(z + j, in, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(in, acc + j)),
                                                          _mm512_maskz_loadu_ps(in, scale + j),
                                                          _mm512_maskz_loadu_ps(in, b + j)));
    }
}

#else
#define FASTNN_INT8_VNNI 0

static inline ptrdiff_t int8_quantize_gather(const float *x, ptrdiff_t n, uint8_t *xq, int32_t *groups,
                                             int32_t *bounds, ptrdiff_t every, int *bad) {
    const ptrdiff_t G = (n + 3) / 4;
    int wrong = 0;
    for (ptrdiff_t p = 0; p < n; p++) {
        const float v = x[p];
        wrong |= !((v >= 0.0f) & (v <= 1.0f));                           /* NaN fails both */
        xq[p] = (uint8_t)(wrong ? 0 : (int)nearbyintf(v * 255.0f));
    }
    for (ptrdiff_t p = n; p < 4 * G; p++) xq[p] = 0;
    ptrdiff_t m = 0;
    if (bounds) bounds[0] = 0;
    for (ptrdiff_t g = 0; g < G; g++) {
        groups[m] = (int32_t)g;
        m += (xq[4 * g] | xq[4 * g + 1] | xq[4 * g + 2] | xq[4 * g + 3]) != 0;
        if (bounds && (g + 1) % (16 * every) == 0) bounds[(g + 1) / (16 * every)] = (int32_t)m;
    }
    if (bounds && G % (16 * every) != 0) bounds[G / (16 * every) + 1] = (int32_t)m;
    *bad = wrong;
    return m;
}

static inline void int8_accumulate(const int8_t *restrict Wq, ptrdiff_t h16, const uint8_t *restrict xq,
                                   const int32_t *restrict groups, ptrdiff_t m, int32_t *restrict acc) {
    for (ptrdiff_t q = 0; q < m; q++) {
        const uint8_t *xg = xq + 4 * (ptrdiff_t)groups[q];
        const int8_t *w = Wq + (ptrdiff_t)groups[q] * h16 * 4;
        const int32_t x0 = xg[0], x1 = xg[1], x2 = xg[2], x3 = xg[3];
        for (ptrdiff_t j = 0; j < h16; j++)
            acc[j] += x0 * w[4 * j] + x1 * w[4 * j + 1] + x2 * w[4 * j + 2] + x3 * w[4 * j + 3];
    }
}

static inline void int8_dequantize(const int32_t *acc, const float *scale, const float *b, ptrdiff_t h, float *z) {
    for (ptrdiff_t j = 0; j < h; j++) z[j] = fmaf((float)acc[j], scale[j], b[j]);
}
#endif
#endif
