"""pytest-benchmark suite: kept out of the default test run.

    pytest benchmarks --benchmark-only        # time everything; prints ratio tables at the end
    pytest benchmarks --benchmark-disable     # run each benchmark once (CI smoke test)

Needs real MNIST (FASTNN_DATA_DIR=../shared/data, or it is downloaded). Threads: run with
OMP_NUM_THREADS set to the core count (2 here) so that numba, OpenMP, BLAS and torch each use
that many threads and never more.
"""
from __future__ import annotations

import statistics

import pytest

from fastnn.data.datasets import load_dataset

# results[(group, name)] = {median_s, min_s, ...}, filled by the benchmarks, printed at the end:
# times as ratios to torch (epochs) or to numpy's BLAS (GFLOP/s), since on shared machines
# absolute times drift while ratios measured in one run hold
RESULTS: dict[tuple[str, str], dict] = {}


# Training first: measured after the ~80 kernel benchmarks, the fused epochs came out ~25%
# slower (0.35 x torch instead of 0.28 in the same session; REPORT.md), so the headline
# numbers are taken while the process is fresh, and the kernels after them.
FILE_ORDER = ["test_training.py", "test_inference.py", "test_grid.py", "test_gemm.py", "test_kernels.py",
              "test_startup.py"]


def _file_rank(item) -> int:
    name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
    return FILE_ORDER.index(name) if name in FILE_ORDER else len(FILE_ORDER)


def pytest_collection_modifyitems(config, items):
    opts = config.option
    if any("benchmarks" in item.nodeid.split("/")[0] for item in items):
        items.sort(key=lambda item: ("benchmarks" in item.nodeid.split("/")[0], _file_rank(item)))
    if getattr(opts, "benchmark_only", False) or getattr(opts, "benchmark_disable", False):
        return
    skip = pytest.mark.skip(reason="benchmarks run with: pytest benchmarks --benchmark-only "
                                   "(or --benchmark-disable for a one-shot smoke run)")
    for item in items:
        if "benchmarks" in item.nodeid.split("/")[0]:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_train():
    try:
        return load_dataset("mnist", "train")
    except Exception as exc:  # noqa: BLE001 - any data problem skips the benchmarks with its reason
        pytest.skip(f"real MNIST unavailable: {exc}")


def record(benchmark, group: str, name: str, **extra) -> None:
    """Keep the median (when timing is on) for the ratio tables."""
    stats = getattr(benchmark, "stats", None)
    if stats is None or getattr(benchmark, "disabled", False):
        return
    RESULTS[(group, name)] = {"median_s": stats.stats.median, "min_s": stats.stats.min, **extra}
    benchmark.extra_info.update(extra)


def record_result(group: str, name: str, median_s: float, min_s: float, **extra) -> None:
    """Keep one entry measured by the test itself (e.g. the interleaved epochs) for the ratio tables;
    ``extra`` may hold gflops, p99_s (latency) and images_per_s (throughput)."""
    RESULTS[(group, name)] = {"median_s": median_s, "min_s": min_s, **extra}


def _fmt(seconds: float) -> str:
    return f"{1e6 * seconds:8.1f} us" if seconds < 1e-3 else f"{1e3 * seconds:8.1f} ms"


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    from fastnn.speed.machine import summary_lines

    tr.write_sep("-", "fastnn benchmark: machine")
    for line in summary_lines():
        tr.write_line(line)
    groups = sorted({g for g, _ in RESULTS})
    for group in groups:
        rows = {n: r for (g, n), r in RESULTS.items() if g == group}
        tr.write_sep("-", f"fastnn benchmark: {group}")
        for name, r in rows.items():
            label = "p50" if "p99_s" in r else "median"
            line = f"{name:>11}  {label} {_fmt(r['median_s'])}  (min {_fmt(r['min_s'])})"
            if "gflops" in r:
                line += f"  {r['gflops']:7.1f} GFLOP/s"
            if "p99_s" in r:
                line += f"  p99 {_fmt(r['p99_s'])}"
            if "images_per_s" in r:
                line += f"  {r['images_per_s']:11,.0f} images/s (best)"
            if group.startswith("inference") and "onnxruntime" in rows and name != "onnxruntime":
                base = rows["onnxruntime"]
                if "images_per_s" in r:
                    line += (f"  {r['images_per_s'] / base['images_per_s']:5.2f} x onnxruntime's throughput "
                             f"(medians {base['median_s'] / r['median_s']:.2f})")
                else:
                    line += (f"  p50 {r['median_s'] / base['median_s']:5.2f} x onnxruntime's "
                             f"(p99 {r['p99_s'] / base['p99_s']:.2f})")
            if group.startswith(("epoch", "grid epoch")):
                for ref in ("torch", "jax-scan"):
                    if ref in rows and name != ref:
                        base = rows[ref]
                        line += (f"  {r['median_s'] / base['median_s']:5.2f} x {ref} "
                                 f"(mins {r['min_s'] / base['min_s']:.2f})")
            plain = name.removesuffix("-augment")
            if group.startswith("epoch") and plain != name and plain in rows:
                # each round runs the two one after the other: the median of the rounds' ratios
                # is steadier on a noisy machine than the ratio of the medians
                paired = [a / b for a, b in zip(r.get("times_s", []), rows[plain].get("times_s", []))]
                line += (f"  {r['median_s'] / rows[plain]['median_s']:5.3f} x {plain} without augmentation"
                         + (f" (per round: median {statistics.median(paired):.3f}, mins "
                            f"{r['min_s'] / rows[plain]['min_s']:.3f})" if paired else ""))
            if "of_best_blas" in r:
                line += f"  {100 * r['of_best_blas']:5.1f}% of the best BLAS in the run"
            if "matmul" in group and "gflops" in r and name != "numpy" and "numpy" in rows:
                line += f"  {100 * r['gflops'] / rows['numpy']['gflops']:5.1f}% of numpy's BLAS"
            tr.write_line(line)
