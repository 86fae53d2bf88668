"""The report commands: ``python -m fastnn.benchmarks_report`` on a small pytest-benchmark JSON it
did not make, and ``python -m fastnn.scaling``'s worker and plots."""
from __future__ import annotations

import json

import pytest

from fastnn import benchmarks_report
from fastnn.speed import machine as speed_machine
from fastnn.speed import report as speed_report
from fastnn.speed import scaling


def _bench(group, name, median, **extra):
    return {"group": group, "name": name, "stats": {"median": median, "min": 0.9 * median}, "extra_info": extra}


def fake_results(tmp_path):
    benches = [
        _bench("epoch (60,000 MNIST samples), interleaved", "test_epoch", 1.65, flop=2.6e10, interleaved={
            "torch": {"median_s": 0.9, "min_s": 0.8, "gflops": 29.0},
            "numba": {"median_s": 0.25, "min_s": 0.2, "gflops": 104.0},
            "jax-scan": {"median_s": 0.5, "min_s": 0.45, "gflops": 52.0}}),
        _bench("training step (batch 64)", "test_step[numba]", 3e-4, backend="numba", flop=2.8e7, gflops=93.0),
        _bench("matmul 64x784 @ 784x128", "test_matmul[numba-64x784x128]", 1.2e-4, backend="numba",
               kernel="matmul", size=[64, 784, 128], flop=12845056, gflops=107.0),
        _bench("matmul 64x784 @ 784x128", "test_matmul[numpy-64x784x128]", 0.9e-4, backend="numpy",
               kernel="matmul", size=[64, 784, 128], flop=12845056, gflops=142.0),
        _bench("relu 64x128", "test_relu[numpy-64x128]", 5e-6, backend="numpy", kernel="relu", size=[64, 128]),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benches}))
    return path


def test_benchmarks_report_writes_three_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(speed_report, "measure_sgemm_peaks", lambda: {"numpy (OpenBLAS)": 150.0,
                                                                           "ONNX Runtime (MLAS)": 170.0})
    monkeypatch.setattr(speed_report, "measure_fma_peak", lambda threads: 200.0)  # keep the test fast
    monkeypatch.setattr(speed_report, "measure_bandwidth_gbs", lambda: 30.0)
    code = benchmarks_report.main([str(fake_results(tmp_path)), "--plots-dir", str(tmp_path / "plots")])
    assert code == 0
    for name in ("benchmark_kernels.png", "benchmark_epoch.png", "roofline.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "machine:" in out and "FMA loop" in out and "ONNX Runtime (MLAS): 170.0" in out
    assert "0.28 x torch   0.50 x jax-scan" in out
    assert "62.9%   53.5%" in out                     # 107 GFLOP/s against the best sgemm (170) and the FMA limit


def test_benchmarks_report_names_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "benchmarks"}')
    assert benchmarks_report.main([str(bad), "--plots-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "--benchmark-json" in err


def test_measured_ceilings_are_plausible():
    peaks = speed_machine.measure_sgemm_peaks(n=256, repeats=2)
    assert peaks["numpy (OpenBLAS)"] > 0.1 and all(v > 0.1 for v in peaks.values())
    assert speed_machine.measure_bandwidth_gbs(megabytes=8, repeats=2) > 0.1
    fma = speed_machine.measure_fma_peak(1, seconds=0.05)
    assert fma is None or fma > 0.5                   # None only without the compiled Cython kernels


def test_machine_names_cpu_isa_and_blas():
    from fastnn.speed import machine

    lines = machine.summary_lines()
    assert lines[0].startswith("machine: ") and machine.isa_level() in lines[0] and "BLAS:" in lines[0]
    assert "numpy" in lines[1]


@pytest.mark.slow
def test_scaling_worker_measures_every_point(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(scaling, "BATCHES", [32, 64])
    monkeypatch.setattr(scaling, "WIDTHS", [64, 128])
    rows = scaling.measure("numpy", samples=256, repeats=1, data_dir=mnist_dir)
    assert [(r["sweep"], r["value"]) for r in rows] == [("batch", 32), ("batch", 64), ("width", 64), ("width", 128)]
    assert all(r["epoch_s"] > 0 for r in rows)
    scaling.plot(rows, "batch", tmp_path / "b.png", "batch size", "t")
    assert (tmp_path / "b.png").exists()


def test_plot_epoch_draws_trainers_without_their_own_colour(tmp_path):
    """A trainer the colour table does not know (the augmented runs once were) still gets a bar."""
    from fastnn.speed.report import plot_epoch

    rows = [{"group": "epoch (60,000 MNIST samples)", "backend": b, "median_s": m, "min_s": m}
            for b, m in (("torch", 0.4), ("jax-scan", 0.16), ("numba-augment", 0.09), ("a-new-trainer", 0.1))]
    table = plot_epoch(rows, tmp_path / "epoch.png")
    assert (tmp_path / "epoch.png").stat().st_size > 0 and len(table) == 4
