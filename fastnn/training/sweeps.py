"""Named grids of training runs, in parallel: ``run_experiments`` behind ``python -m fastnn.experiments``.

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

import os
import time
import traceback
from pathlib import Path

import numpy as np

from fastnn.common.cli import FolderBusy, output_folder, release_folder, stop_signals
from fastnn.common.errors import UserError
from fastnn.common.io import read_history, write_csv_rows
from fastnn.common.provenance import git_commit
from fastnn.inference.forward import inference_backend
from fastnn.training.sweep_results import (
    FIELDS,
    append_rows,
    plot_experiment,
    print_markdown,
    read_rows,
    summarize,
)

AUGMENTATION_EPOCHS = 40   # the recipes' epochs (fastnn.training.config.RECIPES)

# The robustness experiment's corruption scores (fastnn.data.corruptions' kinds): the recipe is chosen
# on the validation split under the kinds whose families the robust recipe trains on (blur, affine,
# noise, lines: fastnn.data.distort); the others are held out, reported on the test set apart.
ROBUSTNESS = {
    "chosen_on": ("impulse_noise", "shot_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
                  "dotted_line", "zigzag"),
    "held_out": ("translate", "brightness", "contrast", "stripe", "fog", "spatter", "canny_edges"),
}

EXPERIMENTS: dict[str, list[tuple[str, dict]]] = {
    "learning-rate": [(f"sgd lr={lr}", {"optimizer": "sgd", "lr": lr, "lr_schedule": "constant"})
                      for lr in (0.001, 0.01, 0.1)],
    "depth": [("784-128-10", {"hidden": [128]}), ("784-128-64-10", {"hidden": [128, 64]})],
    "activation": [(a, {"activation": a}) for a in ("sigmoid", "tanh", "relu")],
    "init": [(i, {"init": i}) for i in ("zeros", "normal", "xavier", "he")],
    "optimizer": [("sgd lr=0.1", {"optimizer": "sgd", "lr": 0.1}),
                  ("momentum lr=0.05", {"optimizer": "momentum", "lr": 0.05}),
                  ("adam lr=0.001", {"optimizer": "adam", "lr": 0.001})],
    "regularization": [(name, {"limit": 2000, "hidden": [512, 256], "epochs": 40, "weight_decay": wd, "dropout": p})
                       for name, wd, p in (("none", 0.0, 0.0), ("L2 1e-3", 1e-3, 0.0), ("dropout 0.3", 0.0, 0.3),
                                           ("L2 + dropout", 1e-3, 0.3))],
    "batch-size": [(f"batch {b}", {"batch_size": b}) for b in (16, 32, 64, 128, 256, 512)],
    "augmentation": [(name, {"augment": spec, "epochs": AUGMENTATION_EPOCHS})
                     for name, spec in (("none", "none"), ("shift 1", "shift=1"), ("shift 2", "shift=2"),
                                        ("shift 3", "shift=3"), ("flip", "flip"), ("shift 1 + flip", "shift=1,flip"))],
    "recipe": [(name, {"epochs": AUGMENTATION_EPOCHS, **overrides}) for name, overrides in (
        ("plain", {}), ("label smoothing 0.1", {"label_smoothing": 0.1}),
        ("LS 0.1 + wd 5e-4", {"label_smoothing": 0.1, "weight_decay": 5e-4}),
        ("LS 0.1, 60 epochs", {"label_smoothing": 0.1, "epochs": 60}),
        ("shift 2", {"augment": "shift=2"}), ("shift 2 + LS 0.1", {"augment": "shift=2", "label_smoothing": 0.1}))],
    # the robust recipe (issue 24), chosen on validation: each run's best model is also scored on the
    # validation split under the benchmark corruptions of the trained families (ROBUSTNESS["chosen_on"]),
    # and on the test set under all of them, the held-out ones apart (fastnn.evaluation.robustness)
    "robustness": [(name, {"epochs": AUGMENTATION_EPOCHS, "augment": "shift=2", **overrides}) for name, overrides in (
        ("today's recipe", {}),                                       # MNIST's: shifts of up to 2 pixels
        ("input norm", {"input_norm": "background"}),
        ("corrupt p=0.5", {"corrupt": "blur,affine,noise,lines:p=0.5"}),
        ("norm + corrupt p=0.3", {"input_norm": "background", "corrupt": "blur,affine,noise,lines:p=0.3"}),
        ("norm + corrupt p=0.5", {"input_norm": "background", "corrupt": "blur,affine,noise,lines:p=0.5"}),
        ("norm + corrupt p=0.7", {"input_norm": "background", "corrupt": "blur,affine,noise,lines:p=0.7"}))],
    # Fashion-MNIST at 90% with the seed network (issue 24): weight averaging on its recipe
    "averaging": [(name, {"epochs": AUGMENTATION_EPOCHS, "label_smoothing": 0.1, **overrides}) for name, overrides in (
        ("recipe", {}), ("average from 21", {"average_from": 21}), ("average from 31", {"average_from": 31}),
        ("constant lr 0.02, average from 21", {"lr_schedule": "constant", "lr": 0.02, "average_from": 21}),
        ("60 epochs, average from 41", {"epochs": 60, "average_from": 41}),
        ("constant lr 0.01, average from 21", {"lr_schedule": "constant", "lr": 0.01, "average_from": 21}),
        ("constant lr 0.03, average from 21", {"lr_schedule": "constant", "lr": 0.03, "average_from": 21}),
        ("constant lr 0.02, average from 11", {"lr_schedule": "constant", "lr": 0.02, "average_from": 11}),
        ("60 epochs, constant lr 0.02, average from 21",
         {"epochs": 60, "lr_schedule": "constant", "lr": 0.02, "average_from": 21}),
        ("constant lr 0.02, average from 21, smoothing 0.05",
         {"lr_schedule": "constant", "lr": 0.02, "average_from": 21, "label_smoothing": 0.05}))],
    # the configurations best on validation in "averaging", trained again on all 60,000 training images
    "averaging-all": [(name, {"epochs": AUGMENTATION_EPOCHS, "label_smoothing": 0.1, "val_split": 0.0, **overrides})
                      for name, overrides in (
        ("recipe, all 60,000", {}),
        ("constant lr 0.02, average from 21, all 60,000",
         {"lr_schedule": "constant", "lr": 0.02, "average_from": 21}),
        ("60 epochs, constant lr 0.02, average from 21, all 60,000",
         {"epochs": 60, "lr_schedule": "constant", "lr": 0.02, "average_from": 21}))],
    "backend": [(b, {"backend": b}) for b in ("numpy", "numba", "cython", "torch")]
               + [("reference (subset)", {"backend": "reference", "limit": 1000, "test_limit": 1000, "epochs": 1})],
}


def run_one(spec: dict) -> dict | None:
    """Train one configuration (in whatever process joblib gives it) and append its row to the
    sweep's CSV; return the row, or None where another sweep holds the run's folder or finished
    the run meanwhile (two sweeps into one results folder never train one run twice). Never
    raises: failures become rows."""
    try:
        output_folder(spec["run_dir"], overwrite=True, option="run folder")   # held until the row is written
    except FolderBusy:
        return None
    except UserError as exc:
        row = {**{k: spec[k] for k in ("experiment", "dataset", "config", "seed")}, "status": "failed",
               "error": str(exc)}
        append_rows([_finish_row(row, spec, time.perf_counter())], Path(spec["csv"]))
        return _finish_row(row, spec, time.perf_counter())
    try:
        if not spec["force"] and spec["key"] in {_key(r) for r in read_rows(Path(spec["csv"]), warn=lambda *a: None)
                                                 if r["status"] == "completed"}:
            return None                                  # another sweep finished it after this one started
        row = _train_row(spec)
        append_rows([row], Path(spec["csv"]))
        return row
    finally:
        release_folder(spec["run_dir"])


def _train_row(spec: dict) -> dict:
    """The CSV row of one training run (its folder claimed by the caller)."""
    from fastnn.training.config import TrainConfig
    from fastnn.training.loop import train

    row = {k: spec[k] for k in ("experiment", "dataset", "config", "seed")}
    t0 = time.perf_counter()
    try:
        cfg = TrainConfig(**{**spec["defaults"], **spec["overrides"], "dataset": spec["dataset"], "seed": spec["seed"],
                             "out": spec["run_dir"], "data_dir": spec["data_dir"]})
        metrics = train(cfg, progress=False, log=lambda *a, **k: None, overwrite=True)   # its own run folder
        row.update({"backend": cfg.backend, "epochs": cfg.epochs, "limit": cfg.limit or "",
                    "test_limit": cfg.test_limit or "",
                    "status": metrics["status"]})
        if not metrics["epochs_completed"]:                 # interrupted or diverged before one epoch ended
            row["error"] = metrics["status"]
            return _finish_row(row, spec, t0)
        last = read_history(Path(spec["run_dir"]) / "history.csv")[-1]
        row.update({
            "train_accuracy": float(last["train_accuracy"]), "train_loss": float(last["train_loss"]),
            "val_accuracy": float(last["val_accuracy"]), "val_loss": float(last["val_loss"]),
            "test_accuracy": metrics["test_accuracy"], "test_loss": metrics["test_loss"],
            "best_epoch": metrics["best_epoch"], "epoch_time_s": float(np.median(metrics["epoch_times_s"])),
            "error": "" if metrics["status"] == "completed" else metrics["status"],
        })
        if spec["experiment"] == "robustness" and metrics["status"] == "completed":
            row.update(_corruption_scores(cfg))
    except Exception as exc:  # noqa: BLE001 - a failed run is a result, not a crash
        row.update({"backend": spec["overrides"].get("backend", spec["defaults"].get("backend")),
                    "status": "failed", "error": f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]})
        traceback.print_exc()
    return _finish_row(row, spec, t0)


def _corruption_scores(cfg) -> dict:
    """The robustness experiment's columns for the finished run ``cfg``: its best model on the
    validation split under ROBUSTNESS["chosen_on"], and on the test set under every kind (the
    held-out ones apart), severities 1-3, corruption seed 0."""
    from fastnn.evaluation.robustness import evaluate_corruptions
    from fastnn.model.network import NeuralNetwork
    from fastnn.training.loop import load_test_set, prepare_data

    model = NeuralNetwork.load(Path(cfg.out) / "best_model.npz", backend=cfg.backend)
    _, val_set, _ = prepare_data(cfg)
    val = evaluate_corruptions({"m": model}, val_set, ROBUSTNESS["chosen_on"], progress=False)["models"]["m"]
    kinds = ROBUSTNESS["chosen_on"] + ROBUSTNESS["held_out"]
    test = evaluate_corruptions({"m": model}, load_test_set(cfg), kinds, held_out=ROBUSTNESS["held_out"],
                                progress=False)["models"]["m"]
    return {"val_corrupted_accuracy": val["all"]["mean_corrupted_accuracy"],
            "test_corrupted_accuracy": test["all"]["mean_corrupted_accuracy"],
            "test_heldout_corrupted_accuracy": test["held_out"]["mean_corrupted_accuracy"],
            "test_error_gap": test["all"]["error_gap"], "test_heldout_error_gap": test["held_out"]["error_gap"]}


def _finish_row(row: dict, spec: dict, t0: float) -> dict:
    row.update({"wall_time_s": time.perf_counter() - t0, "git_commit": spec["commit"], "run_dir": spec["run_dir"]})
    return {k: row.get(k, "") for k in FIELDS}


def _key(row) -> tuple:
    """What makes two runs the same: experiment, dataset, configuration, seed, epochs and the
    training- and test-sample limits (a quick --limit or --test-limit run never stands in for a
    full one)."""
    return (row["experiment"], row["dataset"], row["config"], str(row["seed"]), str(row["epochs"]),
            str(row.get("limit") or ""), str(row.get("test_limit") or ""))


def smoke_overrides(overrides: dict, epochs: int, limit: int | None, test_limit: int | None) -> dict:
    """A configuration cut down for ``--smoke``: at most ``epochs`` epochs and ``limit`` /
    ``test_limit`` images even where the experiment fixes its own, weight averaging (if any) from
    the last epoch at the latest, so that every configuration's code runs in seconds."""
    out = dict(overrides)
    if "epochs" in out:
        out["epochs"] = min(out["epochs"], epochs)
    if out.get("average_from"):
        out["average_from"] = min(out["average_from"], out.get("epochs", epochs))
    for key, cap in (("limit", limit), ("test_limit", test_limit)):
        if key in out and cap:
            out[key] = min(out[key], cap)
    return out


