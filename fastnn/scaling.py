"""``python -m fastnn.scaling``: how the cost of training grows with batch size, width and threads.

Arguments for one library call, ``fastnn.speed.scaling.write_scaling``: the module ``fastnn.speed.scaling`` says what
it does and writes; ``python -m fastnn.scaling --help`` lists the options.
"""
from __future__ import annotations

import argparse
import json
import sys

from fastnn.backends import backend_names, get_backend
from fastnn.common.cli import HelpFormatter, add_data_dir_option, int_at_least, run_main
from fastnn.speed.scaling import measure, write_scaling


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.scaling",
        description="Epoch time against batch size (16..1024) and hidden width (64..1024) per backend, with 1 and 2 "
                    "threads. Writes scaling_batch.png, scaling_width.png and scaling.csv into a new folder under "
                    "runs/ (the committed ones: --plots-dir plots --csv profiles/scaling.csv).",
        formatter_class=HelpFormatter)
    p.add_argument("--backends", nargs="+", default=["numpy", "numba", "cython", "torch"], choices=backend_names(),
                   help="backends to time")
    p.add_argument("--threads", nargs="+", type=int_at_least(1), default=[1, 2], help="thread counts to time")
    p.add_argument("--samples", type=int_at_least(64), default=12_800, help="MNIST images per timed pass")
    p.add_argument("--repeats", type=int_at_least(1), default=2, help="timed passes per point (the best is kept)")
    add_data_dir_option(p)
    p.add_argument("--plots-dir", default=None, help="where the two figures go (default: a new folder under runs/)")
    p.add_argument("--csv", default=None, help="the CSV of every point (default: scaling.csv in that folder)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        if args.worker not in backend_names():
            p.error(f"--worker {args.worker!r}: not a backend ({', '.join(backend_names())})")
        get_backend(args.worker)                          # BackendUnavailable: one line saying how to get it
        print(json.dumps(measure(args.worker, args.samples, args.repeats, args.data_dir)))
        return 0
    from fastnn.backends import available_backends

    missing = [b for b in args.backends if b not in available_backends()]
    if missing:
        p.error(f"backends unavailable here: {', '.join(missing)}")
    return write_scaling(args.backends, args.threads, args.samples, args.repeats, args.data_dir, args.plots_dir,
                         args.csv)

if __name__ == "__main__":
    sys.exit(main())
