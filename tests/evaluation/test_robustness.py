"""The corruption benchmark (``fastnn.evaluation.robustness``, ``python -m fastnn.evaluate --corruptions``):
the same corrupted images for every model, the summaries' arithmetic, the files it writes and its errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastnn import evaluate
from fastnn.data.datasets import Dataset
from fastnn.evaluation.robustness import evaluate_corruptions, format_markdown, summarize
from fastnn.model.network import NeuralNetwork
from tests.data.test_corruptions import _require_skimage, digits


def _made_up_test_set(n=40):
    images = digits(n, seed=1)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return Dataset(images, labels, tuple(str(c) for c in range(10)), "made-up")


def test_every_model_sees_the_same_corrupted_images():
    _require_skimage()
    test = _made_up_test_set()
    a = NeuralNetwork([784, 16, 10], backend="numpy", seed=0)
    b = NeuralNetwork([784, 16, 10], backend="numpy", seed=0)                  # the same weights
    result = evaluate_corruptions({"a": a, "b": b}, test, ["rotate", "fog"], (1, 3), seed=5, held_out=["fog"],
                                  progress=False, examples=3)
    ra, rb = result["models"]["a"], result["models"]["b"]
    assert ra["accuracy"] == rb["accuracy"] and ra["clean_accuracy"] == rb["clean_accuracy"]
    assert set(ra["accuracy"]) == {"rotate", "fog"} and set(ra["accuracy"]["fog"]) == {"1", "3"}
    assert result["held_out"] == ["fog"] and ra["held_out"]["kinds"] == ["fog"]
    assert result["examples"]["rotate"].shape == (2, 3, 28, 28)
    accs = [ra["accuracy"][k][s] for k in ("rotate", "fog") for s in ("1", "3")]
    assert ra["all"]["mean_corrupted_accuracy"] == pytest.approx(np.mean(accs))
    assert ra["all"]["error_gap"] == pytest.approx((1 - np.mean(accs)) - (1 - ra["clean_accuracy"]))
    table = format_markdown(result)
    assert "| fog (held out) |" in table and "| rotate |" in table and "held-out gap" in table


def test_summary_arithmetic():
    result = {"clean_accuracy": 0.98, "severities": [1, 2],
              "accuracy": {"x": {"1": 0.90, "2": 0.70}, "y": {"1": 0.96, "2": 0.84}}}
    s = summarize(result, ["x", "y"])
    assert s["mean_corrupted_accuracy"] == pytest.approx(0.85)
    assert s["clean_error"] == pytest.approx(0.02) and s["mean_corrupted_error"] == pytest.approx(0.15)
    assert s["error_gap"] == pytest.approx(0.13) and s["relative_error"] == pytest.approx(7.5)


def test_unknown_kinds_are_refused():
    _require_skimage()
    with pytest.raises(ValueError, match="unknown corruption"):
        evaluate_corruptions({}, _made_up_test_set(), ["snow"], progress=False)
    with pytest.raises(ValueError, match="severity"):
        evaluate_corruptions({}, _made_up_test_set(), ["fog"], (0,), progress=False)


@pytest.mark.slow
def test_the_command_writes_tables_and_figures_beside_the_torch_baseline(mnist_dir, tmp_path, capsys):
    _require_skimage()
    out = tmp_path / "corr"
    code = evaluate.main(["--corruptions", "--data-dir", str(mnist_dir), "--limit", "300", "--corruption",
                          "rotate", "impulse_noise", "--severities", "1", "3", "--held-out", "rotate",
                          "--out", str(out)])
    assert code == 0
    result = json.loads((out / "corruptions.json").read_text())
    assert set(result["models"]) == {"fastnn", "torch"} and result["samples"] == 300
    for model in result["models"].values():
        assert 0.9 < model["clean_accuracy"] <= 1
        assert model["accuracy"]["rotate"]["3"] < model["accuracy"]["rotate"]["1"]
        assert model["held_out"]["kinds"] == ["rotate"]
    assert "| impulse_noise |" in (out / "corruptions.md").read_text()
    for name in ("corruption_examples", "corruption_accuracy"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "mean corrupted error" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--corruptions", "--limit", "0"], "--limit must be a positive"),
    (["--corruption", "fog"], "--corruption belongs to --corruptions"),
    (["--corruptions", "--data", "somewhere"], "drop --data"),
])
def test_the_command_refuses_bad_options(argv, message, tmp_path, capsys):
    _require_skimage()
    assert evaluate.main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
