"""How the cost of training grows with batch size, width and threads: ``write_scaling`` behind
``python -m fastnn.scaling``.

For each backend (default numpy, numba, cython, torch) and each thread count (1 and 2), a fresh
Python process (thread pools are fixed at start-up: ``OMP_NUM_THREADS`` and
``NUMBA_NUM_THREADS`` are set for it) times training on the first ``--samples`` MNIST
images with the trainer the main job uses:

- batch size 16 .. 1024 at 784-128-64-10;
- hidden width H = 64 .. 1024 (layers 784-H-H/2-10) at batch 64.

Each point is the best of ``--repeats`` passes after a warm-up pass, reported as the time of a
60,000-sample epoch (seconds per sample x 60,000). Writes ``scaling_batch.png`` and
``scaling_width.png`` into ``--plots-dir`` and ``scaling.csv`` (``--csv``), by default into a new
folder under ``runs/`` (the committed ones: ``--plots-dir plots --csv profiles/scaling.csv``);
runs one configuration at a time, so the measurements do not compete for the cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fastnn.common.cli import new_run_folder
from fastnn.common.errors import UserError
from fastnn.common.io import write_csv_rows

BATCHES = [16, 32, 64, 128, 256, 512, 1024]
WIDTHS = [64, 128, 256, 512, 1024]
EPOCH = 60_000


def measure(backend: str, samples: int, repeats: int, data_dir) -> list[dict]:
    """In this process: seconds per 60,000-sample epoch for every batch size and width."""
    from fastnn.data.datasets import load_dataset
    from fastnn.model.network import NeuralNetwork
    from fastnn.training.factory import make_trainer
    from fastnn.training.optim import make_optimizer

    data = load_dataset("mnist", "train", data_dir).subset(slice(0, samples))
    results = []

    def time_config(layers, batch, kind, value):
        model = NeuralNetwork(layers, backend=backend, seed=0)
        trainer = make_trainer(model, make_optimizer("momentum", model, 0.01), data, log=lambda *a: None)
        rng = np.random.default_rng(0)
        best = float("inf")
        for rep in range(repeats + 1):                   # pass 0 warms up (compilation, caches)
            order = rng.permutation(len(data))
            t0 = time.perf_counter()
            trainer.run_epoch(order, batch)
            if rep:
                best = min(best, time.perf_counter() - t0)
        results.append({"backend": backend, "threads": int(os.environ.get("OMP_NUM_THREADS", 0)), "sweep": kind,
                        "value": value, "epoch_s": best / len(data) * EPOCH})

    for batch in BATCHES:
        time_config([784, 128, 64, 10], batch, "batch", batch)
    for width in WIDTHS:
        time_config([784, width, width // 2, 10], 64, "width", width)
    return results


def run_all(backends, threads_list, samples, repeats, data_dir, log=print) -> list[dict]:
    rows = []
    for threads in threads_list:
        for backend in backends:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
                   "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
            cmd = [sys.executable, "-m", "fastnn.scaling", "--worker", backend, "--samples", str(samples),
                   "--repeats", str(repeats)] + (["--data-dir", str(data_dir)] if data_dir else [])
            log(f"measuring {backend} with {threads} thread(s) ...")
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
                raise UserError(f"measuring {backend} with {threads} thread(s) failed: {last}")
            rows += json.loads(res.stdout.strip().splitlines()[-1])
            log(f"  done in {time.perf_counter() - t0:.0f} s")
    return rows


def plot(rows, kind: str, path, xlabel: str, title: str) -> None:
    from fastnn.common.plotting import COLORS, plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 5))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for threads, style in ((2, "-"), (1, "--")):
            pts = sorted((r["value"], r["epoch_s"]) for r in rows
                         if r["backend"] == backend and r["sweep"] == kind and r["threads"] == threads)
            if pts:
                ax.plot(*zip(*pts), style, marker="o", color=COLORS.get(backend), ms=4,
                        label=f"{backend}, {threads} thread{'s' if threads > 1 else ''}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds per 60,000-sample epoch (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)

def write_scaling(backends, threads, samples: int, repeats: int, data_dir=None, plots_dir=None, csv=None,
                  log=print) -> int:
    """The sweep behind ``python -m fastnn.scaling``: every point of ``run_all``, written as a CSV
    (``csv``) and two figures (into ``plots_dir``; both default to a new folder under runs/), and
    printed as a table. Returns 0."""
    if plots_dir is None or csv is None:
        folder = new_run_folder("scaling")
        plots_dir = plots_dir or str(folder)
        csv = csv or str(folder / "scaling.csv")
    rows = run_all(backends, threads, samples, repeats, data_dir)
    write_csv_rows(rows, csv)
    out = Path(plots_dir)
    plot(rows, "batch", out / "scaling_batch.png", "batch size",
         "Epoch time against batch size (784-128-64-10; solid 2 threads, dashed 1)")
    plot(rows, "width", out / "scaling_width.png", "hidden width H (layers 784-H-H/2-10, batch 64)",
         "Epoch time against hidden width (solid 2 threads, dashed 1)")
    log(f"{'backend':>8s} {'thr':>3s} {'sweep':>6s} {'value':>6s} {'epoch s':>9s}")
    for r in rows:
        log(f"{r['backend']:>8s} {r['threads']:3d} {r['sweep']:>6s} {r['value']:6d} {r['epoch_s']:9.3f}")
    log(f"wrote {csv}, {out / 'scaling_batch.png'}, {out / 'scaling_width.png'}")
    return 0
