/* The row kernels of the Cython backend's fused forward (fastnn/backends/cython/*.pyx, fused_forward).
 *
 * gather_nonzeros_T(a, stride, n, idx, val) -> m: the non-zero entries of a[0], a[stride], ...
 * (n of them) as (idx[q], val[q]), q < m, in index order, branch-free per entry; on a contiguous
 * row, eight entries whose bits are all zero are skipped with one test (-0.0 is gathered, then
 * dropped as zero; NaN and inf are kept, so they propagate).
 *
 * sparse_row_T(W, n_out, idx, val, m, scale, z_in, z): z (n_out,) = z_in + sum_q x_q W[idx[q]];
 * W (n_in, n_out) row-major (NAME_strided(W, ldw, n_out, ...): n_out columns of rows ldw apart);
 * x_q = val[q] (int32 indices, values of type T); z_in may be z itself
 * (accumulate, as the blocked path and the training kernels do) or the bias.
 * sparse_pixels_T: the same over a CSR row of uint8 pixels with uint16 indices, x_q = T(pixel) *
 * scale (scale = T(1/255): bit-identical to fastnn.data.to_float); the training path's layer 0. Columns go in blocks of 8 vectors (64 floats or 32 doubles on 32-byte vectors):
 * the block's sums live in eight named vector variables (GCC/Clang vector extensions, so they
 * stay in registers: with a plain `T acc[64]` GCC kept them on the stack) while the non-zeros
 * stream past; z is read and written once per block instead of per non-zero. Then single
 * vectors (e.g. 8 of 10 output classes), then pairs of scalar columns in registers. Each output is
 * summed in the order of the non-zeros (no reassociation); the compiler contracts to FMA.
 *
 * sparse_update_T(G, n_out, idx, val, m, p, s, wd, mu, lr, momentum): the fused training step's
 * layer-0 weight gradient row fused with its SGD / momentum update, from the registers (below).
 * 32-byte vectors run as AVX2 (or AVX-512VL) instructions with -march=native, as SSE2 pairs
 * without it: correct everywhere.
 */
#ifndef FASTNN_SPARSE_ROW_H
#define FASTNN_SPARSE_ROW_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef float fastnn_v8sf __attribute__((vector_size(32)));
typedef double fastnn_v4df __attribute__((vector_size(32)));

