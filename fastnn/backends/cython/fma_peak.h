/* The arithmetic ceiling of this CPU: a loop of independent fused multiply-adds on the widest
 * vector registers the compiler targets (-march=native): 64-byte vectors where AVX-512 is
 * available, else 32-byte (AVX2), else 16-byte.
 *
 * FASTNN_FMA_CHAINS accumulators are updated every iteration, acc_i = acc_i * a + b: the chains
 * are independent, so with at least (FMA latency x FMA units) of them (4 cycles x 2 units on
 * Zen 3 and Skylake-X) the FMA units never wait; 12 chains fit the 16 AVX2 registers with room
 * for a and b. Returns the sum of the accumulators so the compiler cannot drop the loop.
 * FLOPs done: iterations * FASTNN_FMA_CHAINS * lanes * 2 (lanes = fastnn_fma_lanes()).
 */
#ifndef FASTNN_FMA_PEAK_H
#define FASTNN_FMA_PEAK_H
#include <stddef.h>

#if defined(__AVX512F__)
#define FASTNN_VEC_BYTES 64
#elif defined(__AVX__)
#define FASTNN_VEC_BYTES 32
#else
#define FASTNN_VEC_BYTES 16
#endif
#define FASTNN_FMA_CHAINS 12

typedef float fastnn_vf __attribute__((vector_size(FASTNN_VEC_BYTES)));

static inline int fastnn_fma_lanes(void) { return FASTNN_VEC_BYTES / 4; }

static inline int fastnn_fma_chains(void) { return FASTNN_FMA_CHAINS; }

static float fastnn_fma_loop(long iterations, float a_scalar, float b_scalar) {
    fastnn_vf a, b, acc[FASTNN_FMA_CHAINS];
    for (int l = 0; l < FASTNN_VEC_BYTES / 4; l++) { a[l] = a_scalar; b[l] = b_scalar; }
    for (int c = 0; c < FASTNN_FMA_CHAINS; c++) acc[c] = b * (float)(c + 1);
    for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 12
        for (int c = 0; c < FASTNN_FMA_CHAINS; c++) acc[c] = acc[c] * a + b;
    }
    float total = 0;
    for (int c = 0; c < FASTNN_FMA_CHAINS; c++)
        for (int l = 0; l < FASTNN_VEC_BYTES / 4; l++) total += acc[c][l];
    return total;
}

#endif
