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
from pathlib import Path

from fastnn.backends import omp_threads
from fastnn.common.cli import HelpFormatter, run_main
from fastnn.common.errors import UserError
from fastnn.speed.machine import measure_bandwidth_gbs, measure_coretypes, measure_fma_peak, measure_sgemm_peaks
from fastnn.speed.report import inference_table, load_results, plot_epoch, plot_kernels, plot_roofline


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
    try:
        rows = load_results(args.results)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = Path(args.plots_dir) if args.plots_dir else Path(args.results).with_name(Path(args.results).stem + "-plots")
    from fastnn.speed.machine import blas_kernel_mismatch, summary_lines

    print("\n".join(summary_lines()))
    print("\nmeasuring this machine's ceilings ...")
    threads = omp_threads()
    fma = measure_fma_peak(threads)
    sgemm = measure_sgemm_peaks()
    bandwidth = measure_bandwidth_gbs()
    if fma:
        print(f"arithmetic limit (fastnn's FMA loop, fastnn/backends/cython/fma_peak.h, {threads} threads, best of 5): "
              f"{fma:.1f} GFLOP/s")
    for lib, gflops in sorted(sgemm.items(), key=lambda kv: -kv[1]):
        print(f"sgemm 2048^3 float32, best of 5, {lib}: {gflops:.1f} GFLOP/s")
    print(f"memory bandwidth (256 MB copy, best of 5): {bandwidth:.1f} GB/s")
    if args.coretypes:
        print("\nnumpy's sgemm under each OPENBLAS_CORETYPE (fresh processes):")
        for coretype, arch, big, small in measure_coretypes():
            print(f"  {coretype:<12s} kernels {arch:<12s} 2048^3 {big:7.1f} GFLOP/s   "
                  f"64x128 @ 128x64 {small:6.1f} GFLOP/s")
    mismatch = blas_kernel_mismatch()
    if mismatch:
        print(f"\nnote: {mismatch}")
    best_lib, best = max(sgemm.items(), key=lambda kv: kv[1])
    ceilings = {}
    if fma:
        ceilings[f"FMA limit (fastnn's loop, {threads} threads)"] = fma
    ceilings[f"best sgemm ({best_lib})"] = best
    plot_kernels(rows, out / "benchmark_kernels.png")
    written = [out / "benchmark_kernels.png"]
    try:
        table = plot_epoch(rows, out / "benchmark_epoch.png")
        written.append(out / "benchmark_epoch.png")
        print("\none MNIST epoch (median):")
    except ValueError as exc:                           # only some benchmarks ran: plot what is there
        table = []
        print(f"\nnote: {exc}: no epoch figure")
    for name, median, ratio, to_jax in table:
        print(f"  {name:>14s}  {median:8.3f} s  {ratio:5.2f} x torch"
              + (f"  {to_jax:5.2f} x jax-scan" if to_jax else ""))
    inference = inference_table(rows)
    if inference:
        print("\ninference (batch-1 p50 of predict; throughput: best pass over the 10,000 test images):")
        for name, p50, ips, lat_ratio, thr_ratio in inference:
            print(f"  {name:>12s}  p50 {1e6 * p50:7.1f} us" if p50 else f"  {name:>12s}  p50       -  ", end="")
            print(f"  {ips:11,.0f} images/s" if ips else "", end="")
            print(f"  p50 {lat_ratio:.2f} x onnxruntime" if lat_ratio and name != "onnxruntime" else "", end="")
            print(f"  throughput {thr_ratio:.2f} x onnxruntime" if thr_ratio and name != "onnxruntime" else "")
    points = plot_roofline(rows, ceilings, bandwidth, out / "roofline.png")
    print(f"\nroofline points (GFLOP/s; share of the best sgemm, {best:.0f} GFLOP/s"
          + (f", and of the FMA limit, {fma:.0f}" if fma else "") + "):")
    for what, backend, ai, gflops in sorted(points, key=lambda p: (p[0], p[1])):
        print(f"  {what:<42s} {backend:>14s}  AI {ai:7.2f}  {gflops:8.2f} GFLOP/s  {100 * gflops / best:5.1f}%"
              + (f"  {100 * gflops / fma:5.1f}%" if fma else ""))
    written.append(out / "roofline.png")
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
