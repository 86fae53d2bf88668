"""``python -m fastnn.autograd.train``: train a scalar-``Value`` MLP on real MNIST.

Every weight is a ``Value``; every sample builds a graph of scalar nodes and backpropagates
through it. To finish in minutes, images are average-pooled to 14x14 (or 7x7) and training
uses a subset. Writes ``history.csv``, ``learning_curves.png`` and ``metrics.json`` like
``python -m fastnn.train``, including the time per sample that shows why the vectorized
kernels exist.
"""
from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

from fastnn import __version__
from fastnn.autograd.nn import MLP, softmax_cross_entropy
from fastnn.common.cli import (
    HelpFormatter,
    add_data_dir_option,
    finite_float,
    int_at_least,
    new_run_folder,
    output_folder,
    release_folder,
    remove_if_empty,
    run_main,
    stop_signals,
)
from fastnn.common.errors import UserError
from fastnn.common.io import write_csv_rows, write_json
from fastnn.data.datasets import DATASETS, load_dataset


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Average-pool uint8 images (N, 28, 28) to float (N, size * size) in [0, 1]; size divides 28."""
    n, h, w = images.shape
    if h % size or w % size:
        raise ValueError(f"size {size} must divide the image shape {images.shape[1:]}")
    f = h // size
    pooled = images.reshape(n, size, f, size, f).mean(axis=(2, 4)) / 255.0   # (N, size, size)
    return pooled.reshape(n, size * size)


def evaluate(model: MLP, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean loss, accuracy) by forward passes only."""
    total, correct = 0.0, 0
    for x, label in zip(X.tolist(), y.tolist()):
        logits = model(x)
        total += softmax_cross_entropy(logits, label).data
        correct += int(max(range(len(logits)), key=lambda c: logits[c].data) == label)
    return total / len(y), correct / len(y)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.autograd.train",
        description="Train an MLP made of scalar autograd Values on downsampled real MNIST.",
        formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="mnist", choices=list(DATASETS), help="the data")
    p.add_argument("--size", type=int, default=14, choices=[7, 14], help="images are pooled to SIZE x SIZE")
    p.add_argument("--hidden", type=int_at_least(1), nargs="+", default=[32], metavar="H", help="hidden layer sizes")
    p.add_argument("--limit", type=int_at_least(1), default=5000, help="train on the first N training samples")
    p.add_argument("--val-limit", type=int_at_least(1), default=1000, metavar="N",
                   help="validate on N training samples drawn (seeded) from those after the first --limit: "
                        "the best model is chosen on them")
    p.add_argument("--test-limit", type=int_at_least(1), default=2000, help="first N test samples")
    p.add_argument("--epochs", type=int_at_least(1), default=4, help="passes over the training split")
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="samples per SGD step")
    p.add_argument("--lr", type=finite_float(0, low_open=True), default=0.05, help="SGD learning rate (momentum 0.9)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seeds the weights, split and order")
    add_data_dir_option(p)
    p.add_argument("--out", default=None, metavar="DIR", help="output folder, new or empty (default: a new folder "
                                                             "under runs/)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    out = output_folder(args.out or new_run_folder(f"{args.dataset}-value"), args.overwrite)
    with stop_signals():                             # SIGTERM stops training as Ctrl-C does: outputs kept
        try:
            return _train(args, out)
        except BaseException:
            remove_if_empty(out)
            raise
        finally:
            release_folder(out)


def _train(args, out: Path) -> int:
    from tqdm.auto import tqdm

    from fastnn.common.plotting import plot_learning_curves

    full = load_dataset(args.dataset, "train", args.data_dir)
    test = load_dataset(args.dataset, "test", args.data_dir)
    if args.limit + args.val_limit > len(full):
        raise UserError(f"--limit {args.limit} plus --val-limit {args.val_limit} is more than the {len(full)} "
                        f"training samples; lower one of them")
    X_train, y_train = downsample(full.images[:args.limit], args.size), full.labels[:args.limit]
    val_idx = args.limit + np.sort(np.random.default_rng([args.seed, 3]).choice(len(full) - args.limit,
                                                                                  args.val_limit, replace=False))
    X_val, y_val = downsample(full.images[val_idx], args.size), full.labels[val_idx]
    X_test, y_test = downsample(test.images[:args.test_limit], args.size), test.labels[:args.test_limit]

    model = MLP(args.size * args.size, [*args.hidden, len(full.class_names)], seed=args.seed)
    params = model.parameters()
    velocity = [0.0] * len(params)
    rng = random.Random(args.seed)
    print(f"{len(params):,} scalar Value parameters, {args.size}x{args.size} inputs; train {len(y_train)}, "
          f"val {len(y_val)}, test {len(y_test)}; output {out}")

    history, epoch_times, best = [], [], (-1.0, None, 0)
    interrupted = False
    try:
        for epoch in range(1, args.epochs + 1):
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / args.epochs))   # cosine decay
            order = list(range(len(y_train)))
            rng.shuffle(order)
            t0 = time.perf_counter()
            bar = tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}/{args.epochs}",
                       leave=False, disable=args.quiet, mininterval=0.5)
            for start in bar:
                batch = order[start:start + args.batch_size]
                model.zero_grad()
                losses = [softmax_cross_entropy(model(X_train[i].tolist()), int(y_train[i])) for i in batch]
                loss = sum(losses) * (1.0 / len(batch))
                loss.backward()
                for k, p in enumerate(params):          # SGD with momentum, one scalar at a time
                    velocity[k] = 0.9 * velocity[k] + p.grad
                    p.data -= lr * velocity[k]
                bar.set_postfix(loss=f"{loss.data:.3f}", refresh=False)
            epoch_time = time.perf_counter() - t0
            train_loss, train_acc = evaluate(model, X_train[:1000], y_train[:1000])   # a sample of the split
            val_loss, val_acc = evaluate(model, X_val, y_val)
            epoch_times.append(epoch_time)
            history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                            "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr, "epoch_time_s": epoch_time})
            if val_acc > best[0]:
                best = (val_acc, [p.data for p in params], epoch)
            print(f"epoch {epoch}/{args.epochs}  train loss {train_loss:.4f} acc {100 * train_acc:.2f}% "
                  f"(first {min(1000, len(y_train))})  "
                  f"val loss {val_loss:.4f} acc {100 * val_acc:.2f}%  {epoch_time:.1f}s")
            write_csv_rows(history, out / "history.csv")
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: evaluating the best model so far")
    if history and not math.isfinite(history[-1]["train_loss"]):
        print(f"stopped: the loss is {history[-1]['train_loss']}: --lr {args.lr:g} is too high", file=sys.stderr)
        return 1
    if best[1] is None:
        return 130
    for p, v in zip(params, best[1]):
        p.data = v
    t0 = time.perf_counter()
    test_loss, test_acc = evaluate(model, X_test, y_test)
    infer_us = 1e6 * (time.perf_counter() - t0) / len(y_test)
    train_us = 1e6 * float(np.median(epoch_times)) / len(y_train)
    metrics = {
        "backend": "value", "dataset": args.dataset, "test_accuracy": test_acc, "test_loss": test_loss,
        "test_samples": len(y_test), "best_val_accuracy": best[0], "best_epoch": best[2],
        "epoch_times_s": epoch_times, "train_time_per_sample_us": train_us, "inference_time_per_sample_us": infer_us,
        "seed": args.seed, "layer_sizes": [args.size * args.size, *args.hidden, len(full.class_names)],
        "num_parameters": len(params), "train_samples": len(y_train), "val_samples": len(y_val),
        "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("dataset", "seed", "out", "quiet")},
        "environment": {"fastnn": __version__, "python": platform.python_version()},
    }
    write_json(metrics, out / "metrics.json")
    plot_learning_curves(history, out / "learning_curves.png",
                         f"{args.dataset} {args.size}x{args.size}, scalar Value MLP {metrics['layer_sizes']}")
    print(f"training {train_us:.0f} us per sample, inference {infer_us:.0f} us per sample")
    print(f"test accuracy {100 * test_acc:.2f}% on the first {len(y_test)} test images (best model, epoch {best[2]})")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
