"""``python -m fastnn.evaluate`` and ``python -m fastnn.predict`` end to end on a small real-MNIST model,
and the MNIST-style preprocessing of ``predict`` on images the tests draw themselves."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from fastnn import evaluate, predict
from fastnn import train as train_mod
from fastnn.data.images import ImageError, load_image


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("run")
    code = train_mod.main(["--data-dir", str(mnist_dir), "--limit", "4000", "--test-limit", "500", "--epochs", "2",
                           "--backend", "numba", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def draw_digit(path, text="7", size=(120, 90), background="white", ink="black", mode="RGB"):
    img = Image.new(mode, size, background)
    ImageDraw.Draw(img).text((size[0] // 3, 5), text, fill=ink, font=ImageFont.load_default(size=size[1] - 20))
    img.save(path)
    return path


@pytest.mark.slow
def test_evaluate_writes_metrics_and_figures(trained, mnist_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = evaluate.main(["--model", str(trained / "best_model.npz"), "--data-dir", str(mnist_dir), "--out", str(out)])
    assert code == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["samples"] == 10000 and 0.85 < result["accuracy"] <= 1
    assert len(result["per_class"]) == 10 and {"precision", "recall", "f1", "support"} <= set(result["per_class"][0])
    assert np.array(result["confusion_matrix"]).sum() == 10000
    assert 0 <= result["expected_calibration_error"] < 0.2
    assert len(result["dead_units_per_layer"]) == 2
    if result["int8"]["reason"] is None:                             # the int8 opt-in's accuracy, beside
        assert abs(result["int8"]["accuracy"] - result["accuracy"]) < 0.01 and result["int8"]["labels_changed"] < 100
    else:                                                            # no cython build: the reason instead
        assert result["int8"]["accuracy"] is None and "cython" in result["int8"]["reason"]
    for name in ("confusion_matrix", "misclassified", "most_confused", "first_layer_weights", "hidden_activations",
                 "saliency", "calibration", "learning_curves", "dead_units"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    printed = capsys.readouterr().out
    assert "macro avg" in printed and "weighted avg" in printed and "dead hidden units" in printed


def test_evaluate_reports_a_missing_model(tmp_path, capsys):
    assert evaluate.main(["--model", str(tmp_path / "nope.npz"), "--out", str(tmp_path)]) == 2
    assert "nope.npz" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_classifies_drawn_digits_and_reports_bad_files(trained, tmp_path, capsys):
    seven = draw_digit(tmp_path / "seven.png", "7")
    one = draw_digit(tmp_path / "one.jpg", "1", background=0, ink=255, mode="L")          # light on dark
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code = predict.main(["--model", str(trained / "best_model.npz"), str(seven), str(bad), str(one)])
    captured = capsys.readouterr()
    assert code == 1                                                                   # one file failed
    assert "notes.png" in captured.err and "not a readable image" in captured.err
    lines = captured.out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["seven.png", "one.jpg"]          # the others still ran
    assert "probability" in lines[0] and "top 3" in lines[0]


def test_preprocess_is_mnist_style(tmp_path):
    x = load_image(draw_digit(tmp_path / "d.png", "7", size=(200, 150)))
    assert x.shape == (784,) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    img = x.reshape(28, 28)
    assert img[0].max() == 0 and img[:, 0].max() == 0                      # dark background after inversion
    rows = np.flatnonzero(img.max(axis=1) > 0.1)
    cols = np.flatnonzero(img.max(axis=0) > 0.1)
    assert rows[-1] - rows[0] + 1 <= 20 and cols[-1] - cols[0] + 1 <= 20    # fits the 20x20 box
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 18            # and fills it on the long side
    com = [(img.sum(axis=1 - ax) @ np.arange(28)) / img.sum() for ax in (0, 1)]
    assert all(abs(c - 13.5) < 1.0 for c in com)                          # centred by centre of mass


def test_preprocess_refuses_a_blank_image(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (30, 30), 255).save(path)
    with pytest.raises(ImageError, match="blank.png: the image is blank"):
        load_image(path)
