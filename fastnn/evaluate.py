"""``python -m fastnn.evaluate --model PATH``: how good a trained model is, where it fails, what it learned.

Arguments for one library call, ``fastnn.evaluation.report.run``: the module ``fastnn.evaluation.report`` says what
it does and writes; ``python -m fastnn.evaluate --help`` lists the options.
"""
from __future__ import annotations

import argparse
import sys

from fastnn.backends import backend_names
from fastnn.common.cli import HelpFormatter, add_backend_option, add_data_dir_option, run_main
from fastnn.data.datasets import DATASETS
from fastnn.evaluation.report import run


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.evaluate",
        description="Evaluate a trained model on the test set: accuracy, per-class precision/recall/F1, confusion "
                    "matrix, calibration, dead units; writes evaluation.json and figures into --out.",
        formatter_class=HelpFormatter)
    p.add_argument("--model", default=None,
                   help="a best_model.npz written by python -m fastnn.train (default: the pretrained model of "
                        "--dataset that ships with fastnn)")
    p.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="the test set (default: the one the model file records, else mnist)")
    p.add_argument("--data", default=None, metavar="FOLDER",
                   help="evaluate on the test split of an image folder instead (FOLDER/test/<class>/, or the "
                        "stratified split train --data made of FOLDER/<class>/)")
    p.add_argument("--out", default=None,
                   help="output folder, new or empty (default: evaluation-<dataset> beside the model; for the "
                        "pretrained model a new folder under runs/)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its files")
    add_data_dir_option(p)
    add_backend_option(p, "kernels for inference (cython and numba: one compiled call per forward pass)",
                       backend_names())
    args = p.parse_args(argv)
    run(args.model, args.dataset, args.out, args.data_dir, args.backend, overwrite=args.overwrite, data=args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
