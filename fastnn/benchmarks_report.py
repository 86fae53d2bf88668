"""``python -m fastnn.benchmarks_report RESULTS.json``: figures from a saved pytest-benchmark run.

    OMP_NUM_THREADS=2 python -m pytest benchmarks --benchmark-only --benchmark-json=RESULTS.json
    OMP_NUM_THREADS=2 python -m fastnn.benchmarks_report RESULTS.json

writes ``plots/benchmark_kernels.png`` (median time per kernel and size, per backend, log
scale), ``plots/benchmark_epoch.png`` (one MNIST epoch per backend, as a ratio to torch) and
``plots/roofline.png``: achieved GFLOP/s of each backend's matmuls and training step against
this machine's ceilings, which the command measures itself (run it on the machine that ran
the benchmarks, with the same thread settings):

- compute: the best float32 GEMM rate numpy's BLAS reaches (2048 x 2048 x 2048, best of 5);
- memory: the best copy bandwidth of a 256 MB array (read + write bytes, best of 5).

A point's arithmetic intensity is its FLOP count over the bytes it must at least move
(inputs and outputs once, float32); for a training step, the parameters five times (read
forward, read backward, gradient write, optimizer read + write) and the activations three.
It also prints the numbers behind the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BACKEND_ORDER = ["reference", "numpy", "numba-kernels", "numba", "cython", "torch"]
COLORS = {"reference": "tab:gray", "numpy": "tab:blue", "numba-kernels": "tab:cyan", "numba": "tab:orange",
          "cython": "tab:green", "torch": "tab:red"}
LAYERS = [784, 128, 64, 10]


def measure_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GEMM rate of numpy's BLAS on this machine, GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def measure_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best copy bandwidth (bytes read + written) of a large float32 array, GB/s."""
    src = np.ones(megabytes * 2 ** 20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def load_results(path) -> list[dict]:
    """The benchmarks of a pytest-benchmark JSON file, each with group, name, median/min seconds, extra_info.

    Raises:
        ValueError: the file is not a pytest-benchmark JSON (names the file and what is missing).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read a JSON file ({exc})") from exc
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path}: no 'benchmarks' list; make it with pytest --benchmark-only --benchmark-json={path}")
    rows = []
    for b in data["benchmarks"]:
        extra = b.get("extra_info", {})
        rows.append({"group": b.get("group") or "", "name": b["name"], "median_s": b["stats"]["median"],
                     "min_s": b["stats"]["min"], "backend": extra.get("backend"), **extra})
    if not rows:
        raise ValueError(f"{path}: the run has no timed benchmarks (was it run with --benchmark-disable?)")
    return rows


def _order(backends):
    return sorted(set(backends), key=lambda b: BACKEND_ORDER.index(b) if b in BACKEND_ORDER else 99)


def plot_kernels(rows, path) -> None:
    from .plotting import plt, save_figure

    kernel_rows = [r for r in rows if r.get("kernel")]
    groups = list(dict.fromkeys(r["group"] for r in kernel_rows))
    backends = _order(r["backend"] for r in kernel_rows)
    fig, ax = plt.subplots(figsize=(max(10, 0.9 * len(groups)), 5.5))
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        xs, ys = [], []
        for g, group in enumerate(groups):
            for r in kernel_rows:
                if r["group"] == group and r["backend"] == backend:
                    xs.append(g + (i - (len(backends) - 1) / 2) * width)
                    ys.append(1e6 * r["median_s"])
        ax.bar(xs, ys, width, label=backend, color=COLORS.get(backend))
    ax.set_yscale("log")
    ax.set_ylabel("median time per call (µs, log scale)")
    ax.set_xticks(range(len(groups)))
    short = {"softmax_cross_entropy_backward": "xent_bwd", "softmax_cross_entropy": "xent", "relu_backward": "relu_bwd"}

    def label(group: str) -> str:
        for long, abbrev in short.items():
            group = group.replace(long, abbrev)
        return group.replace(" (small: reference)", " (small)").replace(" @ ", "@")

    ax.set_xticklabels([label(g) for g in groups], fontsize=8, rotation=35, ha="right")
    ax.legend(ncol=len(backends), fontsize=8)
    ax.set_title("Kernels per backend (float32; reference only at small sizes; xent = softmax cross-entropy)",
                 fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    save_figure(fig, path)


def plot_epoch(rows, path) -> list[tuple[str, float, float]]:
    """Bar chart of the epoch benchmark; returns (backend, median s, ratio to torch)."""
    from .plotting import plt, save_figure

    epoch = {r["backend"]: r for r in rows if r["group"].startswith("epoch")}
    if not epoch:
        raise ValueError("the results have no epoch benchmark (benchmarks/test_training.py::test_epoch)")
    backends = _order(epoch)
    base = epoch.get("torch", epoch[backends[0]])["median_s"]
    table = [(b, epoch[b]["median_s"], epoch[b]["median_s"] / base) for b in backends]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(backends, [m for _, m, _ in table], color=[COLORS.get(b) for b in backends])
    err = [[m - epoch[b]["min_s"] for b, m, _ in table], [0] * len(table)]
    ax.errorbar(backends, [m for _, m, _ in table], yerr=err, fmt="none", ecolor="black", capsize=3)
    for bar, (_, m, ratio) in zip(bars, table):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{m:.3f} s\n{ratio:.2f}x torch",
                ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds per epoch (median; bar down to the min)")
    ax.set_ylim(0, max(m for _, m, _ in table) * 1.3)
    ax.set_title("One MNIST epoch (60,000 samples, batch 64, 784-128-64-10, SGD momentum)", fontsize=10)
    save_figure(fig, path)
    return table


def _intensity(r) -> float | None:
    """FLOP per byte that must move at least once (float32)."""
    if r.get("kernel") == "matmul" or r["group"].startswith("matmul vs BLAS"):
        m, k, n = r.get("size") or _shape_from_group(r["group"])
        return 2 * m * k * n / (4 * (m * k + k * n + m * n))
    if r["group"].startswith("training step") or r["group"].startswith("epoch"):
        params = sum(a * b + b for a, b in zip(LAYERS[:-1], LAYERS[1:]))
        step_flop = r["flop"] if r["group"].startswith("training step") else r["flop"] / -(-60000 // 64)
        return step_flop / (4 * (5 * params + 3 * 64 * sum(LAYERS)))
    return None


def _shape_from_group(group: str):
    dims = group.split()[-3:]                   # "... 64x784 @ 784x128"
    m, k = map(int, dims[0].split("x"))
    n = int(dims[2].split("x")[1])
    return m, k, n


def plot_roofline(rows, peak: float, bandwidth: float, path) -> list[tuple[str, str, float, float]]:
    """Roofline plot; returns (what, backend, intensity, GFLOP/s) per point."""
    from .plotting import plt, save_figure

    points = []
    for r in rows:
        if "gflops" not in r or r["backend"] is None:
            continue
        if not (r.get("kernel") == "matmul" or r["group"].startswith(("training step", "epoch"))):
            continue
        ai = _intensity(r)
        if ai:
            points.append((r["group"], r["backend"], ai, r["gflops"]))
    fig, ax = plt.subplots(figsize=(9, 6))
    xs = np.logspace(-1, 3, 200)
    ax.plot(xs, np.minimum(peak, bandwidth * xs), color="black", lw=2)
    ax.text(xs[-1], peak * 1.08, f"sgemm peak {peak:.0f} GFLOP/s (numpy BLAS, measured)", ha="right", fontsize=8)
    ax.text(0.12, bandwidth * 0.12 * 1.5, f"memory {bandwidth:.0f} GB/s (copy, measured)", fontsize=8, rotation=28)
    markers = {"matmul": "o", "training step": "s", "epoch": "D"}
    for what, backend, ai, gflops in points:
        kind = "epoch" if what.startswith("epoch") else "training step" if what.startswith("training") else "matmul"
        ax.scatter(ai, gflops, color=COLORS.get(backend, "black"), marker=markers[kind], s=36, zorder=3,
                   edgecolors="black", linewidths=0.4)
    for backend in _order(p[1] for p in points):
        ax.scatter([], [], color=COLORS.get(backend), marker="o", label=backend)
    for kind, m in markers.items():
        ax.scatter([], [], color="white", edgecolors="black", marker=m, label=kind)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved at least once)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("Roofline: matmuls (all sizes) and training steps / epochs (dense-equivalent FLOPs)", fontsize=10)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    ax.grid(which="both", alpha=0.3)
    save_figure(fig, path)
    return points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.benchmarks_report",
        description="Turn a pytest-benchmark JSON (pytest benchmarks --benchmark-only --benchmark-json=FILE) into "
                    "plots/benchmark_kernels.png, plots/benchmark_epoch.png and plots/roofline.png; measures this "
                    "machine's sgemm peak and memory bandwidth for the roofline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results", help="the JSON file pytest-benchmark wrote")
    p.add_argument("--plots-dir", default="plots")
    args = p.parse_args(argv)
    try:
        rows = load_results(args.results)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.plots_dir)
    print("measuring this machine's ceilings ...")
    peak, bandwidth = measure_peak_gflops(), measure_bandwidth_gbs()
    print(f"sgemm peak (numpy BLAS, 2048^3 float32, best of 5): {peak:.1f} GFLOP/s")
    print(f"memory bandwidth (256 MB copy, best of 5): {bandwidth:.1f} GB/s")
    plot_kernels(rows, out / "benchmark_kernels.png")
    try:
        table = plot_epoch(rows, out / "benchmark_epoch.png")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\none MNIST epoch (median):")
    for backend, median, ratio in table:
        print(f"  {backend:>14s}  {median:8.3f} s  {ratio:5.2f} x torch")
    points = plot_roofline(rows, peak, bandwidth, out / "roofline.png")
    print("\nroofline points (GFLOP/s, share of the sgemm peak):")
    for what, backend, ai, gflops in sorted(points, key=lambda p: (p[0], p[1])):
        print(f"  {what:<42s} {backend:>14s}  AI {ai:7.2f}  {gflops:8.2f} GFLOP/s  {100 * gflops / peak:5.1f}%")
    print(f"\nwrote {out / 'benchmark_kernels.png'}, {out / 'benchmark_epoch.png'}, {out / 'roofline.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
