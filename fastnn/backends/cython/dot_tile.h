/* The register tile of the Cython backend's matmul (fastnn/backends/cython/*.pyx, matmul_dot).
 *
 * c[0..3] = a0 . b0..b3 and c[4..7] = a1 . b0..b3 over k: 8 dot products at once, each
 * step loading 2 values of a and 4 of b for 8 multiply-adds. `omp simd reduction` lets the
 * compiler keep the 8 sums in vector registers (lane-wise partial sums, added at the end)
 * without -ffast-math; it is honoured with -fopenmp or -fopenmp-simd and ignored otherwise
 * (then the loop runs scalar, still correct). NaN and inf propagate as usual.
 */
#ifndef FASTNN_DOT_TILE_H
#define FASTNN_DOT_TILE_H
#include <stddef.h>

#define FASTNN_DOT_TILE(NAME, T)                                                              \
static inline void NAME(const T *a0, const T *a1, const T *b0, const T *b1, const T *b2,      \
                        const T *b3, ptrdiff_t k, T *c) {                                     \
    T c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;                 \
    _Pragma("omp simd reduction(+:c00,c01,c02,c03,c10,c11,c12,c13)")                          \
    for (ptrdiff_t p = 0; p < k; p++) {                                                       \
        T x0 = a0[p], x1 = a1[p];                                                             \
        c00 += x0 * b0[p]; c01 += x0 * b1[p]; c02 += x0 * b2[p]; c03 += x0 * b3[p];           \
        c10 += x1 * b0[p]; c11 += x1 * b1[p]; c12 += x1 * b2[p]; c13 += x1 * b3[p];           \
    }                                                                                         \
    c[0] = c00; c[1] = c01; c[2] = c02; c[3] = c03;                                           \
    c[4] = c10; c[5] = c11; c[6] = c12; c[7] = c13;                                           \
}

FASTNN_DOT_TILE(dot_tile_2x4_float, float)
FASTNN_DOT_TILE(dot_tile_2x4_double, double)

#endif
