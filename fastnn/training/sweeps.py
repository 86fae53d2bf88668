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
                    ``fastnn.train.RECIPES`` are chosen on its validation accuracy
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

import csv
import io
import os
import time
import traceback
from pathlib import Path

import numpy as np

from fastnn.common.cli import FolderBusy, output_folder, release_folder
from fastnn.common.errors import UserError
from fastnn.common.io import NotARegularFile, open_regular, read_history, write_csv_rows
from fastnn.common.provenance import git_commit

AUGMENTATION_EPOCHS = 40   # the recipes' epochs (fastnn.train.RECIPES)

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
    "backend": [(b, {"backend": b}) for b in ("numpy", "numba", "cython", "torch")]
               + [("reference (subset)", {"backend": "reference", "limit": 1000, "test_limit": 1000, "epochs": 1})],
}

FIELDS = ["experiment", "dataset", "config", "seed", "backend", "epochs", "limit", "status", "train_accuracy",
          "train_loss",
          "val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_epoch", "epoch_time_s", "wall_time_s",
          "git_commit", "run_dir", "error"]


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
    except Exception as exc:  # noqa: BLE001 - a failed run is a result, not a crash
        row.update({"backend": spec["overrides"].get("backend", spec["defaults"].get("backend")),
                    "status": "failed", "error": f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]})
        traceback.print_exc()
    return _finish_row(row, spec, t0)


def _finish_row(row: dict, spec: dict, t0: float) -> dict:
    row.update({"wall_time_s": time.perf_counter() - t0, "git_commit": spec["commit"], "run_dir": spec["run_dir"]})
    return {k: row.get(k, "") for k in FIELDS}


def _key(row) -> tuple:
    """What makes two runs the same: experiment, dataset, configuration, seed, epochs and the
    training-sample limit (a quick --limit run never stands in for a full one)."""
    return (row["experiment"], row["dataset"], row["config"], str(row["seed"]), str(row["epochs"]),
            str(row.get("limit") or ""))


NUMERIC = ("train_accuracy", "train_loss", "val_accuracy", "val_loss", "test_accuracy", "test_loss", "epoch_time_s",
           "wall_time_s")


def _learning_curve(history_csv: Path) -> list[dict]:
    """A finished run's history.csv rows, or [] where it is gone or damaged (the plot goes on)."""
    try:
        return read_history(history_csv)
    except (ValueError, OSError):
        return []


def read_rows(path: Path, warn=print) -> list[dict]:
    """The rows of an experiments CSV written by ``append_rows``; rows that are cut short (the last
    line without its newline: a writer was stopped mid-line) or whose numbers do not parse are
    left out with a warning through ``warn``.

    Raises:
        UserError: the file is a folder, not text, or not an experiments CSV (no header of ours).
    """
    from fastnn.common.errors import UserError

    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise UserError(f"{path} is a folder, not the experiments CSV; move it away or choose another --results")
    try:
        with open_regular(path, "r", encoding="utf-8") as f:
            text = f.read()
    except NotARegularFile as exc:
        raise UserError(f"{path} {exc.strerror}: the experiments CSV must be one") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text CSV file; move it away (runs are recorded there)") from None
    if not text.strip():
        return []
    reader = csv.DictReader(io.StringIO(text))
    missing = [f for f in ("experiment", "dataset", "config", "seed", "epochs", "status")
               if f not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path} is not an experiments CSV (its header lacks {', '.join(missing)}); move it away")
    rows, skipped = [], 0
    complete_lines = text.endswith("\n")
    all_rows = list(reader)
    for i, row in enumerate(all_rows):
        if None in row or None in row.values() or (i == len(all_rows) - 1 and not complete_lines):
            skipped += 1                                    # too many or too few cells, or a cut last line
            continue
        row = {**dict.fromkeys(FIELDS, ""), **row}          # columns an older or hand-made file lacks: empty
        if row["status"] == "completed":
            try:
                [float(row[k]) for k in NUMERIC]
            except ValueError:
                skipped += 1
                continue
        rows.append(row)
    if skipped:
        warn(f"warning: {path}: left out {skipped} damaged row(s) (cut short or not numeric)")
    return rows


