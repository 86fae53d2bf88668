"""Reading whole numbers (``fastnn.model.numbers``, ``python -m fastnn.predict --number``) with the
shipped MNIST model, on numbers the tests draw themselves; and ``python -m fastnn.evaluate --numbers``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastnn import NeuralNetwork, evaluate, predict
from fastnn.common.errors import UserError
from fastnn.data.numbers import number_fonts, render_number
from fastnn.model.numbers import draw_reading, read_number


def _number_file(tmp_path, text, name="number.png"):
    gray = render_number(text, number_fonts()[0], rng=np.random.default_rng(0), noise=0.03)
    path = tmp_path / name
    Image.fromarray((gray * 255).astype(np.uint8)).save(path)
    return path


def test_a_drawn_number_is_read_with_its_confidence(tmp_path):
    model = NeuralNetwork.pretrained("mnist")
    path = _number_file(tmp_path, "4721")
    reading = read_number(model, path)
    assert reading.text == "4721"
    assert len(reading.digits) == 4
    assert reading.confidence == pytest.approx(np.prod([p for _, p, _ in reading.digits]))
    assert reading.inputs.shape == (4, 784) and reading.inputs.dtype == np.float32
    assert 0 < reading.confidence <= 1
    draw_reading(path, reading, tmp_path / "drawn.png")
    assert (tmp_path / "drawn.png").read_bytes()[:4] == b"\x89PNG"


def test_a_model_of_other_classes_is_refused():
    with pytest.raises(UserError, match="needs a digit model"):
        read_number(NeuralNetwork.pretrained("fashion-mnist"), np.ones((20, 40), np.float32))


def test_predict_number_prints_and_draws(tmp_path, capsys):
    path = _number_file(tmp_path, "905")
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 20), 255).save(blank)
    code = predict.main(["--number", str(path), str(blank), "--annotate", str(tmp_path / "drawn")])
    out, err = capsys.readouterr()
    assert code == 1                                                     # one image had nothing to read
    assert "number.png: 905 (confidence" in out and "blank.png" in err and "Traceback" not in err
    assert (tmp_path / "drawn" / "number-number.png").read_bytes()[:4] == b"\x89PNG"
    assert predict.main(["--annotate", str(tmp_path / "x"), str(path)]) == 2
    assert "add --number" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_numbers_writes_the_table(mnist_dir, tmp_path, capsys):
    out = tmp_path / "numbers"
    assert evaluate.main(["--numbers", "--data-dir", str(mnist_dir), "--limit", "40", "--out", str(out)]) == 0
    record = json.loads((out / "numbers.json").read_text())
    assert set(record["sets"]) == {"mnist-composed", "mnist-spaced", "mnist-overlapping", "fonts"}
    assert record["sets"]["mnist-spaced"]["numbers"] == 40 and record["sets"]["mnist-spaced"]["read_right"] > 0.8
    spaced = record["sets"]["mnist-spaced"]
    assert spaced["read_right"] <= spaced["read_right_perfect_cuts"] + 0.1         # the classifier's bound
    assert record["sets"]["fonts"]["read_right_perfect_cuts"] is None               # no digit images to cut
    assert "| mnist-composed | 40 |" in (out / "numbers.md").read_text()
    assert (out / "number_examples.png").read_bytes()[:4] == b"\x89PNG"
    assert evaluate.main(["--numbers", "--dataset", "fashion-mnist", "--out", str(tmp_path / "o")]) == 2


def test_the_number_reader_cuts_touching_digits_the_digit_model_leaves_whole(mnist_dir):
    from fastnn.data.datasets import load_dataset
    from fastnn.data.numbers import compose_number

    test = load_dataset("mnist", "test", mnist_dir)
    rng = np.random.default_rng(11)
    numbers = []
    for _ in range(60):
        idx = rng.integers(0, len(test), size=3)
        numbers.append((compose_number(test.images[idx], rng, gap=(-2, 0), noise=0.08),
                        "".join(str(int(test.labels[i])) for i in idx)))
    reader = NeuralNetwork.pretrained("mnist", variant="numbers")
    digits = NeuralNetwork.pretrained("mnist")
    read = sum(read_number(reader, gray).text == truth for gray, truth in numbers)
    whole = sum(read_number(digits, gray).text == truth for gray, truth in numbers)
    assert read >= 0.75 * len(numbers) and read > whole + 10           # every pair touches
    reading = read_number(reader, numbers[0][0])
    assert len(reading.digits) == len(reading.text) == reading.inputs.shape[0]
    assert all(label in "0123456789" for label, _, _ in reading.digits)  # "none" is never read out