def make_specs(names, datasets, seeds, epochs, backend, data_dir, results: Path, force: bool, done: set,
               limit: int | None = None, test_limit: int | None = None, smoke: bool = False) -> list[dict]:
    commit = git_commit()
    specs = []
    # the plain recipe (no augmentation, no dropout) unless an experiment varies them
    defaults = {"backend": backend, "epochs": epochs, "augment": "none", "dropout": 0.0, "label_smoothing": 0.0,
                **({"limit": limit} if limit else {}), **({"test_limit": test_limit} if test_limit else {})}
    for name in names:
        for dataset in datasets:
            for config, overrides in EXPERIMENTS[name]:
                if smoke:
                    overrides = smoke_overrides(overrides, epochs, limit, test_limit)
                for seed in range(seeds):
                    key = _key({"experiment": name, "dataset": dataset, "config": config, "seed": seed,
                                "epochs": overrides.get("epochs", epochs), "limit": overrides.get("limit", limit),
                                "test_limit": overrides.get("test_limit", test_limit)})
                    spec = {"experiment": name, "dataset": dataset, "config": config, "seed": seed,
                            "defaults": defaults, "overrides": overrides, "data_dir": data_dir, "commit": commit,
                            "run_dir": str(results / "runs" / name / dataset / config.replace(" ", "_")
                                           / f"seed{seed}"),
                            "csv": str(results / "experiments.csv"), "key": key, "force": force}
                    if force or key not in done:
                        specs.append(spec)
    return specs


