"""``python -m fastnn.experiments``: tiny sweeps on real MNIST through joblib and through a local Dask
cluster, CSV rows and summaries, failures recorded without stopping the others, re-runs skipped."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fastnn import experiments
from fastnn.training import sweep_results as results
from fastnn.training import sweeps

pytestmark = pytest.mark.slow


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sweep(tmp_path, mnist_dir, *extra):
    return experiments.main(["depth", "--seeds", "2", "--epochs", "1", "--limit", "600", "--jobs", "2",
                             "--data-dir", str(mnist_dir), "--results", str(tmp_path / "results"),
                             "--plots-dir", str(tmp_path / "plots"), *extra])


def test_sweep_writes_rows_summary_and_plot_then_skips(tmp_path, mnist_dir, capsys):
    assert sweep(tmp_path, mnist_dir) == 0
    got = rows(tmp_path / "results" / "experiments.csv")
    assert len(got) == 4 and {r["config"] for r in got} == {"784-128-10", "784-128-64-10"}
    assert set(results.FIELDS) <= set(got[0]) and all(r["status"] == "completed" for r in got)
    assert all(0 < float(r["test_accuracy"]) <= 1 and r["git_commit"] for r in got)
    summary = rows(tmp_path / "results" / "depth.csv")
    assert [s["config"] for s in summary] == ["784-128-10", "784-128-64-10"] and summary[0]["runs"] == "2"
    assert (tmp_path / "plots" / "depth_mnist.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert sweep(tmp_path, mnist_dir) == 0                                   # everything is already there
    assert "0 runs to do" in capsys.readouterr().out
    assert len(rows(tmp_path / "results" / "experiments.csv")) == 4
    assert sweep(tmp_path, mnist_dir, "--force") == 0
    assert len(rows(tmp_path / "results" / "experiments.csv")) == 8


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path, mnist_dir, monkeypatch, capsys):
    monkeypatch.setitem(sweeps.EXPERIMENTS, "depth",
                        [("bad", {"hidden": [128], "lr": -1.0}), ("784-128-10", {"hidden": [128]})])
    code = experiments.main(["depth", "--seeds", "1", "--epochs", "1", "--limit", "600", "--jobs", "1",
                             "--data-dir", str(mnist_dir), "--results", str(tmp_path / "r"),
                             "--plots-dir", str(tmp_path / "p")])
    assert code == 1
    got = {r["config"]: r for r in rows(tmp_path / "r" / "experiments.csv")}
    assert got["bad"]["status"] == "failed" and "learning rate" in got["bad"]["error"]
    assert got["784-128-10"]["status"] == "completed"
    assert "failed: depth mnist bad" in capsys.readouterr().out


def test_sweep_through_a_local_dask_cluster(tmp_path, mnist_dir):
    distributed = pytest.importorskip("dask.distributed", reason="dask not installed: pip install -e '.[dask]'")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        code = experiments.main(["depth", "--seeds", "1", "--epochs", "1", "--limit", "600",
                                 "--scheduler", cluster.scheduler_address, "--data-dir", str(mnist_dir),
                                 "--results", str(tmp_path / "results"), "--plots-dir", str(tmp_path / "plots")])
    assert code == 0
    got = rows(tmp_path / "results" / "experiments.csv")
    assert len(got) == 2 and all(r["status"] == "completed" for r in got)


def test_unknown_experiment_is_refused(capsys):
    with pytest.raises(SystemExit):
        experiments.main(["no-such-thing"])
    assert "unknown experiment" in capsys.readouterr().err


@pytest.mark.parametrize("names", [[n for n in sweeps.EXPERIMENTS if n != "backend"], ["backend"]],
                         ids=["every experiment but backend", "backend"])
def test_every_named_experiment_runs_end_to_end(tmp_path, mnist_dir, names):
    """One seed, one epoch, 300 training and 500 test images (--smoke: also where an experiment fixes
    more): every configuration of every experiment completes and gets its summary and figure
    (optimizer once ended in an error after all its runs)."""
    import subprocess
    import sys

    if "backend" in names:
        pytest.importorskip("torch", reason="torch not installed: pip install torch==2.13.0, then pip install -e "
                                            "'.[torch]' (the backend experiment times it)")
    done = subprocess.run([sys.executable, "-m", "fastnn.experiments", *names, "--limit", "300", "--test-limit", "500",
                           "--epochs", "1", "--smoke",
                           "--seeds", "1", "--backend", "numpy", "--jobs", "2", "--data-dir", str(mnist_dir),
                           "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    got = rows(tmp_path / "results" / "experiments.csv")
    expected = sum(len(sweeps.EXPERIMENTS[n]) for n in names)
    assert len(got) == expected and all(r["status"] == "completed" for r in got)
    for name in names:
        assert (tmp_path / "results" / f"{name}.csv").exists()
        assert (tmp_path / "results" / "plots" / f"{name}_mnist.png").read_bytes()[:4] == b"\x89PNG"


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc), []: none or no /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, or no process, does not)."""
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]   # a zombie is gone
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
def test_sigterm_stops_the_sweep_and_its_workers(tmp_path, mnist_dir):
    """A stopped sweep leaves no worker training a run that would append its row afterwards
    (before, SIGTERM killed the command and its joblib workers ran on)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "FASTNN_DATA_DIR": str(mnist_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "fastnn.experiments", "averaging", "--seeds", "3", "--backend",
                             "numpy", "--jobs", "2", "--results", str(tmp_path / "r"), "--data-dir", str(mnist_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    workers, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        children = _children(proc.pid)                  # the workers and joblib's resource tracker
        workers = children + [g for c in children for g in _children(c)]
        if len(workers) >= 3:                      # the resource tracker and the two workers, training
            break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, out + err
    time.sleep(1)
    assert workers and not [p for p in workers if _alive(p)]


def test_smoke_cuts_what_an_experiment_fixes_and_keeps_the_rest():
    """--smoke: at most --epochs epochs and --limit images even where a configuration fixes its own,
    weight averaging from the last epoch at the latest; the configuration's other settings stay."""
    cut = sweeps.smoke_overrides({"epochs": 60, "average_from": 41, "limit": 2000, "lr": 0.02}, 1, 300, None)
    assert cut == {"epochs": 1, "average_from": 1, "limit": 300, "lr": 0.02}
    assert sweeps.smoke_overrides({"hidden": [128]}, 1, None, None) == {"hidden": [128]}
    assert sweeps.smoke_overrides({"average_from": 21}, 3, None, None) == {"average_from": 3}
