"""The pretrained models that ship with fastnn (fastnn/pretrained): they load, say where they
came from, reach the test accuracy their JSON records, and predict / evaluate use them."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fastnn import NeuralNetwork, pretrained
from fastnn.data.datasets import DATASETS, load_dataset


@pytest.mark.parametrize("dataset", pretrained.DATASETS)
def test_shipped_model_loads_and_says_where_it_came_from(dataset):
    model = NeuralNetwork.pretrained(dataset)
    meta = pretrained.info(dataset)
    assert model.layer_sizes == [784, 128, 64, 10] == meta["layer_sizes"]
    assert model.dataset == meta["dataset"] == dataset
    assert list(model.class_names) == list(DATASETS[dataset].classes)
    assert meta["command"].startswith("python -m fastnn.train ") and meta["git_commit"]
    assert "+changes" not in meta["git_commit"]                      # trained from a committed tree
    assert 0.85 < meta["test_accuracy"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("dataset", pretrained.DATASETS)
def test_shipped_model_reaches_its_recorded_accuracy(dataset, mnist_dir):
    test = load_dataset(dataset, "test", mnist_dir)
    model = NeuralNetwork.pretrained(dataset)
    accuracy = float(np.mean(model.predict(test.features(dtype=model.dtype)) == test.labels))
    # the same weights; another backend may round a last bit differently: at most 2 of 10,000 images
    assert accuracy == pytest.approx(pretrained.info(dataset)["test_accuracy"], abs=2e-4)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="no pretrained model for 'cifar'"):
        NeuralNetwork.pretrained("cifar")


def test_predict_without_model_uses_the_pretrained_one(tmp_path):
    from PIL import Image, ImageDraw

    image = Image.new("L", (140, 140), 255)                        # a dark 1 on white, as drawn on paper
    ImageDraw.Draw(image).line([(70, 20), (70, 120)], fill=0, width=12)
    image.save(tmp_path / "one.png")
    res = subprocess.run([sys.executable, "-m", "fastnn.predict", str(tmp_path / "one.png")], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("one.png: 1 (probability")


@pytest.mark.slow
def test_evaluate_without_model_writes_under_runs(tmp_path, mnist_dir):
    res = subprocess.run([sys.executable, "-m", "fastnn.evaluate", "--data-dir", str(mnist_dir)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "the pretrained mnist model" in res.stdout
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("evaluation-mnist-pretrained")
    result = json.loads((folders[0] / "evaluation.json").read_text())
    assert result["accuracy"] == pytest.approx(pretrained.info("mnist")["test_accuracy"], abs=2e-4)


def test_package_refuses_an_unfinished_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    NeuralNetwork([784, 8, 10], seed=0).save(run / "best_model.npz")
    (run / "metrics.json").write_text(json.dumps({"status": "interrupted", "dataset": "mnist"}))
    res = subprocess.run([sys.executable, "-m", "fastnn.pretrained", "--from", str(run), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "package a completed run" in res.stderr
    assert not (tmp_path / "o").exists()


def test_the_torch_baseline_is_the_same_network_trained_by_torch():
    path = pretrained.variant_path("mnist", "torch")
    model = NeuralNetwork.load(path)
    meta = pretrained.info("mnist", "torch")
    assert model.layer_sizes == NeuralNetwork.pretrained("mnist").layer_sizes == meta["layer_sizes"]
    assert "--backend torch" in meta["command"] and meta["backend"] == "torch"
    assert "+changes" not in meta["git_commit"]
    assert meta["hyperparameters"]["augment"] == pretrained.info("mnist")["hyperparameters"]["augment"]
    assert pretrained.variant_path("fashion-mnist", "torch") is None or pretrained.info("fashion-mnist", "torch")
    with pytest.raises(ValueError, match="no model variant 'jax'"):
        pretrained.variant_path("mnist", "jax")


def test_fashion_mnist_all_data_model_is_the_seed_network_at_90_percent():
    path = pretrained.variant_path("fashion-mnist", "all-data")
    meta = pretrained.info("fashion-mnist", "all-data")
    assert NeuralNetwork.load(path).layer_sizes == [784, 128, 64, 10] == meta["layer_sizes"]
    assert meta["hyperparameters"]["val_split"] == 0 and "--val-split 0" in meta["command"]
    assert meta["test_accuracy"] >= 0.90 and "+changes" not in meta["git_commit"]
    assert pretrained.variant_path("mnist", "all-data") is None


def test_mnist_number_reader_has_a_none_class_and_its_command():
    path = pretrained.variant_path("mnist", "numbers")
    meta = pretrained.info("mnist", "numbers")
    model = NeuralNetwork.load(path)
    assert list(model.class_names) == [str(d) for d in range(10)] + ["none"]
    assert meta["hyperparameters"]["number_pieces"] > 0 and "--number-pieces" in meta["command"]
    assert "+changes" not in meta["git_commit"]
    assert pretrained.variant_path("fashion-mnist", "numbers") is None
