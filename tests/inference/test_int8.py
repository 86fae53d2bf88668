"""The int8 forward (``model.to_int8()``, ``fastnn.inference.int8``): its quantization, its
compiled kernels against the NumPy oracle, its errors, its threads.

Oracle: ``fastnn.inference.int8.reference_logits`` (the integer sums exact in int64, the rest in
float64) and the same arithmetic in torch; the compiled forward computes layer 0's sums exactly
and everything after in float32, so the logits agree to float32 rounding. Within the compiled
forward a row's logits are the same bits alone, in a block, or on another thread (integer sums in
any order, then the float path's own order). Sizes reach every part of the kernels: inputs not a
multiple of 4 or 16, outputs not a multiple of 16 and of 8, 4, 2 and 1 vectors, batches on the
row path (under 8 rows a thread), split into chunks, and in blocks of 32 rows.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.inference.forward import InputRangeError
from fastnn.inference.int8 import quantize_inputs, quantize_layer0, reference_logits

if "cython" not in available_backends():
    pytest.skip("the int8 forward needs the cython backend, not built here (pip install -e .)", allow_module_level=True)


def pixel_model(sizes, activation="relu", seed=0, backend="cython"):
    model = NeuralNetwork(sizes, activation=activation, backend=backend, seed=seed)
    model.pixel_inputs = True
    for b in model.biases:
        b[:] = np.random.default_rng(seed + 1).normal(0, 0.1, b.shape)
    return model


def images(n, d, density=0.3, seed=0, levels=True):
    """(n, d) float32 in [0, 1]; ``levels``: multiples of 1/255, as real pixels."""
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 256, (n, d)) / 255 if levels else rng.random((n, d))
    return ((rng.random((n, d)) < density) * values).astype(np.float32)


def oracle(q, X):
    return reference_logits(q.layer0, q.biases0, q.weights, q.biases, q.activation, X)


def test_quantization_of_the_weights():
    rng = np.random.default_rng(0)
    W0 = rng.normal(0, 0.1, (10, 20))
    W0[:, 3] = 0                                                         # a column of zeros
    W0[2, 5] = 1.0                                                       # a column's peak
    layer0 = quantize_layer0(W0)
    assert layer0.weights.dtype == np.int8 and layer0.weights.shape == (10, 20)
    assert np.abs(layer0.weights).max() == 127 and layer0.weights[2, 5] == 127
    assert (layer0.weights[:, 3] == 0).all() and layer0.scales[3] == 1
    np.testing.assert_allclose(layer0.scales, np.where(W0[:, :].any(0), np.abs(W0).max(0) / 127, 1), rtol=1e-6)
    err = np.abs(layer0.weights * layer0.scales.astype(np.float64) - W0)
    assert (err <= layer0.scales / 2 * (1 + 1e-6)).all()                  # half a step at most
    # the packed layout: (G, H16, 4), G = ceil(10 / 4) = 3, H16 = 32; zeros past D and H0
    assert layer0.packed.shape == (3, 32, 4) and layer0.packed.ctypes.data % 64 == 0
    for p in range(12):
        for j in range(32):
            expected = layer0.weights[p, j] if p < 10 and j < 20 else 0
            assert layer0.packed[p // 4, j, p % 4] == expected
    np.testing.assert_allclose(layer0.input_scales[:20], layer0.scales / 255, rtol=1e-6)
    assert (layer0.input_scales[20:] == 0).all()
    with pytest.raises(ValueError, match="finite"):
        quantize_layer0(np.full((3, 4), np.nan))


def test_pixels_are_quantized_exactly():
    """Bytes / 255 in float32 come back as the bytes; other values round to the nearest level."""
    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quantize_inputs((pixels / np.float32(255)).astype(np.float32)[None]), pixels[None])
    assert quantize_inputs(np.array([[0.5, 1 / 510 - 1e-6, 0.999]], np.float32)).tolist() == [[128, 0, 255]]


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("n", [1, 7, 15, 16, 40, 203, 700])
def test_matches_the_oracle(activation, n):
    model = pixel_model([50, 130, 37, 17, 3], activation=activation, seed=n)
    q = model.to_int8()
    for density in (0.0, 0.05, 0.3, 1.0):
        X = images(n, 50, density, seed=n, levels=density != 0.3)
        expected = oracle(q, X)
        np.testing.assert_allclose(q.logits(X), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(q.forward(X), np.exp(expected - expected.max(1, keepdims=True))
                                   / np.exp(expected - expected.max(1, keepdims=True)).sum(1, keepdims=True),
                                   rtol=1e-5, atol=1e-6)
        top2 = np.sort(expected, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4
        np.testing.assert_array_equal(q.predict(X)[clear], expected.argmax(1)[clear])


def test_matches_torch():
    """The same integer sums and float layers in torch (float64)."""
    torch = pytest.importorskip("torch", reason="torch not installed: pip install -e '.[torch]'")
    model = pixel_model([784, 128, 64, 10], seed=5)
    q = model.to_int8()
    X = images(64, 784, 0.2, seed=6)
    xq = torch.from_numpy(quantize_inputs(X).astype(np.int64))
    z = (xq @ torch.from_numpy(q.layer0.weights.astype(np.int64))).double()
    z = (z * torch.from_numpy(q.layer0.input_scales[:128].astype(np.float64))
         + torch.from_numpy(q.biases0.astype(np.float64)))
    for W, b in zip(q.weights, q.biases):
        z = torch.relu(z) @ torch.from_numpy(W.astype(np.float64)) + torch.from_numpy(b.astype(np.float64))
    np.testing.assert_allclose(q.logits(X), z.numpy(), rtol=1e-5, atol=1e-5)


def test_close_to_the_float_model():
    """Quantizing changes the logits by about the weights' rounding: on inputs of a trained-like
    scale, a small fraction of the float model's logit range."""
    model = pixel_model([784, 128, 64, 10], seed=1)
    X = images(500, 784, 0.2, seed=2)
    float_logits, int8_logits = model.logits(X), model.to_int8().logits(X)
    assert np.abs(int8_logits - float_logits).max() < 0.02 * np.abs(float_logits).max()


