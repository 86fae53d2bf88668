/* The Cython backend's packed GEMM: C = alpha op(A) op(B) + beta C, row-major, no BLAS.
 * Algorithm: Goto and van de Geijn, "Anatomy of High-Performance Matrix Multiplication" (ACM TOMS
 * 2008), in the loop order of BLIS (Van Zee and van de Geijn, ACM TOMS 2015): pack a KC x NC
 * block of B and an MC x KC block of A into contiguous panels, then a register-blocked
 * micro-kernel multiplies an MR-row panel of A by an NR-column panel of B, MR x NR sums in
 * vector registers for the whole depth KC.
 *
 * fastnn_sgemm / fastnn_dgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
 * threads); shapes: op(A) (m, k), op(B) (k, n), C (m, n); lda, ldb, ldc are row strides in
 * elements. fastnn_sgemm_strided / _dgemm_strided take one more stride, cs, between C's columns
 * (ldc = 1, cs = m writes C transposed: the fused backward computes G_in^T = W G^T, so that W is
 * packed along its contiguous rows). The caller checks them: nothing here does. threads == 1 runs on the calling thread (the fused training step calls it
 * so, from inside its own OpenMP threads); threads > 1 opens an OpenMP parallel region.
 *
 * Micro-kernels, chosen once at run time by what the CPU reports (__builtin_cpu_supports):
 *   AVX-512: float 8 x 32 (2 zmm per row, 16 accumulators), double 8 x 16;
 *   AVX2:    float 6 x 16 (2 ymm per row, 12 accumulators), double 6 x 8;
 *   else:    16-byte vectors (SSE2 / NEON), 4 x 8 float, 4 x 4 double;
 * and for a B of at most one vector of columns (the output layer's 10), the same rows by one
 * vector (8 x 16 float on AVX-512), half the padded work of the two-vector tile.
 * fastnn_gemm_isa() names the one in use; FASTNN_GEMM_ISA=avx2|generic in the environment
 * picks a narrower one (for testing the other paths on an AVX-512 machine).
 * Sums run in depth order per output, contracted to FMA where the CPU has it (like BLAS, the
 * last bits differ from a plain loop). Packing buffers: one per thread, kept for the thread's
 * life and grown when a call needs more (never freed: a few MB); without memory for one, the
 * call runs a plain loop instead (slow, same sums). Before fastnn_gemm_init() runs, likewise.
 */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define FASTNN_GEMM_X86 1
#else
#define FASTNN_GEMM_X86 0
#endif

typedef struct {
    int mr, nr;                 /* micro-tile: rows of A, columns of B */
    ptrdiff_t mc, kc, nc;       /* cache blocks: A block MC x KC (L2), B block KC x NC, panel KC x NR (L1) */
    void *kernel;               /* the micro-kernel */
    const char *isa;
    int nr1;                    /* the narrow micro-kernel's columns (one vector): B of at most nr1 columns */
    void *kernel1;              /* the narrow micro-kernel (MR x one vector) */
} fastnn_gemm_shape;

static fastnn_gemm_shape fastnn_sgemm_shape, fastnn_dgemm_shape;

static __thread void *fastnn_gemm_buf = NULL;
static __thread size_t fastnn_gemm_buf_size = 0;

/* This thread's packing buffer, at least `bytes` long and 64-byte aligned (NULL if out of memory). */
static void *fastnn_gemm_buffer(size_t bytes) {
    if (bytes > fastnn_gemm_buf_size) {
        void *fresh = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (fresh == NULL)
            return NULL;
        free(fastnn_gemm_buf);
        fastnn_gemm_buf = fresh;
        fastnn_gemm_buf_size = bytes;
    }
    return fastnn_gemm_buf;
}

#define FASTNN_MR_AVX512 8
#define FASTNN_NV_AVX512 2
#define FASTNN_MR_AVX2 6
#define FASTNN_NV_AVX2 2
#define FASTNN_MR_GENERIC 4
#define FASTNN_NV_GENERIC 2

#define FASTNN_T float
#define FASTNN_S s
#define FASTNN_T_IS_FLOAT 1
#include "gemm_impl.h"
#undef FASTNN_T
#undef FASTNN_S
#undef FASTNN_T_IS_FLOAT
#define FASTNN_T double
#define FASTNN_S d
#define FASTNN_T_IS_FLOAT 0
#include "gemm_impl.h"
#undef FASTNN_T
#undef FASTNN_S
#undef FASTNN_T_IS_FLOAT

/* Choose the micro-kernels for this CPU (idempotent; call once before any gemm). */
static void fastnn_gemm_init(void) {
    const char *want = getenv("FASTNN_GEMM_ISA");
    int avx512 = 0, avx2 = 0;
#if FASTNN_GEMM_X86
    __builtin_cpu_init();
    avx512 = __builtin_cpu_supports("avx512f") && (want == NULL || strcmp(want, "avx512") == 0);
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
           && (want == NULL || strcmp(want, "avx512") == 0 || strcmp(want, "avx2") == 0);
    if (avx512) {
        fastnn_sgemm_shape = (fastnn_gemm_shape){FASTNN_MR_AVX512, FASTNN_NV_AVX512 * 16, 128, 1024, 2048,
                                                 (void *)fastnn_suk_avx512, "avx512", 16, (void *)fastnn_suk1_avx512};
        fastnn_dgemm_shape = (fastnn_gemm_shape){FASTNN_MR_AVX512, FASTNN_NV_AVX512 * 8, 128, 512, 2048,
                                                 (void *)fastnn_duk_avx512, "avx512", 8, (void *)fastnn_duk1_avx512};
        return;
    }
    if (avx2) {
        /* MC = 144 (a multiple of MR = 6, as BLIS's Zen configuration): at least the seed network's 128
         * hidden units, so its weight gradients (m = 128) stay one block read in place; MC = 120
         * packed them in two blocks, 2.3x slower (REPORT.md, "AVX2's row block") */
        fastnn_sgemm_shape = (fastnn_gemm_shape){FASTNN_MR_AVX2, FASTNN_NV_AVX2 * 8, 144, 512, 2048,
                                                 (void *)fastnn_suk_avx2, "avx2", 8, (void *)fastnn_suk1_avx2};
        fastnn_dgemm_shape = (fastnn_gemm_shape){FASTNN_MR_AVX2, FASTNN_NV_AVX2 * 4, 144, 256, 2048,
                                                 (void *)fastnn_duk_avx2, "avx2", 4, (void *)fastnn_duk1_avx2};
        return;
    }
#endif
    (void)want; (void)avx512; (void)avx2;
    fastnn_sgemm_shape = (fastnn_gemm_shape){FASTNN_MR_GENERIC, FASTNN_NV_GENERIC * 4, 64, 256, 1024,
                                             (void *)fastnn_suk_generic, "generic", 4, (void *)fastnn_suk1_generic};
    fastnn_dgemm_shape = (fastnn_gemm_shape){FASTNN_MR_GENERIC, FASTNN_NV_GENERIC * 2, 64, 128, 1024,
                                             (void *)fastnn_duk_generic, "generic", 2, (void *)fastnn_duk1_generic};
}

static const char *fastnn_gemm_isa(void) { return fastnn_sgemm_shape.isa; }

#endif
