"""A sweep's results: ``experiments.csv`` read and appended (rows cut mid-write left out), the
summary per configuration (mean and std over seeds), the figure per experiment and dataset, and
Markdown tables for REPORT.md."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from fastnn.common.io import NotARegularFile, open_regular, read_history, write_csv_rows

FIELDS = ["experiment", "dataset", "config", "seed", "backend", "epochs", "limit", "test_limit", "status",
          "train_accuracy",
          "train_loss",
          "val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_epoch", "epoch_time_s", "wall_time_s",
          "git_commit", "run_dir", "error",
          # the robustness experiment's (fastnn.training.sweeps.ROBUSTNESS): empty for the others
          "val_corrupted_accuracy", "test_corrupted_accuracy", "test_heldout_corrupted_accuracy", "test_error_gap",
          "test_heldout_error_gap"]
CORRUPTION_FIELDS = FIELDS[-5:]


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


def summarize(rows: list[dict], experiment: str, order) -> list[dict]:
    """Mean and std (over seeds) per dataset and configuration, completed runs only, in the grid's
    order (``order``: the experiment's configuration names)."""
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
            for field in CORRUPTION_FIELDS:
                vals = np.array([float(r[field]) for r in runs if r.get(field) not in ("", None)])
                if vals.size:
                    summary[f"{field}_mean"] = float(vals.mean())
                    summary[f"{field}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
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


def _print_robustness(name: str, summary: list[dict]) -> None:
    """The robustness experiment's table: chosen on the validation columns, then the test ones."""
    def pm(s, field, points=False):
        return f"{100 * s[field + '_mean']:.2f} ± {100 * s[field + '_std']:.2f}" + (" points" if points else "%")

    print(f"\n{name} ({summary[0]['runs']} seeds, {summary[0]['epochs']} epochs, backend {summary[0]['backend']}):\n")
    print("| configuration | dataset | val accuracy | val accuracy under the trained kinds' corruptions "
          "| test accuracy | test gap, all kinds | test gap, held-out kinds | epoch time |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['config']} | {s['dataset']} | {pm(s, 'val_accuracy')} | {pm(s, 'val_corrupted_accuracy')} | "
              f"{pm(s, 'test_accuracy')} | {pm(s, 'test_error_gap', True)} | {pm(s, 'test_heldout_error_gap', True)} | "
              f"{s['epoch_time_s_mean']:.3f} s |")


def print_markdown(rows: list[dict], grids: dict) -> None:
    """The summaries as Markdown tables, one per experiment (``grids``: name -> its configuration
    names, in order), both datasets side by side."""
    for name, order in grids.items():
        summary = summarize(rows, name, order)
        if not summary:
            continue
        if "val_corrupted_accuracy_mean" in summary[0]:
            _print_robustness(name, summary)
            continue
        datasets = list(dict.fromkeys(s["dataset"] for s in summary))
        chooses = name in ("augmentation", "recipe", "averaging")     # chosen on validation: show it first
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
