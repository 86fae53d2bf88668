"""``python -m fastnn.train``: train the MLP on MNIST, Fashion-MNIST or a folder of images with
any backend: the options, checked, and one call of ``fastnn.training.loop.train``.

Writes into ``--out`` (default ``runs/<time>-<dataset>-<backend>``): ``best_model.npz``,
``history.csv``, ``learning_curves.png`` and ``metrics.json`` (``fastnn.training.loop``). The last
line printed gives the test accuracy. Ctrl-C stops training, keeps the best model so far and
still writes everything.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fastnn.backends import backend_names, get_backend
from fastnn.common.cli import (
    HelpFormatter,
    add_backend_option,
    add_data_dir_option,
    finite_float,
    int_at_least,
    printable,
    run_main,
)
from fastnn.common.errors import UserError
from fastnn.data.augment import AUGMENT_HELP, parse_augment
from fastnn.data.datasets import DATASETS
from fastnn.data.distort import DISTORT_HELP, parse_distortions
from fastnn.data.normalize import INPUT_NORMS
from fastnn.model.initializers import INITIALIZERS
from fastnn.model.network import ACTIVATIONS
from fastnn.training.config import LR_SCHEDULES, RECIPES, TrainConfig
from fastnn.training.loop import train
from fastnn.training.optim import OPTIMIZERS


def per_dataset(key: str) -> str:
    """'mnist X, fashion-mnist Y': a recipe setting's default per dataset, for --help."""
    return ", ".join(f"{name} {recipe[key]}" for name, recipe in RECIPES.items())


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m fastnn.train",
        description="Train the fastnn MLP (default 784-128-64-10, ReLU, softmax cross-entropy) on MNIST or "
                    "Fashion-MNIST. Writes best_model.npz, history.csv, learning_curves.png and metrics.json "
                    "into --out. Ctrl-C (or SIGTERM) stops early, keeps the best model and writes every file.",
        formatter_class=HelpFormatter)
    add_backend_option(p, "kernel implementation", backend_names())
    p.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="downloaded on first use (default: mnist)")
    p.add_argument("--data", default=None, metavar="FOLDER",
                   help="train on a folder of images instead: FOLDER/<class>/*.png (a stratified 20%% test split is "
                        "made), or FOLDER/train/<class>/ and FOLDER/test/<class>/; class names are the folder names")
    p.add_argument("--epochs", type=int_at_least(1), default=None,
                   help="passes over the training split (default: " + per_dataset("epochs") + ")")
    p.add_argument("--batch-size", type=int_at_least(1), default=d.batch_size, help="samples per SGD step")
    p.add_argument("--lr", type=finite_float(0, low_open=True), default=d.lr, help="learning rate (> 0)")
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS,
                   help="sgd, momentum (SGD with --momentum) or adam (use --lr 0.001)")
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=LR_SCHEDULES,
                   help="learning rate per epoch: constant, cosine decay to 0, or step (/10 at 50%% and 75%%)")
    p.add_argument("--momentum", type=finite_float(0, 1, high_open=True), default=None,
                   help=f"momentum in [0, 1) for --optimizer momentum (default {d.momentum})")
    p.add_argument("--hidden", type=int_at_least(1), nargs="+", default=d.hidden, metavar="H",
                   help="hidden layer sizes")
    p.add_argument("--activation", default=d.activation, choices=list(ACTIVATIONS),
                   help="the hidden layers' activation")
    p.add_argument("--init", default=d.init, choices=list(INITIALIZERS), help="weight initialization")
    p.add_argument("--dropout", type=finite_float(0, 1, high_open=True), default=None,
                   help="dropout probability on hidden layers, in [0, 1) (default: " + per_dataset("dropout") + ")")
    p.add_argument("--label-smoothing", type=finite_float(0, 1, high_open=True), default=None, metavar="EPS",
                   help="train against (1 - EPS) one-hot + EPS / classes, in [0, 1) (default: "
                        + per_dataset("label_smoothing") + ")")
    p.add_argument("--weight-decay", type=finite_float(0), default=d.weight_decay,
                   help="L2 regularization strength (>= 0)")
    p.add_argument("--augment", default=None, metavar="SPEC",
                   help=AUGMENT_HELP + " (default: " + per_dataset("augment") + ")")
    p.add_argument("--average-from", type=int_at_least(1), default=None, metavar="EPOCH",
                   help="weight averaging (SWA): from this epoch on, evaluate and keep the mean of every epoch's "
                        "weights (training goes on from its own)")
    p.add_argument("--corrupt", default=d.corrupt, metavar="SPEC",
                   help=DISTORT_HELP + "; the robust recipe: blur,affine,noise,lines:p=0.7 with --input-norm "
                        "background")
    p.add_argument("--number-pieces", type=int_at_least(1), default=None, metavar="N",
                   help="train a number reader for python -m fastnn.predict --number instead of a digit "
                        "classifier: classes 0-9 and 'none' (not one whole digit), trained on the candidate "
                        "pieces of N numbers composed from the training digits, plus the digits; tested on "
                        "those of N/20 test numbers (MNIST only; the shipped one: N 40000)")
    p.add_argument("--input-norm", default=d.input_norm, choices=list(INPUT_NORMS),
                   help="background: subtract each image's background level and stretch its ink to [0, 1], in "
                        "training and in every later use of the model (saved with it): robust to brightness and "
                        "contrast; none: images as they are")
    p.add_argument("--seed", type=int_at_least(0), default=d.seed, help="seeds init, split, shuffling and dropout")
    p.add_argument("--val-split", type=finite_float(0, 1, high_open=True), default=d.val_split,
                   help="validation fraction (stratified), in [0, 1): the best model is chosen on it; 0: train "
                        "on every sample once the settings are chosen, and keep the last epoch's model")
    add_data_dir_option(p)
    p.add_argument("--limit", type=int_at_least(10), default=None, metavar="N",
                   help="use only the first N training samples (default: all)")
    p.add_argument("--test-limit", type=int_at_least(1), default=None, metavar="N",
                   help="evaluate on the first N test samples (default: all)")
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"],
                   help="float64 for gradient checks; float32 is faster")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder, new or empty (default: a new folder under runs/)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its files")
    p.add_argument("--target-accuracy", type=finite_float(0, 100), default=None, metavar="PCT",
                   help="exit with status 1 if the test accuracy (in %%, 0-100) ends below this")
    p.add_argument("--no-fused", dest="fused", action="store_false",
                   help="train kernel by kernel even where the backend has a fused path (numba, cython)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed options (each already range-checked by its argparse type).

    Raises:
        UserError: options that contradict each other, or a backend that cannot run here.
    """
    from fastnn.inference.forward import inference_backend

    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    if args.data is not None:
        if args.dataset is not None or args.data_dir is not None:
            raise UserError("--data trains on an image folder; drop --dataset and --data-dir (they name the "
                            "MNIST / Fashion-MNIST files)")
        if not Path(args.data).is_dir():
            raise UserError(f"--data {args.data} is not a folder; give a folder of class folders "
                            f"(FOLDER/<class>/*.png, or FOLDER/train/<class>/ and FOLDER/test/<class>/)")
        values["dataset"] = printable(Path(args.data).resolve().name) or "images"
    elif args.dataset is None:
        values["dataset"] = TrainConfig.dataset
    if args.momentum is not None and args.optimizer != "momentum":
        raise UserError(f"--momentum applies to --optimizer momentum only, not {args.optimizer}; drop it "
                        f"or use --optimizer momentum")
    if args.momentum is None:
        values.pop("momentum")
    for key in RECIPES["mnist"]:
        if values.get(key) is None:
            values.pop(key, None)                    # the dataset's recipe
    try:
        parse_augment(args.augment or "none")
    except ValueError as exc:
        raise UserError(f"--augment: {exc}") from None
    if args.average_from is not None and args.epochs is not None and args.average_from > args.epochs:
        raise UserError(f"--average-from {args.average_from} comes after the last epoch ({args.epochs}): nothing "
                        f"would be averaged")
    try:
        kinds, _ = parse_distortions(args.corrupt)
    except ValueError as exc:
        raise UserError(f"--corrupt: {exc}") from None
    if (kinds or args.input_norm != "none") and args.data is not None:
        raise UserError("--corrupt and --input-norm are for MNIST-style digit images; drop them with --data")
    if args.number_pieces is not None:
        if args.data is not None or values["dataset"] != "mnist":
            raise UserError("--number-pieces cuts its pieces from MNIST digits; drop --data / use --dataset mnist")
    else:
        values.pop("number_pieces", None)
    values["backend"] = inference_backend(args.backend)
    if not args.fused and values["backend"] == "torch":
        raise UserError("--no-fused has no effect with --backend torch (it trains through torch.optim); drop it")
    cfg = TrainConfig(**values)
    get_backend(cfg.backend)                         # BackendUnavailable: one line saying how to get it
    return cfg


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    metrics = train(cfg, progress=not args.quiet, overwrite=args.overwrite,
                    command=" ".join(["python -m fastnn.train", *map(shlex.quote, argv if argv is not None
                                                                      else sys.argv[1:])]))
    if metrics["status"] == "interrupted":
        return 130
    if metrics["status"] != "completed":
        return 1
    if cfg.target_accuracy is not None and not 100 * metrics["test_accuracy"] >= cfg.target_accuracy:
        print(f"FAIL: test accuracy {100 * metrics['test_accuracy']:.2f}% is below the target "
              f"{cfg.target_accuracy:.2f}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
