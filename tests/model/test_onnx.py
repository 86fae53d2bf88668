"""ONNX export (``NeuralNetwork.to_onnx``, ``python -m fastnn.export``): the exported file, run in
ONNX Runtime, gives fastnn's logits and probabilities. Oracle: fastnn's own forward pass."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn import export as export_mod
from fastnn.data.datasets import load_dataset, to_float
from fastnn.model.onnx import to_onnx_bytes

onnx = pytest.importorskip("onnx", reason="onnx not installed: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install -e '.[onnx]'")


def run_onnx(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probs"], {"pixels": X})
    return logits, probs


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exported_model_matches_fastnn(tmp_path, activation, dtype):
    model = NeuralNetwork([20, 16, 12, 5], activation=activation, dtype=dtype, seed=4)
    model.class_names = list("abcde")
    path = model.to_onnx(tmp_path / "m.onnx")
    X = np.random.default_rng(0).random((33, 20)).astype(dtype)                 # batch of 33
    logits, probs = run_onnx(path, X)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(logits, model.logits(X), rtol=tol, atol=tol)
    np.testing.assert_allclose(probs, model.forward(X), rtol=tol, atol=tol)
    one, _ = run_onnx(path, X[:1])                                              # batch 1 too
    np.testing.assert_allclose(one, model.logits(X[:1]), rtol=tol, atol=tol)
    labels = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["labels"], {"pixels": X})[0]
    np.testing.assert_array_equal(labels, model.predict(X))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["layer_sizes"] == "20-16-12-5" and json.loads(meta["class_names"]) == list("abcde")
    model.class_names = ["a\nb", "c,d", b"e", "f", "g"]              # a newline stays inside one name
    meta = {p.key: p.value for p in onnx.load_from_string(to_onnx_bytes(model)).metadata_props}
    assert json.loads(meta["class_names"]) == ["a\nb", "c,d", "e", "f", "g"]


def test_labels_only_graph():
    """``outputs=("labels",)``: the predict graph alone (no Softmax), the benchmarks' comparator."""
    model = NeuralNetwork([20, 8, 3], seed=0)
    data = to_onnx_bytes(model, outputs=("labels",))
    graph = onnx.load_from_string(data).graph
    assert [o.name for o in graph.output] == ["labels"] and "Softmax" not in [n.op_type for n in graph.node]
    X = np.random.default_rng(0).random((10, 20)).astype(np.float32)
    labels = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"pixels": X})[0]
    np.testing.assert_array_equal(labels, model.predict(X))
    with pytest.raises(ValueError, match="subset"):
        to_onnx_bytes(model, outputs=("argmax",))


def test_trained_model_on_real_test_images(tmp_path, mnist_dir):
    """A model trained one epoch on real MNIST: ONNX Runtime's labels are fastnn's, image for image."""
    from fastnn.training.config import TrainConfig
    from fastnn.training.loop import train

    metrics = train(TrainConfig(backend="numpy", epochs=1, limit=3000, test_limit=200, data_dir=str(mnist_dir),
                                out=str(tmp_path / "run")), progress=False, log=lambda *a: None)
    assert metrics["status"] == "completed"
    code = export_mod.main([str(tmp_path / "run" / "best_model.npz"), "--onnx", str(tmp_path / "m.onnx")])
    assert code == 0
    model = NeuralNetwork.load(tmp_path / "run" / "best_model.npz")
    X = to_float(load_dataset("mnist", "test", mnist_dir).images[:1000])        # (1000, 784)
    logits, probs = run_onnx(tmp_path / "m.onnx", X)
    np.testing.assert_allclose(probs, model.forward(X), rtol=1e-4, atol=1e-6)
    assert np.array_equal(np.argmax(logits, axis=1), model.predict(X))


def test_export_command_refuses_bad_input(tmp_path, capsys):
    assert export_mod.main([str(tmp_path / "missing.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    assert export_mod.main([str(tmp_path / "junk.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "junk.npz" in capsys.readouterr().err
    NeuralNetwork([4, 3, 2]).save(tmp_path / "ok.npz")
    assert export_mod.main([str(tmp_path / "ok.npz"), "--onnx", str(tmp_path)]) == 2   # a folder
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
