"""A run folder belongs to one run: claimed under a lock (two runs never share one), emptied
by --overwrite of the previous run's files only, and released when the run ends."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from fastnn.common.cli import FolderBusy, output_folder, release_folder
from fastnn.common.errors import UserError


def hold_in_another_process(folder):
    """A process that claims ``folder`` and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom fastnn.common.cli import output_folder\n"
                             f"output_folder({str(folder)!r})\nprint('held', flush=True)\ntime.sleep(120)"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_another_process_holds_is_refused(tmp_path):
    holder = hold_in_another_process(tmp_path / "run")
    try:
        with pytest.raises(FolderBusy, match="another fastnn run is writing into --out"):
            output_folder(tmp_path / "run")
        done = subprocess.run([sys.executable, "-m", "fastnn.train", "--backend", "numpy", "--out",
                               str(tmp_path / "run"), "--overwrite"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "another fastnn run is writing into --out" in done.stderr
    finally:
        holder.kill()
        holder.wait()
    output_folder(tmp_path / "run")                  # the holder is gone: the operating system dropped its lock
    release_folder(tmp_path / "run")


def test_overwrite_empties_the_previous_run_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best_model.npz", "history.csv", "learning_curves.png", "metrics.json"):
        (run / name).write_text("old")
    (run / "evaluation-mnist").mkdir()
    with pytest.raises(UserError, match="is not empty"):
        output_folder(run)
    output_folder(run, overwrite=True)
    assert [p.name for p in run.iterdir() if not p.name.startswith(".")] == []
    release_folder(run)
    (run / "thesis.tex").write_text("mine")
    with pytest.raises(UserError, match="holds 'thesis.tex', which no fastnn run writes"):
        output_folder(run, overwrite=True)
    assert (run / "thesis.tex").read_text() == "mine"


@pytest.mark.slow
def test_a_diverging_overwrite_leaves_no_stale_model(mnist_dir, tmp_path):
    """--overwrite, then a non-finite loss before the first epoch ends: only this run's
    metrics.json is there, so evaluate cannot pick up the previous run's model."""
    base = [sys.executable, "-m", "fastnn.train", "--backend", "numpy", "--limit", "1000", "--test-limit", "100",
            "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")]
    assert subprocess.run(base, capture_output=True, timeout=300).returncode == 0
    assert (tmp_path / "run" / "best_model.npz").exists()
    diverged = subprocess.run([*base, "--overwrite", "--lr", "1e30"], capture_output=True, text=True, timeout=300)
    assert diverged.returncode == 1 and "stopped: loss became" in diverged.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == ["metrics.json"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "non-finite loss"


def test_two_sweeps_into_one_folder_never_train_one_run_twice(tmp_path):
    """A run whose folder another sweep holds is left to it; a run another sweep finished
    meanwhile is not trained again (no duplicate rows)."""
    from fastnn.training import sweep_results as results
    from fastnn.training import sweeps as ex

    specs = ex.make_specs(["depth"], ["mnist"], 1, 1, "numpy", None, tmp_path, False, set(), 500)
    holder = hold_in_another_process(specs[0]["run_dir"])
    try:
        assert ex.run_one(specs[0]) is None
    finally:
        holder.kill()
        holder.wait()
    row = {k: specs[0][k] for k in ("experiment", "dataset", "config", "seed")}
    numbers = dict.fromkeys(results.NUMERIC, 0.5)
    results.append_rows([{**row, **numbers, "epochs": 1, "limit": 500, "status": "completed"}],
                        tmp_path / "experiments.csv")
    assert ex.run_one(specs[0]) is None                      # finished by "another sweep": not again
    assert len(results.read_rows(tmp_path / "experiments.csv")) == 1


@pytest.mark.slow
def test_sigterm_keeps_the_scalar_engine_run(mnist_dir, tmp_path):
    """SIGTERM stops python -m fastnn.autograd.train as Ctrl-C does: the best model so far is
    evaluated and every output written, exit status 130."""
    proc = subprocess.Popen([sys.executable, "-m", "fastnn.autograd.train", "--limit", "400", "--val-limit", "100",
                             "--test-limit", "100", "--epochs", "50", "--size", "7", "--quiet",
                             "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/"):
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert {"history.csv", "metrics.json", "learning_curves.png"} <= {p.name for p in (tmp_path / "run").iterdir()}


# ---------------------------------------------------------------- atomic writes
def test_a_write_never_replaces_what_is_not_a_regular_file(tmp_path):
    import os

    from fastnn import NeuralNetwork
    from fastnn.common.io import NotARegularFile

    model = NeuralNetwork([4, 3, 2])
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    (tmp_path / "folder.npz").mkdir()
    for target in (fifo, tmp_path / "folder.npz"):
        with pytest.raises(NotARegularFile, match="not a regular file"):
            model.save(target)
    assert fifo.is_fifo() and (tmp_path / "folder.npz").is_dir()
    with pytest.raises(NotARegularFile, match="is a character device"):
        model.save("/dev/null")
    model.save(tmp_path / "m.npz")
    import importlib.util

    if importlib.util.find_spec("onnx") is not None:                  # the export command, where it runs
        done = subprocess.run([sys.executable, "-m", "fastnn.export", str(tmp_path / "m.npz"), "--onnx",
                               "/dev/null"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.startswith("error: /dev/null is a character device")


def test_a_write_through_a_symbolic_link_replaces_the_linked_file(tmp_path):
    from fastnn import NeuralNetwork

    (tmp_path / "real.npz").write_bytes(b"old")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    NeuralNetwork([4, 3, 2]).save(tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink()                        # the link stays a link
    assert NeuralNetwork.load(tmp_path / "real.npz").layer_sizes == [4, 3, 2]   # its file got the model
