"""``python -m fastnn.train`` end to end on real MNIST (small --limit), and its failure modes."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn import train as train_mod

pytestmark = pytest.mark.slow


def run_cli(tmp_path, mnist_dir, *extra, name="run"):
    out = tmp_path / name
    argv = ["--backend", "numpy", "--data-dir", str(mnist_dir), "--limit", "3000", "--test-limit", "2000",
            "--epochs", "1", "--out", str(out), "--quiet", *extra]
    if "--augment" not in extra:                  # the pipeline, not the recipe: 2 epochs of 2,400 images
        argv += ["--augment", "none"]
    return train_mod.main(argv), out


def test_end_to_end_on_real_mnist(tmp_path, mnist_dir, capsys):
    code, out = run_cli(tmp_path, mnist_dir, "--epochs", "2", "--target-accuracy", "80")
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("test accuracy ")
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("backend", "dataset", "test_accuracy", "best_val_accuracy", "epoch_times_s", "seed",
                "hyperparameters"):
        assert key in metrics
    assert metrics["backend"] == "numpy" and metrics["dataset"] == "mnist"
    assert len(metrics["epoch_times_s"]) == 2 and metrics["train_samples"] == 2400
    assert metrics["test_accuracy"] > 0.8
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "epoch_time_s"} <= set(rows[0])
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    model = NeuralNetwork.load(out / "best_model.npz", layer_sizes=[784, 128, 64, 10])
    assert model.predict(np.zeros((1, 784), np.float32)).shape == (1,)


def test_target_accuracy_fails_loudly(tmp_path, mnist_dir, capsys):
    code, _ = run_cli(tmp_path, mnist_dir, "--target-accuracy", "99.9")
    assert code == 1
    assert "below the target" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_non_finite_loss_stops_with_advice(tmp_path, mnist_dir, capsys, backend):
    """Every backend stops on a non-finite loss (the fused kernels skip zero pixels, so a NaN weight
    meets a zero input without turning the product NaN; the loss still becomes NaN and is caught)."""
    from fastnn.backends import available_backends

    if backend not in available_backends():
        pytest.skip(f"backend {backend} unavailable")
    code, out = run_cli(tmp_path, mnist_dir, "--lr", "1e6", "--optimizer", "sgd", "--lr-schedule", "constant",
                        "--backend", backend)
    assert code == 1
    text = capsys.readouterr().out
    assert "too high" in text and "--lr" in text
    assert json.loads((out / "metrics.json").read_text())["status"] == "non-finite loss"


def test_ctrl_c_keeps_best_model(tmp_path, mnist_dir, monkeypatch, capsys):
    real_backward = NeuralNetwork.backward
    calls = {"n": 0}

    def interrupted_backward(self, X, y, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 40:          # one epoch of 2400 samples is 38 batches: stop in epoch 2
            raise KeyboardInterrupt
        return real_backward(self, X, y, *args, **kwargs)

    monkeypatch.setattr(NeuralNetwork, "backward", interrupted_backward)
    code, out = run_cli(tmp_path, mnist_dir, "--epochs", "3")
    assert code == 130
    assert "interrupted" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1
    assert (out / "best_model.npz").exists() and metrics["test_accuracy"] > 0.5


def test_bad_arguments_are_reported(capsys):
    with pytest.raises(SystemExit) as exc:
        train_mod.main(["--epochs", "0"])
    assert exc.value.code == 2
    assert "argument --epochs: must be >= 1, got 0" in capsys.readouterr().err


def test_recipe_defaults_per_dataset_and_explicit_options_win():
    from fastnn.train import build_parser, config_from_args
    from fastnn.training.config import RECIPES, TrainConfig

    for dataset, recipe in RECIPES.items():
        chosen = ["--data", str(Path(__file__).parent)] if dataset == "folder" else ["--dataset", dataset]
        cfg = config_from_args(build_parser().parse_args(["--backend", "numpy", *chosen]))
        assert {k: getattr(cfg, k) for k in recipe} == recipe
    cfg = config_from_args(build_parser().parse_args(["--backend", "numpy", "--augment", "none", "--epochs", "3",
                                                      "--dropout", "0"]))
    assert (cfg.augment, cfg.epochs, cfg.dropout) == ("none", 3, 0.0)
    assert TrainConfig(dataset="fashion-mnist").augment == RECIPES["fashion-mnist"]["augment"]


def test_help_explains_options():
    res = subprocess.run([sys.executable, "-m", "fastnn.train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for opt in ("--backend", "--dataset", "--epochs", "--batch-size", "--lr", "--optimizer", "--hidden",
                "--activation", "--init", "--dropout", "--weight-decay", "--seed", "--val-split", "--data-dir",
                "--limit", "--out", "--augment"):
        assert opt in res.stdout


def test_missing_data_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    def offline(*a, **k):
        import urllib.error
        raise urllib.error.URLError("offline")
    monkeypatch.setattr("urllib.request.urlopen", offline)
    code = train_mod.main(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "put the canonical IDX files here" in err and "train-images-idx3-ubyte.gz" in err


def test_same_seed_backends_agree_on_real_mnist(tmp_path, mnist_dir, capsys):
    """numpy (kernel path), numba and cython (fused paths) train the same network: one epoch on
    10,000 MNIST samples ends within 0.2 percentage points of test accuracy of each other."""
    from fastnn.backends import available_backends

    accuracies = {}
    for backend in ("numpy", "numba", "cython", "torch"):
        if backend not in available_backends():
            continue
        out = tmp_path / backend
        code = train_mod.main(["--data-dir", str(mnist_dir), "--limit", "10000", "--test-limit", "5000",
                               "--epochs", "1", "--backend", backend, "--out", str(out), "--quiet"])
        assert code == 0
        accuracies[backend] = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert {"numpy", "numba"} <= set(accuracies)
    assert accuracies["numpy"] > 0.85
    spread = 100 * (max(accuracies.values()) - min(accuracies.values()))
    assert spread <= 0.2, f"test accuracies differ by {spread:.2f} pp: {accuracies}"


def test_fused_path_is_announced_and_can_be_turned_off(tmp_path, mnist_dir, capsys):
    code, _ = run_cli(tmp_path, mnist_dir, "--backend", "numba")
    assert code == 0 and "fused path" in capsys.readouterr().out
    code, _ = run_cli(tmp_path, mnist_dir, "--backend", "numba", "--no-fused", name="run2")
    assert code == 0 and "kernel by kernel" in capsys.readouterr().out


@pytest.mark.parametrize("backend, fused", [("numba", True), ("cython", True), ("numpy", False)])
def test_the_robust_recipe_trains_on_every_path(tmp_path, mnist_dir, capsys, backend, fused):
    from fastnn.backends import available_backends

    if backend not in available_backends():
        pytest.skip(f"{backend} not available here")
    code, out = run_cli(tmp_path, mnist_dir, "--backend", backend, "--corrupt", "blur,noise:p=0.5",
                        "--input-norm", "background", *([] if fused else ["--no-fused"]))
    assert code == 0
    printed = capsys.readouterr().out
    assert "training corruptions: blur, noise; each epoch draws a sample's corrupted copy with p = 0.5" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_samples"] == 2400 and metrics["test_accuracy"] > 0.75
    assert metrics["hyperparameters"]["corrupt"] == "blur,noise:p=0.5"
    assert NeuralNetwork.load(out / "best_model.npz").input_norm == "background"


def test_bad_robust_options_are_named(tmp_path, capsys):
    assert train_mod.main(["--corrupt", "snow", "--out", str(tmp_path / "o")]) == 2
    assert "--corrupt: unknown kind 'snow'" in capsys.readouterr().err


def test_weight_averaging_keeps_the_mean_and_gives_training_its_weights_back():
    from fastnn.training.loop import _WeightAverage

    model = NeuralNetwork([6, 4, 3], backend="numpy", seed=0)
    average = _WeightAverage(model)
    seen = []
    for step in range(3):
        for a in model.parameters():
            a += 1.0 + step                                    # "training"
        seen.append([a.copy() for a in model.parameters()])
        average.add()
    trained = [a.copy() for a in model.parameters()]
    average.swap_in()
    for a, *versions in zip(model.parameters(), *seen):
        np.testing.assert_allclose(a, np.mean(versions, axis=0), rtol=1e-6)
    average.swap_out()
    for a, t in zip(model.parameters(), trained):
        np.testing.assert_array_equal(a, t)


def test_averaging_runs_and_after_the_last_epoch_is_refused(tmp_path, mnist_dir, capsys):
    code, out = run_cli(tmp_path, mnist_dir, "--backend", "numba", "--epochs", "3", "--average-from", "2")
    assert code == 0
    printed = capsys.readouterr().out
    assert "epoch   2/3 (averaged)" in printed and "epoch   1/3 (averaged)" not in printed
    assert json.loads((out / "metrics.json").read_text())["hyperparameters"]["average_from"] == 2
    assert train_mod.main(["--epochs", "5", "--average-from", "6", "--out", str(tmp_path / "o")]) == 2
    assert "comes after the last epoch" in capsys.readouterr().err


def test_no_validation_split_trains_on_every_sample_and_keeps_the_last_epoch(tmp_path, mnist_dir, capsys):
    code, out = run_cli(tmp_path, mnist_dir, "--epochs", "2", "--val-split", "0")
    assert code == 0
    printed = capsys.readouterr().out
    assert "no validation split" in printed and "val loss" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_samples"] == 3000 and metrics["val_samples"] == 0 and metrics["best_epoch"] == 2
    assert metrics["test_accuracy"] > 0.8
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and rows[0]["val_accuracy"] == "nan"
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_number_pieces_trains_a_number_reader(tmp_path, mnist_dir, capsys):
    from fastnn import pretrained as pretrained_mod
    from fastnn.model.numbers import read_number
    from fastnn.pretrained.__main__ import package

    code, out = run_cli(tmp_path, mnist_dir, "--number-pieces", "60", "--val-split", "0")
    assert code == 0
    model = NeuralNetwork.load(out / "best_model.npz")
    assert model.layer_sizes == [784, 128, 64, 11] and model.class_names[-1] == "none"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hyperparameters"]["number_pieces"] == 60
    assert metrics["train_samples"] > 3000                       # the 3,000 digits and the numbers' pieces
    gray = np.zeros((30, 60), np.float32)
    gray[5:25, 10:14] = gray[5:25, 30:34] = 1.0
    reading = read_number(model, gray)                           # the reader's path: pieces and cuts chosen
    assert 1 <= len(reading.text) <= 2 and reading.inputs.shape == (len(reading.text), 784)
    target = package(out, tmp_path / "shipped")
    assert target.name == "mnist-numbers.npz" and "numbers" in pretrained_mod.VARIANTS
