"""``python -m fastnn.pretrained``: list the shipped models, or package a training run as one."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from fastnn.common.cli import HelpFormatter, regular_file, run_main
from fastnn.common.errors import UserError
from fastnn.common.io import atomic_write, open_regular, write_json
from fastnn.pretrained import DATASETS, VARIANTS, info


def package(run_dir, out) -> Path:
    """Copy RUN_DIR/best_model.npz to OUT/<dataset>.npz (OUT/<dataset>-torch.npz for a run of
    ``--backend torch``, OUT/<dataset>-numbers.npz for a number reader (``--number-pieces``),
    OUT/<dataset>-robust.npz for one of the robust recipe, OUT/<dataset>-all-data.npz for
    one trained without a validation split: ``fastnn.pretrained.VARIANTS``)
    and write the .json beside it from the run's
    metrics.json (command, commit, test and validation accuracy, epochs, machine). Returns the
    model's new path. Raises UserError for a run that did not complete or is not a training run."""
    from fastnn.model.network import NeuralNetwork

    run_dir, out = Path(run_dir), Path(out)
    model_file = regular_file(run_dir / "best_model.npz", "model file")
    metrics_file = regular_file(run_dir / "metrics.json", "metrics file")
    try:
        with open_regular(metrics_file, "r", encoding="utf-8") as f:
            metrics = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{metrics_file} is not a metrics.json of python -m fastnn.train ({exc})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{metrics_file} is not a metrics.json of python -m fastnn.train (no object at its top)")
    if metrics.get("status") != "completed":
        raise UserError(f"{run_dir}: the run's status is {metrics.get('status')!r}; package a completed run")
    dataset = metrics.get("dataset")
    if dataset not in DATASETS:
        raise UserError(f"{run_dir}: trained on {dataset!r}; fastnn ships models for {', '.join(DATASETS)}")
    model = NeuralNetwork.load(model_file)                  # checked before anything is copied
    if model.dataset != dataset:
        raise UserError(f"{model_file} records dataset {model.dataset!r}, its metrics.json {dataset!r}")
    out.mkdir(parents=True, exist_ok=True)
    hyper = metrics.get("hyperparameters") or {}
    variant = ("torch" if metrics.get("backend") == "torch"
               else "numbers" if hyper.get("number_pieces")
               else "robust" if hyper.get("corrupt", "none") != "none" or hyper.get("input_norm", "none") != "none"
               else "all-data" if hyper.get("val_split") == 0
               else None)
    target = out / (f"{dataset}-{variant}.npz" if variant else f"{dataset}.npz")
    with open_regular(model_file, "rb") as src, atomic_write(target) as dst:   # a reader sees old or new
        shutil.copyfileobj(src, dst)
    record = {
        "dataset": dataset, "file": target.name, "layer_sizes": metrics.get("layer_sizes"),
        "command": metrics.get("command"), "git_commit": metrics.get("environment", {}).get("git_commit"),
        "test_accuracy": metrics.get("test_accuracy"), "best_val_accuracy": metrics.get("best_val_accuracy"),
        "best_epoch": metrics.get("best_epoch"), "epochs": metrics.get("epochs_completed"),
        "seed": metrics.get("seed"), "backend": metrics.get("backend"),
        "hyperparameters": metrics.get("hyperparameters"), "environment": metrics.get("environment"),
    }
    write_json(record, target.with_suffix(".json"))
    return target


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.pretrained",
        description="List the pretrained models that ship with fastnn (NeuralNetwork.pretrained), or, with --from, "
                    "package a finished training run as one.",
        formatter_class=HelpFormatter)
    p.add_argument("--from", dest="run_dir", default=None, metavar="RUN_DIR",
                   help="a folder written by python -m fastnn.train (best_model.npz, metrics.json)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write <dataset>.npz and <dataset>.json (<dataset>-torch.* for a run of --backend "
                        "torch, <dataset>-numbers.* for --number-pieces, <dataset>-robust.* for the robust recipe, "
                        "<dataset>-all-data.* for --val-split 0; "
                        "required with --from; the shipped ones: "
                        "fastnn/pretrained)")
    args = p.parse_args(argv)
    if args.run_dir is None:
        if args.out:
            raise UserError("--out needs --from RUN_DIR (the training run to package)")
        for dataset in DATASETS:
            try:
                meta = info(dataset)
            except FileNotFoundError as exc:
                print(f"{dataset}: {exc}")
                continue
            print(f"{dataset}: test accuracy {100 * meta['test_accuracy']:.2f}%, {meta['epochs']} epochs, "
                  f"commit {meta['git_commit']}; made by: {meta['command']}")
            for variant in VARIANTS:
                try:
                    meta = info(dataset, variant)
                except FileNotFoundError:
                    continue
                print(f"{dataset} ({variant}): test accuracy {100 * meta['test_accuracy']:.2f}%, "
                      f"{meta['epochs']} epochs; made by: {meta['command']}")
        return 0
    if not args.out:
        raise UserError("--from needs --out DIR (to update the shipped models: --out fastnn/pretrained)")
    target = package(args.run_dir, args.out)
    print(f"wrote {target} and {target.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
