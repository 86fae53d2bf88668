"""Figures from a saved pytest-benchmark run: ``write_report`` behind ``python -m fastnn.benchmarks_report``.

    OMP_NUM_THREADS=2 python -m pytest benchmarks --benchmark-only --benchmark-json=RESULTS.json
    OMP_NUM_THREADS=2 python -m fastnn.benchmarks_report RESULTS.json

writes, into ``--plots-dir`` (default ``<results>-plots`` beside the JSON; the committed ones:
``--plots-dir plots``), ``benchmark_kernels.png`` (median time per kernel and size, per backend,
log scale), ``benchmark_epoch.png`` (one MNIST epoch per trainer, as a ratio to torch and to
JAX) and ``roofline.png``: achieved GFLOP/s of each backend's matmuls and training
steps against this machine's ceilings, which the command measures itself (run it on the
machine that ran the benchmarks, with the same thread settings):

- arithmetic: fastnn's own FMA-throughput loop (``fastnn/backends/cython/fma_peak.h``: independent fused
  multiply-adds on the widest vectors the compiler targets) on every thread at once;
- practical sgemm: the best float32 GEMM rate (2048^3, best of 5) of every BLAS at hand:
  numpy's (OpenBLAS), torch's, JAX's (XLA) and ONNX Runtime's (MLAS), each named;
- memory: the best copy bandwidth of a 256 MB array (read + write bytes, best of 5).

One library alone is no ceiling: OpenBLAS may not recognise a new CPU and run older kernels
(``fastnn.speed.machine.blas_kernel_mismatch``); ``--coretypes`` also times numpy's sgemm under
each ``OPENBLAS_CORETYPE`` worth trying on this CPU, in fresh processes.

A point's arithmetic intensity is its FLOP count over the bytes it must at least move
(inputs and outputs once, float32); for a training step, the parameters five times (read
forward, read backward, gradient write, optimizer read + write) and the activations three.
It also prints the numbers behind the figures.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastnn.backends import omp_threads
from fastnn.common.errors import UserError
from fastnn.common.io import open_regular
from fastnn.speed.grid import plot_grid
from fastnn.speed.machine import (
    blas_kernel_mismatch,
    measure_bandwidth_gbs,
    measure_coretypes,
    measure_fma_peak,
    measure_sgemm_peaks,
    summary_lines,
)

BACKEND_ORDER = ["reference", "numpy", "numba-kernels", "numba", "numba-timers", "cython", "cython-timers", "torch",
                 "jax-step", "jax-scan", "onnxruntime"]
LAYERS = [784, 128, 64, 10]


def load_results(path) -> list[dict]:
    """The benchmarks of a pytest-benchmark JSON file, each with group, name, median/min seconds, extra_info.

    Raises:
        ValueError: the file is not a pytest-benchmark JSON (names the file and what is missing).
    """
    path = Path(path)
    try:
        with open_regular(path, "r", encoding="utf-8") as f:
            data = json.loads(f.read())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read a JSON file ({exc})") from exc
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path}: no 'benchmarks' list; make it with pytest --benchmark-only --benchmark-json={path}")
    rows = []
    for b in data["benchmarks"]:
        extra = b.get("extra_info", {})
        if "interleaved" in extra:                # one test timed every trainer, round by round
            group = (b.get("group") or "").replace(", interleaved", "")
            for name, r in extra["interleaved"].items():
                rows.append({"flop": extra.get("flop"), **r, "group": group, "name": f"{b['name']}[{name}]",
                             "backend": name})
            continue
        rows.append({"group": b.get("group") or "", "name": b["name"], "median_s": b["stats"]["median"],
                     "min_s": b["stats"]["min"], "backend": extra.get("backend"), **extra})
    if not rows:
        raise ValueError(f"{path}: the run has no timed benchmarks (was it run with --benchmark-disable?)")
    return rows


def _order(backends):
    return sorted(set(backends), key=lambda b: BACKEND_ORDER.index(b) if b in BACKEND_ORDER else 99)


def plot_kernels(rows, path) -> None:
    from fastnn.common.plotting import COLORS, plt, save_figure

    kernel_rows = [r for r in rows if r.get("kernel")]
    if not kernel_rows:
        raise ValueError("no kernel benchmarks in the run")
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


def plot_epoch(rows, path) -> list[tuple[str, float, float, float | None]]:
    """Bar chart of the epoch benchmark; returns (trainer, median s, ratio to torch, ratio to jax-scan)."""
    from fastnn.common.plotting import COLORS, plt, save_figure

    epoch = {r["backend"]: r for r in rows if r["group"].startswith("epoch")}
    if not epoch:
        raise ValueError("the results have no epoch benchmark (benchmarks/test_training.py::test_epoch)")
    names = _order(epoch)
    base = epoch.get("torch", epoch[names[0]])["median_s"]
    jax = epoch["jax-scan"]["median_s"] if "jax-scan" in epoch else None
    table = [(b, epoch[b]["median_s"], epoch[b]["median_s"] / base, epoch[b]["median_s"] / jax if jax else None)
             for b in names]
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(names)), 4.5))
    bars = ax.bar(names, [m for _, m, _, _ in table], color=[COLORS.get(b, "tab:gray") for b in names])
    err = [[m - epoch[b]["min_s"] for b, m, _, _ in table], [0] * len(table)]
    ax.errorbar(names, [m for _, m, _, _ in table], yerr=err, fmt="none", ecolor="black", capsize=3)
    for bar, (_, m, ratio, to_jax) in zip(bars, table):
        text = f"{m:.3f} s\n{ratio:.2f}x torch" + (f"\n{to_jax:.2f}x jax-scan" if to_jax else "")
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), text, ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per epoch (median, log; bar down to the min)")
    ax.set_ylim(min(m for _, m, _, _ in table) * 0.5, max(m for _, m, _, _ in table) * 4)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    from fastnn.speed.machine import cpu_info, isa_level

    ax.set_title(f"One MNIST epoch (60,000 samples, batch 64, 784-128-64-10, SGD momentum)\n"
                 f"{cpu_info()['cpu']}, {cpu_info()['cores']} cores, {isa_level()}", fontsize=9)
    save_figure(fig, path)
    return table


INFERENCE_GROUPS = {"latency": "inference latency (batch 1)", "throughput": "inference throughput (10,000 test images)"}


def inference_group(kind: str, dataset: str = "mnist") -> str:
    """The benchmark group of ``kind`` ("latency" or "throughput") for the shipped ``dataset`` model
    (MNIST's is the headline, without a suffix)."""
    return INFERENCE_GROUPS[kind] + ("" if dataset == "mnist" else f", {dataset} model")


def inference_table(rows, dataset: str = "mnist") -> list[tuple[str, float, float | None, float | None, float | None]]:
    """(entry, batch-1 p50 s, images/s, p50 / ORT's, images/s / ORT's) from the inference
    benchmarks of the shipped ``dataset`` model."""
    latency = {r["backend"]: r for r in rows if r["group"] == inference_group("latency", dataset)}
    throughput = {r["backend"]: r for r in rows if r["group"] == inference_group("throughput", dataset)}
    ort_lat, ort_thr = latency.get("onnxruntime"), throughput.get("onnxruntime")
    table = []
    for name in dict.fromkeys([*latency, *throughput]):
        lat, thr = latency.get(name), throughput.get(name)
        table.append((name, lat["median_s"] if lat else None, thr["images_per_s"] if thr else None,
                      lat["median_s"] / ort_lat["median_s"] if lat and ort_lat else None,
                      thr["images_per_s"] / ort_thr["images_per_s"] if thr and ort_thr else None))
    return table


def _intensity(r) -> float | None:
    """FLOP per byte that must move at least once (float32)."""
    if r["group"].startswith("inference throughput"):
        params = sum(a * b + b for a, b in zip(LAYERS[:-1], LAYERS[1:]))
        return r["flop"] / (4 * (params + r["images"] * (LAYERS[0] + LAYERS[-1])))
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


def plot_roofline(rows, ceilings: dict[str, float], bandwidth: float, path) -> list[tuple[str, str, float, float]]:
    """Roofline plot against the measured ``ceilings`` ({label: GFLOP/s}, highest first: the
    arithmetic limit, then the best sgemm) and ``bandwidth`` (GB/s); returns (what, backend,
    intensity, GFLOP/s) per point."""
    from fastnn.common.plotting import COLORS, plt, save_figure

    points = []
    for r in rows:
        if "gflops" not in r or r["backend"] is None:
            continue
        if not (r.get("kernel") == "matmul"
                or r["group"].startswith(("training step", "epoch", "inference throughput"))):
            continue
        ai = _intensity(r)
        if ai and r["group"].startswith("inference throughput"):
            # two rows per entry: dense-equivalent FLOPs, and what skipping zero pixels leaves
            points.append(("inference, dense-equivalent FLOPs", r["backend"], ai, r["gflops"]))
            if r.get("sparse_flop"):
                points.append(("inference, sparse FLOPs (non-zero pixels)", r["backend"],
                               ai * r["sparse_flop"] / r["flop"], r["sparse_gflops"]))
        elif ai:
            points.append((r["group"], r["backend"], ai, r["gflops"]))
    fig, ax = plt.subplots(figsize=(9, 6))
    xs = np.logspace(-1, 3, 200)
    for k, ((label, peak), style) in enumerate(zip(ceilings.items(), ("-", "--", ":"))):
        ax.plot(xs, np.minimum(peak, bandwidth * xs), color="black", lw=1.8, ls=style)
        above = k % 2 == 0                      # alternate above / below: close ceilings stay legible
        ax.text(xs[-1], peak * (1.06 if above else 0.94), f"{label}: {peak:.0f} GFLOP/s", ha="right",
                va="bottom" if above else "top", fontsize=8)
    ax.text(0.12, bandwidth * 0.12 * 1.5, f"memory {bandwidth:.0f} GB/s (copy, measured)", fontsize=8, rotation=28)
    markers = {"matmul": "o", "training step": "s", "epoch": "D", "inference, dense-equivalent": "^",
               "inference, sparse": "v"}
    for what, backend, ai, gflops in points:
        kind = next((k for k in markers if what.startswith(k)), "matmul")
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
    from fastnn.speed.machine import cpu_info, isa_level

    ax.set_title(f"Roofline: matmuls (all sizes), training steps / epochs (dense-equivalent FLOPs), inference "
                 f"(dense-equivalent and sparse)\n"
                 f"{cpu_info()['cpu']}, {cpu_info()['cores']} cores, {isa_level()}", fontsize=9)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    ax.grid(which="both", alpha=0.3)
    save_figure(fig, path)
    return points

def write_report(results, plots_dir=None, coretypes: bool = False, log=print) -> int:
    """The report behind ``python -m fastnn.benchmarks_report``: the figures of a pytest-benchmark
    JSON (``results``) and this machine's ceilings, measured now, into ``plots_dir`` (default
    ``<results>-plots``); ``coretypes`` also times numpy's sgemm under each OPENBLAS_CORETYPE.
    Returns 0. Raises UserError for a file that is not a pytest-benchmark JSON."""
    try:
        rows = load_results(results)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = Path(plots_dir) if plots_dir else Path(results).with_name(Path(results).stem + "-plots")
    log("\n".join(summary_lines()))
    log("\nmeasuring this machine's ceilings ...")
    threads = omp_threads()
    fma = measure_fma_peak(threads)
    sgemm = measure_sgemm_peaks()
    bandwidth = measure_bandwidth_gbs()
    if fma:
        log(f"arithmetic limit (fastnn's FMA loop, fastnn/backends/cython/fma_peak.h, {threads} threads, best of 5): "
              f"{fma:.1f} GFLOP/s")
    for lib, gflops in sorted(sgemm.items(), key=lambda kv: -kv[1]):
        log(f"sgemm 2048^3 float32, best of 5, {lib}: {gflops:.1f} GFLOP/s")
    log(f"memory bandwidth (256 MB copy, best of 5): {bandwidth:.1f} GB/s")
    if coretypes:
        log("\nnumpy's sgemm under each OPENBLAS_CORETYPE (fresh processes):")
        for coretype, arch, big, small in measure_coretypes():
            log(f"  {coretype:<12s} kernels {arch:<12s} 2048^3 {big:7.1f} GFLOP/s   "
                  f"64x128 @ 128x64 {small:6.1f} GFLOP/s")
    mismatch = blas_kernel_mismatch()
    if mismatch:
        log(f"\nnote: {mismatch}")
    best_lib, best = max(sgemm.items(), key=lambda kv: kv[1])
    ceilings = {}
    if fma:
        ceilings[f"FMA limit (fastnn's loop, {threads} threads)"] = fma
    ceilings[f"best sgemm ({best_lib})"] = best
    written = []
    try:                                                # only some benchmarks ran: plot what is there
        plot_kernels(rows, out / "benchmark_kernels.png")
        written.append(out / "benchmark_kernels.png")
    except ValueError as exc:
        log(f"\nnote: {exc}: no kernel figure")
    try:
        table = plot_epoch(rows, out / "benchmark_epoch.png")
        written.append(out / "benchmark_epoch.png")
        log("\none MNIST epoch (median):")
    except ValueError as exc:                           # only some benchmarks ran: plot what is there
        table = []
        log(f"\nnote: {exc}: no epoch figure")
    for name, median, ratio, to_jax in table:
        log(f"  {name:>14s}  {median:8.3f} s  {ratio:5.2f} x torch"
            + (f"  {to_jax:5.2f} x jax-scan" if to_jax else ""))
    for dataset in ("mnist", "fashion-mnist"):
        _log_inference(inference_table(rows, dataset), dataset, log)
    grid = [{**r, "trainer": r["backend"], "epoch_s": r["median_s"]} for r in rows
            if r["group"].startswith("grid epoch")]
    if grid:
        plot_grid(grid, out / "grid.png", best, grid[0].get("density", 0.19))
        written.append(out / "grid.png")
        log(f"\nthe shape grid (epoch of 60,000 samples, median; ratio to jax-scan; best sgemm {best:.0f} GFLOP/s):")
        for r in grid:
            jax = next((g for g in grid if g["group"] == r["group"] and g["trainer"] == "jax-scan"), None)
            log(f"  {r['sweep']:>5s} {r['value']:>5}  {r['trainer']:>8s}  {r['epoch_s']:8.3f} s"
                + (f"  {r['epoch_s'] / jax['epoch_s']:5.2f} x jax-scan" if jax and r is not jax else ""))
    points = plot_roofline(rows, ceilings, bandwidth, out / "roofline.png")
    log(f"\nroofline points (GFLOP/s; share of the best sgemm, {best:.0f} GFLOP/s"
          + (f", and of the FMA limit, {fma:.0f}" if fma else "") + "):")
    for what, backend, ai, gflops in sorted(points, key=lambda p: (p[0], p[1])):
        log(f"  {what:<42s} {backend:>14s}  AI {ai:7.2f}  {gflops:8.2f} GFLOP/s  {100 * gflops / best:5.1f}%"
              + (f"  {100 * gflops / fma:5.1f}%" if fma else ""))
    written.append(out / "roofline.png")
    log(f"\nwrote {', '.join(map(str, written))}")
    return 0

def _log_inference(table, dataset: str, log) -> None:
    if not table:
        return
    log(f"\ninference, the pretrained {dataset} model (batch-1 p50 of predict; throughput: best pass over the "
        f"10,000 test images):")
    for name, p50, ips, lat_ratio, thr_ratio in table:
        log((f"  {name:>12s}  p50 {1e6 * p50:7.1f} us" if p50 else f"  {name:>12s}  p50       -  ")
            + (f"  {ips:11,.0f} images/s" if ips else "")
            + (f"  p50 {lat_ratio:.2f} x onnxruntime" if lat_ratio and name != "onnxruntime" else "")
            + (f"  throughput {thr_ratio:.2f} x onnxruntime" if thr_ratio and name != "onnxruntime" else ""))
