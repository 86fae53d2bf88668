"""``python -m fastnn.experiments [NAME ...]``: named grids of training runs, in parallel.

Arguments for one library call, ``fastnn.training.sweeps.run_experiments``: the module
``fastnn.training.sweeps`` says what it does and writes; ``python -m fastnn.experiments --help`` lists the options.
"""
from __future__ import annotations

import argparse
import sys

from fastnn.backends import backend_names
from fastnn.common.cli import HelpFormatter, add_backend_option, add_data_dir_option, int_at_least
from fastnn.training.sweeps import (
    EXPERIMENTS,
    os,
    run_experiments,
)


def main(argv=None) -> int:
    from fastnn.common.cli import run_main

    return run_main(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.experiments",
        description="Run named experiments (grids of training runs, several seeds each) in parallel; append rows to "
                    "<results>/experiments.csv, write <results>/<experiment>.csv summaries and the figures.",
        formatter_class=HelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"experiments to run (default all): {', '.join(EXPERIMENTS)}")
    p.add_argument("--dataset", nargs="+", default=["mnist"], choices=["mnist", "fashion-mnist"])
    p.add_argument("--epochs", type=int_at_least(1), default=10, help="epochs per run (an experiment may fix its own)")
    p.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds per configuration")
    add_backend_option(p, "backend for every experiment but 'backend'", backend_names())
    p.add_argument("--jobs", type=int_at_least(1), default=os.cpu_count() or 1, help="runs at a time")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a Dask scheduler (tcp://host:port) to run on")
    add_data_dir_option(p)
    p.add_argument("--results", default="runs/experiments",
                   help="folder for the CSV files and run folders (reused: runs already recorded there are skipped; "
                        "the committed ones: --results results --plots-dir plots/experiments)")
    p.add_argument("--plots-dir", default=None, help="where the figures go (default: <results>/plots)")
    p.add_argument("--limit", type=int_at_least(10), default=None, metavar="N",
                   help="first N training images for every run (quick sweeps; an experiment may fix its own)")
    p.add_argument("--test-limit", type=int_at_least(10), default=None, metavar="N",
                   help="first N test images for every run's test accuracy and the robustness experiment's "
                        "corruption scores (quick sweeps; default: all)")
    p.add_argument("--force", action="store_true", help="run configurations already in <results>/experiments.csv again")
    p.add_argument("--smoke", action="store_true",
                   help="cut every run down to --epochs epochs and --limit/--test-limit images even where an "
                        "experiment fixes more (weight averaging from the last epoch): checks in seconds that every "
                        "configuration runs; its numbers mean nothing")
    p.add_argument("--markdown", action="store_true",
                   help="run nothing: print the summaries in --results as Markdown tables (for REPORT.md)")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    if args.jobs < 1 or args.seeds < 1 or args.epochs < 1:
        p.error("--jobs, --seeds and --epochs must be >= 1")
    return run_experiments(args.names or list(EXPERIMENTS), datasets=args.dataset, seeds=args.seeds,
                           epochs=args.epochs, backend=args.backend, jobs=args.jobs, scheduler=args.scheduler,
                           data_dir=args.data_dir, results=args.results, plots_dir=args.plots_dir, limit=args.limit,
                           test_limit=args.test_limit, force=args.force, markdown=args.markdown, smoke=args.smoke)

if __name__ == "__main__":
    sys.exit(main())