def test_same_bits_alone_in_blocks_and_on_threads():
    model = pixel_model([784, 128, 64, 10], seed=3)
    q = model.to_int8()
    X = images(1000, 784, 0.2, seed=4)
    batch = q.logits(X)
    rows = np.concatenate([q.logits(X[i:i + 1]) for i in range(0, 1000, 37)])
    np.testing.assert_array_equal(batch[::37], rows)
    np.testing.assert_array_equal(q.logits(X[:40]), batch[:40])                   # 2 chunks of 32 and 8 rows
    results = [None] * 8

    def worker(k):
        results[k] = q.logits(X) if k % 2 else q.logits(X[k:k + 1])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, r in enumerate(results):
        np.testing.assert_array_equal(r, batch if k % 2 else batch[k:k + 1])


def test_extreme_inputs_and_shapes():
    """All zeros (no group), all ones (the largest sums), one layer, D and H0 far from 4 and 16."""
    for sizes in ([10, 3], [10, 20, 3], [9, 16, 2], [33, 200, 5]):
        model = pixel_model(sizes, seed=len(sizes))
        q = model.to_int8()
        D = sizes[0]
        for X in (np.zeros((3, D), np.float32), np.ones((20, D), np.float32), images(50, D, 0.5, seed=D)):
            np.testing.assert_allclose(q.logits(X), oracle(q, X), rtol=1e-5, atol=1e-5)
    q = pixel_model([784, 128, 64, 10]).to_int8()
    X = np.ones((2, 784), np.float32)
    np.testing.assert_allclose(q.logits(X), oracle(q, X), rtol=1e-5, atol=1e-4)


def test_input_layouts():
    q = pixel_model([784, 128, 64, 10], seed=7).to_int8()
    X = images(40, 784, 0.2, seed=8)
    expected = q.logits(X)
    np.testing.assert_array_equal(q.logits(X.astype(np.float64)), expected)         # converted
    np.testing.assert_array_equal(q.logits(X.reshape(40, 28, 28)), expected)         # images flattened
    wide = np.zeros((40, 1568), np.float32)
    wide[:, ::2] = X
    np.testing.assert_array_equal(q.logits(wide[:, ::2]), expected)                   # strided: copied
    np.testing.assert_array_equal(q.logits(X[::-1])[::-1], expected)                  # negative row stride
    np.testing.assert_array_equal(q.predict(X.byteswap().view(X.dtype.newbyteorder())), expected.argmax(1))
    assert q.predict(X[:0]).shape == (0,) and q.logits(X[:0]).shape == (0, 10)


