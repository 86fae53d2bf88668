"""``python -m fastnn.benchmarks_report RESULTS.json``: figures from a saved pytest-benchmark run.

Arguments for one library call, ``fastnn.speed.report.write_report``: the module ``fastnn.speed.report`` says what
it does and writes; ``python -m fastnn.benchmarks_report --help`` lists the options.
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
