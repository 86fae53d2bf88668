"""``python -m fastnn.profile --backend NAME``: where one epoch of training spends its time.

Arguments for one library call, ``fastnn.speed.profiling.profile``: the module ``fastnn.speed.profiling`` says what
it does and writes; ``python -m fastnn.profile --help`` lists the options.
"""
from __future__ import annotations

import argparse
import os
import sys

from fastnn.backends import backend_names, get_backend
from fastnn.common.cli import (
    HelpFormatter,
    add_backend_option,
    add_data_dir_option,
    int_at_least,
    new_run_folder,
    run_main,
)
from fastnn.data.datasets import DATASETS
from fastnn.speed.profiling import REFERENCE_DEFAULT_LIMIT, profile


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.profile",
        description="Profile one epoch of training with a backend: time by phase (data, forward, loss, backward, "
                    "optimizer, Python overhead) and by kernel, plus cProfile's top functions. Writes "
                    "<backend>.txt, <backend>.prof and profile_<backend>.png into a new folder under runs/ "
                    "(the committed ones: --out-dir profiles --plots-dir plots).",
        formatter_class=HelpFormatter)
    add_backend_option(p, "the backend to profile", backend_names())
    p.add_argument("--dataset", default="mnist", choices=list(DATASETS), help="the training set")
    p.add_argument("--epochs", type=int_at_least(1), default=1, help="epochs to time")
    p.add_argument("--limit", type=int_at_least(1), default=None, metavar="N",
                   help=f"first N training samples (default all; {REFERENCE_DEFAULT_LIMIT} for reference)")
    p.add_argument("--batch-size", type=int_at_least(1), default=64, help="samples per step")
    p.add_argument("--hidden", type=int_at_least(1), nargs="+", default=[128, 64], metavar="H",
                   help="hidden layer sizes (e.g. --hidden 1024 512 for the shape grid's widest network)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seeds the weights and the batch order")
    add_data_dir_option(p)
    p.add_argument("--out-dir", default=None,
                   help="where the .txt and .prof files go (default: a new folder runs/<time>-profile-<backend>)")
    p.add_argument("--plots-dir", default=None, help="where the phase chart goes (default: --out-dir)")
    return p


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    from fastnn.inference.forward import inference_backend

    args.backend = inference_backend(args.backend)
    get_backend(args.backend)
    args.out_dir = args.out_dir or str(new_run_folder(f"profile-{args.backend}"))
    args.plots_dir = args.plots_dir or args.out_dir
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "FASTNN_DATA_DIR")
                   if k in os.environ)
    args_text = " ".join(sys.argv[1:] if argv is None else argv)
    command = (env + " " if env else "") + "python -m fastnn.profile " + args_text
    profile(args.backend, args.dataset, args.epochs, args.limit, args.batch_size, args.data_dir, args.out_dir,
            args.plots_dir, args.seed, command=command, hidden=args.hidden)
    return 0


if __name__ == "__main__":
    sys.exit(main())