@pytest.mark.parametrize("batch", [1, 40, 3000])
def test_garbage_in_is_an_error(batch):
    q = pixel_model([60, 20, 5]).to_int8()
    good = images(batch, 60, 0.3, seed=batch)
    for value, message in ((np.nan, "holds NaN"), (np.inf, "holds an infinite value"), (-0.5, "holds -0.5"),
                           (1.5, "holds 1.5")):
        X = good.copy()
        X[batch - 1, 7] = value
        if batch > 1:
            X[batch // 2 + 1:, 9] = 2.0                                  # later rows, later chunks: bad too
        first = min(batch - 1, batch // 2 + 1) if batch > 1 else 0
        for call in (q.predict, q.forward, q.logits):
            with pytest.raises(InputRangeError, match=f"X row {first} "):
                call(X)
    with pytest.raises(InputRangeError, match="not scaled"):
        q.predict(good * 255)
    with pytest.raises(TypeError, match="floating point"):
        q.predict((good * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="does not match the input layer"):
        q.predict(good[:, :50])
    with pytest.raises(ValueError, match="use X\\[None, :\\]"):
        q.predict(good[0])
    assert q.predict(good).shape == (batch,)


def test_what_cannot_be_quantized():
    model = NeuralNetwork([20, 8, 3], backend="cython")
    with pytest.raises(ValueError, match="model of pixels"):
        model.to_int8()                                                  # inputs of unknown range
    model.pixel_inputs = True
    model.input_norm = "background"
    with pytest.raises(ValueError, match="input_norm"):
        model.to_int8()
    model.input_norm = "none"
    q = model.to_int8()                                                  # a snapshot of the weights
    X = images(5, 20, 0.5)
    before = q.logits(X)
    model.weights[0][...] = 0
    np.testing.assert_array_equal(q.logits(X), before)


@pytest.mark.parametrize("backend", [b for b in ("numpy", "numba") if b in available_backends()])
def test_any_backends_model_runs_on_the_int8_kernels(backend):
    model = pixel_model([30, 16, 4], backend=backend)
    X = images(20, 30, 0.4)
    np.testing.assert_allclose(model.to_int8().logits(X), oracle(model.to_int8(), X), rtol=1e-5, atol=1e-5)


def test_runner_checks_what_it_is_given():
    from fastnn.backends.cython import Int8Runner

    q = pixel_model([30, 16, 4]).to_int8()
    Wq, scale, b0 = q.layer0.packed, q.layer0.input_scales, q.biases0
    args = (30, tuple(q.weights), (b0, *q.biases), 0, 2, lambda X, row, unit: None)
    runner = Int8Runner(Wq, scale, *args)
    assert runner.num_groups == 8
    for bad, message in (((Wq.astype(np.int16), scale), "Wq must be"), ((Wq[:, :8], scale), "Wq must be"),
                         ((Wq, scale[:8]), "scale must be"), ((Wq, scale.astype(np.float64)), "scale must be")):
        with pytest.raises(ValueError, match=message):
            Int8Runner(*bad, *args)
    with pytest.raises(ValueError, match="weights\\[0\\] must be"):
        Int8Runner(Wq, scale, 30, (q.weights[0][:5],), (b0, q.biases[0]), 0, 2, args[-1])
    with pytest.raises(ValueError, match="do not fill"):
        Int8Runner(Wq, scale, 28, *args[1:])
    with pytest.raises(ValueError, match="a bias for each"):
        Int8Runner(Wq, scale, 30, tuple(q.weights), (b0,), 0, 2, args[-1])
    with pytest.raises(ValueError, match="biases\\[0\\] must be"):
        Int8Runner(Wq, scale, 30, tuple(q.weights), (np.zeros(17, np.float32), *q.biases), 0, 2, args[-1])
    with pytest.raises(ValueError, match="act must be"):
        Int8Runner(Wq, scale, 30, tuple(q.weights), (b0, *q.biases), 7, 2, args[-1])
    with pytest.raises(ValueError, match="X must be"):
        runner.run(np.zeros((2, 29), np.float32), 0)                      # 29 inputs: the same 8 groups
    with pytest.raises(ValueError, match="X must be"):
        runner.run(np.zeros((2, 40), np.float32), 0)
    with pytest.raises(ValueError, match="X must be"):
        runner.run(np.zeros((2, 30), np.float64), 0)
    with pytest.raises(ValueError, match="mode must be"):
        runner.run(np.zeros((2, 30), np.float32), 3)
    with pytest.raises(RuntimeError, match="on_bad returned"):
        runner.run(np.full((2, 30), 2.0, np.float32), 0)                  # an on_bad that does not raise
    assert runner.run(np.zeros((2, 30), np.float32), 2).shape == (2,)     # the lock was released


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_starts_its_own_threads():
    """The forward's worker threads (forward_pool.h) do not survive fork(); the child makes new ones."""
    model = pixel_model([784, 128, 64, 10])
    q = model.to_int8()
    X = images(2000, 784, 0.2)
    expected_int8, expected_float = q.predict(X), model.predict(X)     # the parent's workers started
    pid = os.fork()
    if pid == 0:                                                         # the child: exit 0 only if both agree
        ok = np.array_equal(q.predict(X), expected_int8) and np.array_equal(model.predict(X), expected_float)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_real_test_sets(mnist_dir):
    """The shipped models: the int8 labels are the oracle's, and differ from the float model's on
    under 0.2% of the test images; accuracy within 0.2 points."""
    from fastnn.data.datasets import load_dataset

    for dataset in ("mnist", "fashion-mnist"):
        try:
            test = load_dataset(dataset, "test", data_dir=mnist_dir)
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"{dataset} unavailable: {exc}")
        X = test.features()
        model = NeuralNetwork.pretrained(dataset)
        q = model.to_int8()
        labels, expected = q.predict(X), oracle(q, X)
        top2 = np.sort(expected, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4
        np.testing.assert_array_equal(labels[clear], expected.argmax(1)[clear])
        float_labels = model.predict(X)
        assert (labels != float_labels).mean() < 0.002
        assert abs((labels == test.labels).mean() - (float_labels == test.labels).mean()) < 0.002
