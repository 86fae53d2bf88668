"""``python -m fastnn.evaluate --model PATH``: how good a trained model is, where it fails, what it learned.

Arguments for one library call, ``fastnn.evaluation.report.run`` (``fastnn.evaluation.robustness.run_corruptions``
with ``--corruptions``, ``fastnn.evaluation.numbers.run_numbers`` with ``--numbers``): those modules say what they
do and write; ``python -m fastnn.evaluate --help`` lists
the options.
"""
from __future__ import annotations

import argparse
import sys

from fastnn.backends import backend_names
from fastnn.common.cli import HelpFormatter, add_backend_option, add_data_dir_option, run_main
from fastnn.common.errors import UserError
from fastnn.data.corruptions import CORRUPTIONS, SEVERITIES
from fastnn.data.datasets import DATASETS
from fastnn.evaluation.numbers import run_numbers
from fastnn.evaluation.report import run
from fastnn.evaluation.robustness import run_corruptions


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
    c = p.add_argument_group("robustness (--corruptions; needs scikit-image: pip install -e \".[robust]\")")
    c.add_argument("--corruptions", action="store_true",
                   help="instead of the evaluation above: accuracy on the test set under MNIST-C-style corruptions "
                        "(noise, blur, affine, brightness, contrast, stripes, fog, spatter, lines, edges) at "
                        "several severities, beside a torch-trained baseline; writes corruptions.json/.md and "
                        "two figures")
    c.add_argument("--corruption", nargs="+", default=None, metavar="KIND", choices=list(CORRUPTIONS),
                   help=f"only these kinds (default: all): {', '.join(CORRUPTIONS)}")
    c.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES), choices=list(SEVERITIES),
                   help="severity levels, 1 mild to 3 strong")
    c.add_argument("--held-out", nargs="+", default=None, metavar="KIND", choices=list(CORRUPTIONS),
                   help="kinds a robust model did not train on, summarized apart")
    c.add_argument("--baseline", nargs="*", default=None, metavar="MODEL",
                   help="model files to evaluate side by side (default: the shipped torch-trained baseline of "
                        "the dataset; no files: none)")
    c.add_argument("--corruption-seed", type=int, default=0, help="seed of the corruptions' random draws")
    c.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N test images (with --numbers: N numbers per set, default 1000)")
    p.add_argument("--numbers", action="store_true",
                   help="instead of the evaluation above: read multi-digit numbers (composed from MNIST test "
                        "digits, and drawn in fonts) with --model (default: MNIST's number reader, the pretrained "
                        "'numbers' variant); writes numbers.json/.md and a figure")
    args = p.parse_args(argv)
    if args.numbers:
        if args.corruptions or args.data is not None or args.dataset not in (None, "mnist"):
            raise UserError("--numbers reads numbers made of MNIST digits; drop --corruptions, --data and --dataset")
        run_numbers(args.model, args.out, args.data_dir, args.backend, overwrite=args.overwrite,
                    n=1000 if args.limit is None else args.limit)
        return 0
    if args.corruptions:
        if args.data is not None:
            raise UserError("--corruptions runs on the MNIST-style test sets; drop --data")
        run_corruptions(args.model, args.dataset, args.out, args.data_dir, args.backend, overwrite=args.overwrite,
                        kinds=args.corruption, severities=tuple(sorted(set(args.severities))),
                        seed=args.corruption_seed, baselines=args.baseline, held_out=args.held_out,
                        limit=args.limit)
        return 0
    for name in ("corruption", "held_out", "baseline", "limit"):
        if getattr(args, name) is not None:
            raise UserError(f"--{name.replace('_', '-')} belongs to --corruptions; add --corruptions")
    run(args.model, args.dataset, args.out, args.data_dir, args.backend, overwrite=args.overwrite, data=args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