def append_rows(rows: list[dict], path: Path) -> None:
    """Append rows to the CSV, one line per row, under an exclusive lock (``fcntl.flock`` on
    ``<path>.lock``), the header first when the file is new: two sweeps writing into one results
    folder interleave their rows and lose none."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            new = not path.exists() or path.stat().st_size == 0
            if not new:                               # a file of an older format: its rows moved to ours once
                with open(path, newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), [])
                if header != FIELDS:
                    old = read_rows(path)
                    if old:
                        write_csv_rows([{k: r.get(k) or "" for k in FIELDS} for r in old], path)
                    else:
                        new = True
            with open(path, "w" if new else "a", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def summarize(rows: list[dict], experiment: str) -> list[dict]:
    """Mean and std (over seeds) per dataset and configuration, completed runs only, in the grid's order."""
    order = [name for name, _ in EXPERIMENTS[experiment]]
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for config in order:
            runs = [r for r in rows if r["experiment"] == experiment and r["dataset"] == dataset
                    and r["config"] == config and r["status"] == "completed"]
            if not runs:
                continue
            summary = {"experiment": experiment, "dataset": dataset, "config": config, "runs": len(runs),
                       "backend": runs[0]["backend"], "epochs": runs[0]["epochs"]}
            for field in ("test_accuracy", "val_accuracy", "train_accuracy", "test_loss", "epoch_time_s",
                          "wall_time_s"):
                vals = np.array([float(r[field]) for r in runs])
                summary[f"{field}_mean"] = float(vals.mean())
                summary[f"{field}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            gap = np.array([float(r["train_accuracy"]) - float(r["val_accuracy"]) for r in runs])
            summary["train_val_gap_mean"] = float(gap.mean())
            out.append(summary)
    return out


def plot_experiment(summary: list[dict], experiment: str, dataset: str, rows: list[dict], path: Path) -> None:
    from fastnn.common.plotting import plt, save_figure

    s = [r for r in summary if r["dataset"] == dataset]
    if not s:
        return
    names = [r["config"] for r in s]
    x = np.arange(len(s))
    extra = experiment in ("batch-size", "backend", "optimizer")
    fig, axes = plt.subplots(1, 2 if extra else 1, figsize=(11 if extra else 6.5, 4), squeeze=False)
    ax = axes[0, 0]
    if experiment in ("regularization", "augmentation", "recipe"):
        width = 0.38
        left, label = (("train_accuracy", "train (last epoch)") if experiment == "regularization" else
                       ("val_accuracy", "validation (last epoch): chooses"))
        ax.bar(x - width / 2, [100 * r[f"{left}_mean"] for r in s], width, label=label, color="tab:gray",
               yerr=[100 * r[f"{left}_std"] for r in s], capsize=3)
        ax.bar(x + width / 2, [100 * r["test_accuracy_mean"] for r in s], width,
               yerr=[100 * r["test_accuracy_std"] for r in s], capsize=3, label="test (best val model)")
        ax.legend(fontsize=8, loc="lower left")
    else:
        ax.bar(x, [100 * r["test_accuracy_mean"] for r in s], yerr=[100 * r["test_accuracy_std"] for r in s],
               capsize=3, color="tab:blue")
    paired = experiment in ("regularization", "augmentation", "recipe")     # two bars per configuration
    for xi, r in zip(x, s):
        for key, dx in ((("val_accuracy", -0.19), ("test_accuracy", 0.19)) if experiment != "regularization"
                        else (("test_accuracy", 0.19),)) if paired else (("test_accuracy", 0.0),):
            ax.text(xi + dx, 100 * (r[f"{key}_mean"] + r[f"{key}_std"]), f"{100 * r[f'{key}_mean']:.2f}",
                    ha="center", va="bottom", fontsize=7)
    low = min(100 * r["test_accuracy_mean"] for r in s)
    if experiment in ("augmentation", "recipe"):      # tenths of a percent apart: zoom in
        values = [100 * r[k] for r in s for k in ("test_accuracy_mean", "val_accuracy_mean")]
        ax.set_ylim(min(values) - 1, max(values) + 0.6)
    else:
        ax.set_ylim(max(0, low - (5 if low > 50 else low)), 100.5)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(("accuracy" if paired else "test accuracy") + " (%), mean ± std over seeds")
    ax.set_title(f"{experiment} on {dataset}", fontsize=10)
    if experiment in ("batch-size", "backend"):
        ax2 = axes[0, 1]
        key = "wall_time_s_mean" if experiment == "batch-size" else "epoch_time_s_mean"
        ax2.bar(x, [r[key] for r in s], color="tab:orange")
        ax2.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax2.set_yscale("log")
        ax2.set_ylabel("wall time per run (s)" if experiment == "batch-size" else "median epoch time (s)")
        ax2.set_title("time" + (" (reference: 800-image subset)" if experiment == "backend" else ""), fontsize=10)
    if experiment == "optimizer":
        ax2 = axes[0, 1]
        for r in s:
            curves = [_learning_curve(Path(run["run_dir"]) / "history.csv") for run in rows
                      if run["experiment"] == experiment and run["dataset"] == dataset and run["config"] == r["config"]
                      and run["status"] == "completed"]
            curves = [c for c in curves if c]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            val = np.mean([[float(row["val_accuracy"]) for row in c[:n]] for c in curves], axis=0)
            ax2.plot(range(1, n + 1), 100 * val, marker="o", ms=3, label=r["config"])
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("validation accuracy (%), mean over seeds")
        ax2.set_title("learning curves", fontsize=10)
        ax2.legend(fontsize=8)
    save_figure(fig, path)


def print_markdown(rows: list[dict], names) -> None:
    """The summaries as Markdown tables, one per experiment, both datasets side by side."""
    for name in names:
        summary = summarize(rows, name)
        if not summary:
            continue
        datasets = list(dict.fromkeys(s["dataset"] for s in summary))
        chooses = name in ("augmentation", "recipe")     # chosen on validation: show it first
        head = " | ".join((f"{d} val accuracy | " if chooses else "") + f"{d} test accuracy | {d} train - val gap"
                          for d in datasets)
        backend = "per row" if name == "backend" else summary[0]["backend"]
        print(f"\n{name} ({summary[0]['runs']} seeds, {summary[0]['epochs']} epochs, backend {backend}):\n")
        print(f"| configuration | {head} | epoch time | run time |")
        print("|---" * (3 + (3 if chooses else 2) * len(datasets)) + "|")
        for config in dict.fromkeys(s["config"] for s in summary):
            cells, times = [], []
            for d in datasets:
                s = next((x for x in summary if x["dataset"] == d and x["config"] == config), None)
                if s is None:
                    cells += ["", "", ""] if chooses else ["", ""]
                    continue
                if chooses:
                    cells.append(f"{100 * s['val_accuracy_mean']:.2f} ± {100 * s['val_accuracy_std']:.2f}%")
                cells += [f"{100 * s['test_accuracy_mean']:.2f} ± {100 * s['test_accuracy_std']:.2f}%",
                          f"{100 * s['train_val_gap_mean']:+.2f} pp"]
                times.append(s)
            epoch = " / ".join(f"{t['epoch_time_s_mean']:.3f} s" for t in times)
            run = " / ".join(f"{t['wall_time_s_mean']:.1f} s" for t in times)
            print(f"| {config} | {' | '.join(cells)} | {epoch} | {run} |")


def make_specs(names, datasets, seeds, epochs, backend, data_dir, results: Path, force: bool, done: set,
               limit: int | None = None) -> list[dict]:
    commit = git_commit()
    specs = []
    # the plain recipe (no augmentation, no dropout) unless an experiment varies them
    defaults = {"backend": backend, "epochs": epochs, "augment": "none", "dropout": 0.0, "label_smoothing": 0.0,
                **({"limit": limit} if limit else {})}
    for name in names:
        for dataset in datasets:
            for config, overrides in EXPERIMENTS[name]:
                for seed in range(seeds):
                    key = _key({"experiment": name, "dataset": dataset, "config": config, "seed": seed,
                                "epochs": overrides.get("epochs", epochs), "limit": overrides.get("limit", limit)})
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

    ``on_result(row)`` is called as each run finishes (its worker has appended it to the CSV)."""
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
        with joblib.parallel_config(backend="loky", inner_max_num_threads=threads):
            return collect(joblib.Parallel(n_jobs=jobs, return_as="generator_unordered"))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
