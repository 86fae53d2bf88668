"""``python -m fastnn.benchmarks_report RESULTS.json``: figures from a saved pytest-benchmark run.

    OMP_NUM_THREADS=2 python -m pytest benchmarks --benchmark-only --benchmark-json=RESULTS.json
    OMP_NUM_THREADS=2 python -m fastnn.benchmarks_report RESULTS.json

writes, into ``--plots-dir`` (default ``<results>-plots`` beside the JSON; the committed ones:
``--plots-dir plots``), ``benchmark_kernels.png`` (median time per kernel and size, per backend,
log scale), ``benchmark_epoch.png`` (one MNIST epoch per trainer, as a ratio to torch and to
JAX) and ``roofline.png``: achieved GFLOP/s of each backend's matmuls and training
steps against this machine's ceilings, which the command measures itself (run it on the
machine that ran the benchmarks, with the same thread settings):

- arithmetic: fastnn's own FMA-throughput loop (``fastnn/backends/cython/fma_peak.h``: independent fused
  multiply-adds on the widest vectors the compiler targets) on every thread at once;
- practical sgemm: the best float32 GEMM rate (2048^3, best of 5) of every BLAS at hand:
  numpy's (OpenBLAS), torch's, JAX's (XLA) and ONNX Runtime's (MLAS), each named;
- memory: the best copy bandwidth of a 256 MB array (read + write bytes, best of 5).

One library alone is no ceiling: OpenBLAS may not recognise a new CPU and run older kernels
(``fastnn.speed.machine.blas_kernel_mismatch``); ``--coretypes`` also times numpy's sgemm under
each ``OPENBLAS_CORETYPE`` worth trying on this CPU, in fresh processes.

A point's arithmetic intensity is its FLOP count over the bytes it must at least move
(inputs and outputs once, float32); for a training step, the parameters five times (read
forward, read backward, gradient write, optimizer read + write) and the activations three.
It also prints the numbers behind the figures.
"""
from __future__ import annotations

import argparse
import sys

from fastnn.common.cli import HelpFormatter, run_main
from fastnn.speed.report import write_report


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.benchmarks_report",
        description="Turn a pytest-benchmark JSON (pytest benchmarks --benchmark-only --benchmark-json=FILE) into "
                    "benchmark_kernels.png, benchmark_epoch.png and roofline.png (--plots-dir); measures this "
                    "machine's FMA limit, the best sgemm of the BLAS libraries at hand and the memory bandwidth "
                    "for the roofline.",
        formatter_class=HelpFormatter)
    p.add_argument("results", help="the JSON file pytest-benchmark wrote")
    p.add_argument("--plots-dir", default=None,
                   help="where the three figures go (default: a folder <results>-plots beside the JSON file; "
                        "the committed ones: --plots-dir plots)")
    p.add_argument("--coretypes", action="store_true",
                   help="also time numpy's sgemm under each OPENBLAS_CORETYPE worth trying on this CPU "
                        "(fresh processes; about 20 s)")
    args = p.parse_args(argv)
    return write_report(args.results, args.plots_dir, coretypes=args.coretypes)


if __name__ == "__main__":
    sys.exit(main())
