"""A model trained with ``--input-norm background`` normalizes whatever it is given, keeps the setting
in its file, and the ONNX export refuses it rather than dropping it."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.model.file_format import ModelFileError
from tests.data.test_corruptions import digits


def _model(backend="numpy"):
    m = NeuralNetwork([784, 32, 10], backend=backend, seed=0)
    m.pixel_inputs = True
    m.input_norm = "background"
    return m


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_a_brighter_image_gets_the_clean_one_s_outputs(backend):
    from fastnn.backends import available_backends

    if backend not in available_backends():
        pytest.skip(f"{backend} not available here")
    m = _model(backend)
    x = digits(6).reshape(6, -1).astype(np.float32) / 255
    bright = 0.5 * x + 0.4                                                  # a grey background, weaker ink
    np.testing.assert_allclose(m.forward(bright), m.forward(x), atol=1e-5)
    assert (m.predict(bright) == m.predict(x)).all()
    assert len(m.hidden_outputs(bright)) == 1
    m.input_norm = "none"
    assert not np.allclose(m.forward(bright), m.forward(x), atol=1e-3)     # without it: another answer


def test_the_setting_is_saved_and_checked(tmp_path):
    m = _model()
    m.save(tmp_path / "m.npz")
    assert NeuralNetwork.load(tmp_path / "m.npz").input_norm == "background"
    plain = NeuralNetwork([784, 8, 10], seed=0)
    plain.save(tmp_path / "plain.npz")
    assert NeuralNetwork.load(tmp_path / "plain.npz").input_norm == "none"
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["input_norm"] = np.array("histogram")
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="unknown input_norm 'histogram'"):
        NeuralNetwork.load(tmp_path / "bad.npz")


def test_onnx_export_refuses_a_normalizing_model(tmp_path):
    pytest.importorskip("onnx", reason="onnx not installed: pip install -e '.[onnx]'")
    with pytest.raises(ValueError, match="normalizes its inputs"):
        _model().to_onnx(tmp_path / "m.onnx")
