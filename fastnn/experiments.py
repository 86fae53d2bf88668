"""``python -m fastnn.experiments [NAME ...]``: named grids of training runs, in parallel.

Each experiment varies one thing and holds everything else at the trainer's defaults
(``fastnn.training.config.TrainConfig``) without augmentation or dropout (the plain recipe), over
several seeds per configuration:

==================  ==========================================================================
learning-rate       plain SGD, constant learning rate 0.001 / 0.01 / 0.1
depth               784-128-10 against 784-128-64-10
activation          sigmoid, tanh, ReLU
init                zeros, normal(0, 0.01^2), Xavier, He
optimizer           SGD (lr 0.1), SGD with momentum 0.9 (lr 0.05), Adam (lr 0.001)
regularization      none, L2 (1e-3), dropout (0.3), both; on a setting that overfits: the
                    first 2,000 training images and a 784-512-256-10 network, 40 epochs
batch-size          16, 32, 64, 128, 256, 512 (accuracy and wall time)
augmentation        none, random shifts by up to 1 / 2 / 3 pixels, horizontal flips, shifts of 1
                    and flips; 40 epochs (the recipes' length). The recipes in
                    ``fastnn.training.config.RECIPES`` are chosen on its validation accuracy
recipe              40 epochs plain, label smoothing 0.1 (with weight decay 5e-4, or 60
                    epochs), shifts of 2 pixels with and without label smoothing 0.1
backend             numpy, numba, cython, torch, and reference on the first 1,000 images for
                    1 epoch (labelled "reference (subset)")
==================  ==========================================================================

Every run appends a row to ``<results>/experiments.csv`` (experiment, dataset, configuration,
seed, backend, final train / validation / test accuracy and loss, epochs, wall time, git
commit, status); ``<results>/<experiment>.csv`` holds mean and std per configuration and
``<plots-dir>/<experiment>_<dataset>.png`` the figure (``--results`` defaults to
``runs/experiments``; the committed ones: ``--results results --plots-dir plots/experiments``). A failed run is
recorded with
its error and the others go on; configurations already in the CSV are skipped unless
``--force``. Runs go through joblib, one process per run with its BLAS / Numba / OpenMP
threads set so that ``--jobs`` x threads = the cores; ``--scheduler ADDRESS`` sends them to a
Dask cluster instead (``pip install -e ".[dask]"`` in the project folder).
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
    p.add_argument("--force", action="store_true", help="run configurations already in <results>/experiments.csv again")
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
                           force=args.force, markdown=args.markdown)

if __name__ == "__main__":
    sys.exit(main())