def run_specs(specs, jobs: int, threads: int, scheduler: str | None = None, on_result=None) -> list[dict]:
    """Run the specs through joblib: local processes (loky), or a Dask cluster at ``scheduler``.

    ``on_result(row)`` is called as each run finishes (its worker has appended it to the CSV).
    Ctrl-C or SIGTERM kills the local workers before KeyboardInterrupt goes on: a stopped sweep
    leaves no run going that would append its row later."""
    import joblib

    if not specs:
        return []

    def collect(parallel):
        out = []
        for row in parallel(joblib.delayed(run_one)(s) for s in specs):
            if row is None:                              # another sweep has it
                continue
            out.append(row)
            if on_result:
                on_result(row)
        return out

    if scheduler:
        from dask.distributed import Client

        with Client(scheduler), joblib.parallel_config(backend="dask"):
            return collect(joblib.Parallel(n_jobs=-1, return_as="generator_unordered"))
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "MKL_NUM_THREADS", "MPLBACKEND")}
    os.environ.update({"OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
                       "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "MPLBACKEND": "Agg"})
    try:                        # the workers start with these in their environment
        with stop_signals(), joblib.parallel_config(backend="loky", inner_max_num_threads=threads):
            return collect(joblib.Parallel(n_jobs=jobs, return_as="generator_unordered"))
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM: the workers stop too, so no run appends a row after it
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True, kill_workers=True)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def configs(experiment: str) -> list[str]:
    """An experiment's configuration names, in its grid's order."""
    return [name for name, _ in EXPERIMENTS[experiment]]


def _print_now(text: str) -> None:
    print(text, flush=True)                          # a sweep's progress, line by line, even into a pipe


def run_experiments(names, *, datasets=("mnist",), seeds: int = 3, epochs: int = 10, backend: str = "auto",
                    jobs: int = 1, scheduler: str | None = None, data_dir=None, results="runs/experiments",
                    plots_dir=None, limit: int | None = None, test_limit: int | None = None, force: bool = False,
                    markdown: bool = False, smoke: bool = False, log=_print_now) -> int:
    """The sweep behind ``python -m fastnn.experiments``: run the named experiments' runs not yet
    in ``<results>/experiments.csv`` (``jobs`` at a time, or on the Dask cluster at ``scheduler``),
    then write each experiment's summary CSV and figures. ``markdown``: run nothing, print the
    summaries as Markdown tables. ``smoke``: every run cut down to ``epochs`` and ``limit`` even where
    an experiment fixes more (``smoke_overrides``). Returns the exit status: 1 if a run failed, else 0."""
    results = Path(results)
    plots_dir = plots_dir or str(results / "plots")
    csv_path = results / "experiments.csv"
    if markdown:
        print_markdown(read_rows(csv_path), {name: configs(name) for name in names})
        return 0
    done = {_key(r) for r in read_rows(csv_path) if r["status"] == "completed"}
    backend = inference_backend(backend)
    specs = make_specs(names, datasets, seeds, epochs, backend, data_dir, results, force, done, limit, test_limit,
                       smoke)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log(f"{len(specs)} runs to do ({sum(1 for _ in done)} already in {csv_path}); {jobs} at a time, "
        f"{threads} thread(s) each" + (f", on the Dask cluster at {scheduler}" if scheduler else ""))
    t0 = time.perf_counter()

    def save(row):                                   # each run's row (appended by its worker) as it finishes
        log(f"  [{time.perf_counter() - t0:6.0f} s] {row['experiment']} {row['dataset']} {row['config']} "
            f"seed {row['seed']}: {row['status']}"
            + (f", test {100 * float(row['test_accuracy']):.2f}%" if row["status"] == "completed" else ""))

    new_rows = run_specs(specs, jobs, threads, scheduler, on_result=save)
    failed = [r for r in new_rows if r["status"] != "completed"]
    log(f"{len(new_rows)} runs in {time.perf_counter() - t0:.0f} s; {len(failed)} failed")
    for r in failed:
        log(f"  failed: {r['experiment']} {r['dataset']} {r['config']} seed {r['seed']}: {r['error']}")
    all_rows = read_rows(csv_path, warn=lambda *a: None)
    wrote = []
    for name in names:
        summary = summarize(all_rows, name, configs(name))
        if not summary:
            continue
        write_csv_rows(summary, results / f"{name}.csv")
        log(f"\n{name}:")
        for s in summary:
            log(f"  {s['dataset']:>13s}  {s['config']:<20s} test {100 * s['test_accuracy_mean']:6.2f} ± "
                f"{100 * s['test_accuracy_std']:.2f}%  train {100 * s['train_accuracy_mean']:6.2f}%  "
                f"epoch {s['epoch_time_s_mean']:.3f} s  run {s['wall_time_s_mean']:.1f} s  (n={s['runs']})"
                + (f"\n  {'':>13s}  {'':<20s} val clean {100 * s['val_accuracy_mean']:.2f}%, corrupted (chosen on) "
                   f"{100 * s['val_corrupted_accuracy_mean']:.2f}%; test gap {100 * s['test_error_gap_mean']:.2f} "
                   f"points, held-out gap {100 * s['test_heldout_error_gap_mean']:.2f}"
                   if "val_corrupted_accuracy_mean" in s else ""))
        for dataset in dict.fromkeys(s["dataset"] for s in summary):
            plot_experiment(summary, name, dataset, all_rows, Path(plots_dir) / f"{name}_{dataset}.png")
        wrote.append(name)
    log(f"\nwrote {csv_path}" + (f", {results}/{{{', '.join(f'{n}.csv' for n in wrote)}}}, {plots_dir}/"
                                 if wrote else " (no completed runs to summarise: no tables or figures)"))
    return 1 if failed else 0
