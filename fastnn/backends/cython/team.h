/* The fused training step's threads as one OpenMP team for a whole call (fused_step.pyx).
 * fastnn_team_size(): threads in the current team (1 outside a parallel region, or without OpenMP);
 * fastnn_team_barrier(): every thread of the team waits for the others (OpenMP's orphaned barrier;
 * nothing without OpenMP). A parallel region per phase of a step cost a fork and a join each
 * (~2 us on the 2-core VM of REPORT.md, two per step); a barrier between phases costs less.
 * fastnn_denormals_off(): this thread's SSE/AVX arithmetic flushes subnormal results to zero and
 * reads subnormal operands as zero (MXCSR's FTZ and DAZ bits, as XLA's CPU threads run), returning
 * the mode before for fastnn_fp_mode_restore(). Momentum's velocity of a pixel no sample has decays
 * 0.9x a step into the subnormals, and Intel cores take a microcode assist (~100+ cycles) for each
 * subnormal operation: 1.9-2.1x the MNIST epoch on a Xeon (REPORT.md). A no-op off x86. */
#ifndef FASTNN_TEAM_H
#define FASTNN_TEAM_H
#ifdef _OPENMP
#include <omp.h>
static inline int fastnn_team_size(void) { return omp_get_num_threads(); }
static inline void fastnn_team_barrier(void) { _Pragma("omp barrier") }
#else
static inline int fastnn_team_size(void) { return 1; }
static inline void fastnn_team_barrier(void) {}
#endif

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#include <xmmintrin.h>
#define FASTNN_MXCSR_FTZ_DAZ 0x8040u              /* bit 15 flush-to-zero, bit 6 denormals-are-zero */
static inline unsigned int fastnn_denormals_off(void) {
    unsigned int mode = _mm_getcsr();
    _mm_setcsr(mode | FASTNN_MXCSR_FTZ_DAZ);
    return mode;
}
static inline void fastnn_fp_mode_restore(unsigned int mode) { _mm_setcsr(mode); }
#else
static inline unsigned int fastnn_denormals_off(void) { return 0; }
static inline void fastnn_fp_mode_restore(unsigned int mode) { (void)mode; }
#endif
#endif