#define FASTNN_GATHER(NAME, T)                                                             \
static inline ptrdiff_t NAME(const T *a, ptrdiff_t stride, ptrdiff_t n, int32_t *idx, T *val) { \
    ptrdiff_t m = 0, k = 0;                                                                   \
    if (stride == 1) {                                                                        \
        for (; k + 8 <= n; k += 8) {                                                          \
            uint64_t words[8 * sizeof(T) / 8], any = 0;   /* 64-bit loads straight to registers */ \
            memcpy(words, a + k, sizeof words);                                               \
            for (size_t e = 0; e < sizeof words / 8; e++) any |= words[e];                    \
            if (!any) continue;                                                               \
            for (int e = 0; e < 8; e++) {                                                     \
                const T v = a[k + e];                                                         \
                idx[m] = (int32_t)(k + e); val[m] = v; m += v != 0;                           \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    for (; k < n; k++) {                                                                      \
        const T v = a[k * stride];                                                            \
        idx[m] = (int32_t)k; val[m] = v; m += v != 0;                                         \
    }                                                                                         \
    return m;                                                                                 \
}

/* relu_gather_T(z, n, idx, val) -> m: z = max(z, 0) in place (NaN -> 0, as fastnn's relu) and
 * its non-zeros gathered, without a branch per entry: ReLU's signs are a coin toss, and the
 * branches GCC made of `z > 0 ? z : 0` mispredicted half the time (the top of a perf profile:
 * ~1 us of a 3 us image). The ReLU is a vector compare-and-mask; the count adds
 * (bits | -bits) >> (width - 1), 1 exactly when the value's bits are not all zero. */
#define FASTNN_RELU_GATHER(NAME, T, U, V, VI)                                                 \
static inline ptrdiff_t NAME(T *z, ptrdiff_t n, int32_t *idx, T *val) {                      \
    const ptrdiff_t L = sizeof(V) / sizeof(T);                                                \
    const int shift = 8 * sizeof(U) - 1;                                                      \
    ptrdiff_t m = 0, k = 0;                                                                   \
    for (; k + L <= n; k += L) {                                                              \
        V v; VI bits;                                                                         \
        memcpy(&v, z + k, sizeof v);                                                          \
        memcpy(&bits, &v, sizeof bits);                                                       \
        bits &= (VI)(v > (V){0});                     /* lanes > 0 keep their bits, else 0 */ \
        memcpy(z + k, &bits, sizeof bits);                                                    \
        for (int e = 0; e < L; e++) {                                                         \
            const U b = (U)bits[e];                                                           \
            idx[m] = (int32_t)(k + e); memcpy(val + m, &b, sizeof b);                         \
            m += (ptrdiff_t)((b | (0 - b)) >> shift);                                         \
        }                                                                                     \
    }                                                                                         \
    for (; k < n; k++) {                                                                      \
        U b; memcpy(&b, z + k, sizeof b);                                                     \
        b &= (U)0 - (U)(z[k] > 0);                                                            \
        memcpy(z + k, &b, sizeof b);                                                          \
        idx[m] = (int32_t)k; memcpy(val + m, &b, sizeof b);                                   \
        m += (ptrdiff_t)((b | (0 - b)) >> shift);                                             \
    }                                                                                         \
    return m;                                                                                 \
}

/* FASTNN_ROW_SUMS: acc[v] += x_q W[idx[q] n_out + j0 + v L ..] for q < m, v < K, in q order
 * (x_q = CONV(val[q], scale); the compiler contracts each to an FMA). */
#define FASTNN_ROW_SUMS(T, V, K, acc, W, n_out, j0, idx, val, m, CONV, scale)                 \
    for (ptrdiff_t q = 0; q < (m); q++) {                                                     \
        const T *w_ = (W) + (ptrdiff_t)(idx)[q] * (n_out) + (j0);                             \
        const V x_ = (V){0} + CONV((val)[q], (scale));                                        \
        for (int v_ = 0; v_ < (K); v_++) {                                                    \
            V wv_;                                                                            \
            memcpy(&wv_, w_ + v_ * (ptrdiff_t)(sizeof(V) / sizeof(T)), sizeof wv_);           \
            (acc)[v_] += x_ * wv_;                                                            \
        }                                                                                     \
    }

/* sparse_block: columns j0 .. j0 + K L of z = z_in + sum_q x_q W[idx[q]], K vectors V of L
 * lanes as sums in registers (an array of vectors, indexed by constants once unrolled). */
#define FASTNN_SPARSE_BLOCK(NAME, T, V, K, IT, VT, CONV)                                      \
static inline void NAME(const T *restrict W, ptrdiff_t n_out, ptrdiff_t j0, const IT *restrict idx, \
                        const VT *restrict val, ptrdiff_t m, T scale, const T *z_in, T *z) {  \
    const ptrdiff_t L = sizeof(V) / sizeof(T);                                                \
    V acc[K];                                                                                 \
    for (int v = 0; v < (K); v++) memcpy(&acc[v], z_in + j0 + v * L, sizeof(V));             \
    FASTNN_ROW_SUMS(T, V, K, acc, W, n_out, j0, idx, val, m, CONV, scale)                      \
    for (int v = 0; v < (K); v++) memcpy(z + j0 + v * L, &acc[v], sizeof(V));                \
}

/* sparse_update_block: layer 0's weight gradient for columns j0 .. j0 + K L, fused with its update:
 * g = sum_q val[q] G[idx[q]] (K vectors of sums from zero, in q order, in registers), never stored;
 * then sgd: p -= lr (g + wd p), or momentum: s = mu s + (g + wd p), p -= lr s, on p[j0 ..] and
 * s[j0 ..] (the same sums, contracted to FMAs as the update loop's are: fma(wd, p, g),
 * fma(mu, s, t), p - lr s as one fnmadd). */
#define FASTNN_SPARSE_UPDATE_BLOCK(NAME, T, V, K)                                             \
static inline void NAME(const T *restrict G, ptrdiff_t n_out, ptrdiff_t j0, const int32_t *restrict idx, \
                        const T *restrict val, ptrdiff_t m, T *restrict p, T *restrict s, T wd, T mu, T lr, \
                        int momentum) {                                                       \
    const ptrdiff_t L = sizeof(V) / sizeof(T);                                                \
    V acc[K];                                                                                 \
    for (int v = 0; v < (K); v++) acc[v] = (V){0};                                            \
    FASTNN_ROW_SUMS(T, V, K, acc, G, n_out, j0, idx, val, m, FASTNN_VALUE, 1)                  \
    for (int v = 0; v < (K); v++) {                                                           \
        V pv, sv;                                                                             \
        memcpy(&pv, p + j0 + v * L, sizeof pv);                                               \
        const V t = acc[v] + wd * pv;                                                         \
        if (momentum) {                                                                       \
            memcpy(&sv, s + j0 + v * L, sizeof sv);                                           \
            sv = mu * sv + t;                                                                 \
            memcpy(s + j0 + v * L, &sv, sizeof sv);                                           \
            pv -= lr * sv;                                                                    \
        } else {                                                                              \
            pv -= lr * t;                                                                     \
        }                                                                                     \
        memcpy(p + j0 + v * L, &pv, sizeof pv);                                               \
    }                                                                                         \
}

#if defined(__AVX512F__)
/* With AVX-512 (the -march=native build on such a CPU), the widest column blocks go 8 or 4
 * 64-byte vectors at a time: one pass over the non-zeros for 128 float outputs instead of two,
 * half the FMA instructions. The sums and their order are those of the 32-byte path. */
typedef float fastnn_v16sf __attribute__((vector_size(64)));
typedef double fastnn_v8df __attribute__((vector_size(64)));
#define FASTNN_WIDE_BLOCKS(NAME)                                                              \
    {                                                                                         \
        const ptrdiff_t LW = 64 / (ptrdiff_t)sizeof(*z);                                      \
        for (; j0 + 8 * LW <= n_out; j0 += 8 * LW) NAME##_wide8(W, ldw, j0, idx, val, m, scale, z_in, z); \
        if (j0 + 4 * LW <= n_out) { NAME##_wide4(W, ldw, j0, idx, val, m, scale, z_in, z); j0 += 4 * LW; } \
    }
#define FASTNN_WIDE_DEFS(NAME, T, VW, IT, VT, CONV)                                           \
    FASTNN_SPARSE_BLOCK(NAME##_wide8, T, VW, 8, IT, VT, CONV)                                 \
    FASTNN_SPARSE_BLOCK(NAME##_wide4, T, VW, 4, IT, VT, CONV)
#else
#define FASTNN_WIDE_BLOCKS(NAME)
#define FASTNN_WIDE_DEFS(NAME, T, VW, IT, VT, CONV)
#endif

#define FASTNN_SPARSE_ROW(NAME, T, V, VW, IT, VT, CONV)                                       \
FASTNN_WIDE_DEFS(NAME, T, VW, IT, VT, CONV)                                                   \
static inline V NAME##_load(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }          \
static inline void NAME##_strided(const T *restrict W, ptrdiff_t ldw, ptrdiff_t n_out,        \
                        const IT *restrict idx, const VT *restrict val, ptrdiff_t m, T scale,  \
                        const T *z_in, T *z) {                                                \
    const ptrdiff_t L = sizeof(V) / sizeof(T), BLOCK = 8 * L;                                 \
    ptrdiff_t j0 = 0;                                                                         \
    FASTNN_WIDE_BLOCKS(NAME)                                                                  \
    for (; j0 + BLOCK <= n_out; j0 += BLOCK) {                                                \
        V a0 = NAME##_load(z_in + j0), a1 = NAME##_load(z_in + j0 + L),                       \
          a2 = NAME##_load(z_in + j0 + 2 * L), a3 = NAME##_load(z_in + j0 + 3 * L),           \
          a4 = NAME##_load(z_in + j0 + 4 * L), a5 = NAME##_load(z_in + j0 + 5 * L),           \
          a6 = NAME##_load(z_in + j0 + 6 * L), a7 = NAME##_load(z_in + j0 + 7 * L);           \
        for (ptrdiff_t q = 0; q < m; q++) {                                                   \
            const T *w = W + (ptrdiff_t)idx[q] * ldw + j0;                                  \
            const V x = (V){0} + CONV(val[q], scale);                                                  \
            a0 += x * NAME##_load(w);         a1 += x * NAME##_load(w + L);                   \
            a2 += x * NAME##_load(w + 2 * L); a3 += x * NAME##_load(w + 3 * L);               \
            a4 += x * NAME##_load(w + 4 * L); a5 += x * NAME##_load(w + 5 * L);               \
            a6 += x * NAME##_load(w + 6 * L); a7 += x * NAME##_load(w + 7 * L);               \
        }                                                                                     \
        memcpy(z + j0, &a0, sizeof a0);         memcpy(z + j0 + L, &a1, sizeof a1);           \
        memcpy(z + j0 + 2 * L, &a2, sizeof a2); memcpy(z + j0 + 3 * L, &a3, sizeof a3);       \
        memcpy(z + j0 + 4 * L, &a4, sizeof a4); memcpy(z + j0 + 5 * L, &a5, sizeof a5);       \
        memcpy(z + j0 + 6 * L, &a6, sizeof a6); memcpy(z + j0 + 7 * L, &a7, sizeof a7);       \
    }                                                                                         \
    for (; j0 + L <= n_out; j0 += L) {                 /* one vector of columns at a time */   \
        V a0 = NAME##_load(z_in + j0);                                                        \
        for (ptrdiff_t q = 0; q < m; q++) {                                                   \
            const V x = (V){0} + CONV(val[q], scale);                                                  \
            a0 += x * NAME##_load(W + (ptrdiff_t)idx[q] * ldw + j0);                        \
        }                                                                                     \
        memcpy(z + j0, &a0, sizeof a0);                                                       \
    }                                                                                         \
    for (; j0 + 2 <= n_out; j0 += 2) {                 /* two scalar columns at a time */      \
        T t0 = z_in[j0], t1 = z_in[j0 + 1];                                                   \
        for (ptrdiff_t q = 0; q < m; q++) {                                                   \
            const T x = CONV(val[q], scale), *w = W + (ptrdiff_t)idx[q] * ldw + j0;                \
            t0 += x * w[0]; t1 += x * w[1];                                                   \
        }                                                                                     \
        z[j0] = t0; z[j0 + 1] = t1;                                                           \
    }                                                                                         \
    if (j0 < n_out) {                                                                         \
        T t0 = z_in[j0];                                                                      \
        for (ptrdiff_t q = 0; q < m; q++) t0 += CONV(val[q], scale) * W[(ptrdiff_t)idx[q] * ldw + j0];\
        z[j0] = t0;                                                                           \
    }                                                                                         \
}                                                                                             \
static inline void NAME(const T *restrict W, ptrdiff_t n_out, const IT *restrict idx,        \
                        const VT *restrict val, ptrdiff_t m, T scale, const T *z_in, T *z) {  \
    NAME##_strided(W, n_out, n_out, idx, val, m, scale, z_in, z);                             \
}

/* row_ascending(idx, n, size): whether idx[0..n) rise strictly and stay below size, the CSR row
 * property the training kernels' binary searches and W0 reads rely on. 16 adjacent pairs per
 * 32-byte compare, the last 16 pairs overlapping the loop's (a pair checked twice is harmless),
 * the lanes' results OR-ed and tested once at the end: a few cycles a row. */
typedef uint16_t fastnn_v16hu __attribute__((vector_size(32)));
static inline int row_ascending(const uint16_t *idx, ptrdiff_t n, ptrdiff_t size) {
    if (n <= 0) return 1;
    int bad = idx[n - 1] >= size;
    if (n <= 16) {
        for (ptrdiff_t q = 1; q < n; q++) bad |= idx[q] <= idx[q - 1];
        return !bad;
    }
    fastnn_v16hu any = {0}, cur, prev;
    for (ptrdiff_t q = 1; q + 16 <= n; q += 16) {
        memcpy(&cur, idx + q, sizeof cur);
        memcpy(&prev, idx + q - 1, sizeof prev);
        any |= (fastnn_v16hu)(cur <= prev);
    }
    memcpy(&cur, idx + n - 16, sizeof cur);               /* pairs (n - 17, n - 16) .. (n - 2, n - 1) */
    memcpy(&prev, idx + n - 17, sizeof prev);
    any |= (fastnn_v16hu)(cur <= prev);
    uint64_t words[4];
    memcpy(words, &any, sizeof words);
    return !(bad | ((words[0] | words[1] | words[2] | words[3]) != 0));
}

/* sparse_update_T(G, n_out, idx, val, m, p, s, wd, mu, lr, momentum) -> j_end: a layer-0 weight
 * gradient row (the CSC column's m entries: rows idx of G (rows, n_out), values val) fused with its
 * SGD or momentum update (sparse_update_block), for the leading columns that fill whole blocks:
 * 8 or 4 64-byte vectors with AVX-512, then 8 32-byte ones. Returns j_end: columns [0, j_end) are
 * done; the caller updates the rest (fewer than one block) through memory. The numba twin:
 * simd.py's sparse_update. */
#if defined(__AVX512F__)
#define FASTNN_UPDATE_WIDE(NAME, T, VW)                                                       \
    FASTNN_SPARSE_UPDATE_BLOCK(NAME##_wide8, T, VW, 8)                                        \
    FASTNN_SPARSE_UPDATE_BLOCK(NAME##_wide4, T, VW, 4)
#define FASTNN_UPDATE_WIDE_BLOCKS(NAME, T)                                                    \
    {                                                                                         \
        const ptrdiff_t LW = 64 / (ptrdiff_t)sizeof(T);                                       \
        for (; j0 + 8 * LW <= n_out; j0 += 8 * LW)                                            \
            NAME##_wide8(G, n_out, j0, idx, val, m, p, s, wd, mu, lr, momentum);              \
        if (j0 + 4 * LW <= n_out) {                                                           \
            NAME##_wide4(G, n_out, j0, idx, val, m, p, s, wd, mu, lr, momentum);              \
            j0 += 4 * LW;                                                                     \
        }                                                                                     \
    }
#else
#define FASTNN_UPDATE_WIDE(NAME, T, VW)
#define FASTNN_UPDATE_WIDE_BLOCKS(NAME, T)
#endif
#define FASTNN_SPARSE_UPDATE(NAME, T, V, VW)                                                  \
FASTNN_UPDATE_WIDE(NAME, T, VW)                                                               \
FASTNN_SPARSE_UPDATE_BLOCK(NAME##_block8, T, V, 8)                                            \
static inline ptrdiff_t NAME(const T *restrict G, ptrdiff_t n_out, const int32_t *restrict idx, \
                             const T *restrict val, ptrdiff_t m, T *restrict p, T *restrict s, T wd, T mu, \
                             T lr, int momentum) {                                            \
    const ptrdiff_t BLOCK = 8 * (ptrdiff_t)(sizeof(V) / sizeof(T));                           \
    ptrdiff_t j0 = 0;                                                                         \
    FASTNN_UPDATE_WIDE_BLOCKS(NAME, T)                                                        \
    for (; j0 + BLOCK <= n_out; j0 += BLOCK) NAME##_block8(G, n_out, j0, idx, val, m, p, s, wd, mu, lr, momentum); \
    return j0;                                                                                \
}

FASTNN_GATHER(gather_nonzeros_float, float)
FASTNN_GATHER(gather_nonzeros_double, double)
typedef int32_t fastnn_v8si __attribute__((vector_size(32)));
typedef int64_t fastnn_v4di __attribute__((vector_size(32)));
FASTNN_RELU_GATHER(relu_gather_float, float, uint32_t, fastnn_v8sf, fastnn_v8si)
FASTNN_RELU_GATHER(relu_gather_double, double, uint64_t, fastnn_v4df, fastnn_v4di)
#define FASTNN_VALUE(v, scale) (v)                               /* gathered float values */
#define FASTNN_PIXEL_FLOAT(v, scale) ((float)(v) * (scale))      /* uint8 pixels: x = pixel * (1/255) */
#define FASTNN_PIXEL_DOUBLE(v, scale) ((double)(v) * (scale))
FASTNN_SPARSE_ROW(sparse_row_float, float, fastnn_v8sf, fastnn_v16sf, int32_t, float, FASTNN_VALUE)
FASTNN_SPARSE_ROW(sparse_row_double, double, fastnn_v4df, fastnn_v8df, int32_t, double, FASTNN_VALUE)
FASTNN_SPARSE_ROW(sparse_pixels_float, float, fastnn_v8sf, fastnn_v16sf, uint16_t, uint8_t, FASTNN_PIXEL_FLOAT)
FASTNN_SPARSE_ROW(sparse_pixels_double, double, fastnn_v4df, fastnn_v8df, uint16_t, uint8_t, FASTNN_PIXEL_DOUBLE)
FASTNN_SPARSE_UPDATE(sparse_update_float, float, fastnn_v8sf, fastnn_v16sf)
FASTNN_SPARSE_UPDATE(sparse_update_double, double, fastnn_v4df, fastnn_v8df)

#endif
