/* The fused training step's threads as one OpenMP team for a whole call (fused_step.pyx).
 * fastnn_team_size(): threads in the current team (1 outside a parallel region, or without OpenMP);
 * fastnn_team_barrier(): every thread of the team waits for the others (OpenMP's orphaned barrier;
 * nothing without OpenMP). A parallel region per phase of a step cost a fork and a join each
 * (~2 us on the 2-core VM of REPORT.md, two per step); a barrier between phases costs less. */
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
#endif
