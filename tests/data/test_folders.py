"""Image folders from the command line: ``train --data FOLDER`` and ``evaluate --data FOLDER``
on folders of class folders, with and without ``train/`` and ``test/`` split folders. The
folders are written here as PNG files of real MNIST digits, so the same images can go through
the IDX path too and the accuracies can be compared."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fastnn.backends import available_backends
from fastnn.data.datasets import load_dataset
from fastnn.data.folders import FOLDER_TEST_FRACTION, load_folder_dataset
from fastnn.training.config import TrainConfig
from fastnn.training.loop import train

N_TRAIN, N_TEST = 10000, 1000
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_pngs(root, images, labels, names):
    """<root>/<class name>/<index>.png, one file per image."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


@pytest.fixture(scope="module")
def mnist_folders(mnist_dir, tmp_path_factory):
    """(split folder, flat folder): the first N_TRAIN training and N_TEST test images of MNIST,
    with class folders named as words, so that names are visibly not label numbers; the flat
    folder (class folders, no splits) is the split folder's train/."""
    train_set, test_set = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    split = tmp_path_factory.mktemp("digits-split")
    write_pngs(split / "train", train_set.images[:N_TRAIN], train_set.labels[:N_TRAIN], NAMES)
    write_pngs(split / "test", test_set.images[:N_TEST], test_set.labels[:N_TEST], NAMES)
    return split, split / "train"


def run(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", f"fastnn.{module}", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.slow
def test_a_split_folder_trains_as_the_same_images_through_idx(mnist_folders, tmp_path):
    """The same 6,000 training and 1,000 test images, as PNG folders and as IDX: two epochs reach
    the same test accuracy within a point (the folder lists by class, so the validation split and
    the batch order differ)."""
    split, _ = mnist_folders
    test = load_folder_dataset(split, "test")
    idx_test = load_dataset("mnist", "test").subset(slice(0, N_TEST))
    rank = np.argsort(np.argsort(NAMES))                             # digit -> its folder's place, by name
    order = np.lexsort((np.arange(N_TEST), rank[idx_test.labels]))   # the folder's order: class folder, file
    np.testing.assert_array_equal(test.images, idx_test.images[order])   # the same pixels, through PNG
    backend = "numba" if "numba" in available_backends() else "numpy"
    common = dict(backend=backend, epochs=2, seed=0, augment="none")
    folder = train(TrainConfig(data=str(split), dataset="digits", out=str(tmp_path / "folder"), **common),
                   progress=False, log=lambda *a: None)
    idx = train(TrainConfig(limit=N_TRAIN, test_limit=N_TEST, out=str(tmp_path / "idx"), **common),
                progress=False, log=lambda *a: None)
    assert folder["test_samples"] == idx["test_samples"] == N_TEST
    assert folder["train_samples"] == idx["train_samples"]
    assert abs(folder["test_accuracy"] - idx["test_accuracy"]) <= 0.01, (folder["test_accuracy"], idx["test_accuracy"])
    assert folder["test_accuracy"] > 0.9


@pytest.mark.slow
def test_train_evaluate_predict_on_a_folder_without_splits(mnist_folders, tmp_path):
    """No train/ and test/: train says it made a stratified test split; the model keeps the folder
    names; evaluate --data scores the same test split; predict prints the names."""
    _, flat = mnist_folders
    trained = run("train", "--data", flat, "--epochs", "2", "--backend", "numpy", "--out", tmp_path / "run", "--quiet",
                  cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "has no train/ and test/ folders: the test set is a stratified 20% of each class" in trained.stdout
    assert "classes (the folder names): eight, five, four, nine, one, seven, six, three, two, zero" in trained.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_samples"] == round(FOLDER_TEST_FRACTION * N_TRAIN)
    assert metrics["hyperparameters"]["data"] == str(flat)

    evaluated = run("evaluate", "--model", tmp_path / "run" / "best_model.npz", "--data", flat, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((tmp_path / "run" / f"evaluation-{flat.name}" / "evaluation.json").read_text())
    assert result["samples"] == metrics["test_samples"]
    assert abs(result["accuracy"] - metrics["test_accuracy"]) < 1e-9

    test = load_folder_dataset(flat, "test")
    seven = flat / "seven" / sorted(p.name for p in (flat / "seven").iterdir())[0]
    predicted = run("predict", "--model", tmp_path / "run" / "best_model.npz", seven, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert "seven" in predicted.stdout
    assert set(np.unique(test.labels)) == set(range(10))

    refused = run("evaluate", "--model", tmp_path / "run" / "best_model.npz", cwd=tmp_path)
    assert refused.returncode == 2 and "evaluate it with --data FOLDER" in refused.stderr


def test_data_and_dataset_do_not_mix(tmp_path):
    (tmp_path / "a").mkdir()
    both = run("train", "--data", tmp_path, "--dataset", "mnist", cwd=tmp_path)
    assert both.returncode == 2 and "drop --dataset" in both.stderr
    missing = run("train", "--data", tmp_path / "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
