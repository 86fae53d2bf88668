"""The fused forward pass (numba, cython: ``fastnn.inference.forward``) gives the kernel path's results.

Oracle: the kernel-by-kernel forward of the same model (``model._forward``, then the backend's
softmax and ``np.argmax``) and a float64 NumPy forward. Tolerance: float32 logits to 1e-5
(only the order of the sums differs: the fused forward adds the non-zero inputs' rows of W in
index order); labels identical; float64 to 1e-12.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.inference.forward import ForwardPlan

FUSED = [b for b in ("numba", "cython") if b in available_backends()]
pytestmark = pytest.mark.skipif(not FUSED, reason="no backend with a fused forward is available here")


def sparse_images(n, d=60, density=0.2, seed=0, dtype=np.float32):
    """Mostly-zero inputs in [0, 1] like MNIST pixels."""
    rng = np.random.default_rng(seed)
    return ((rng.random((n, d)) < density) * rng.random((n, d))).astype(dtype)


def numpy_forward(model, X):
    """float64 NumPy logits: the oracle."""
    acts = {"relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh}
    a = np.asarray(X, dtype=np.float64)
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        a = a @ W.astype(np.float64) + b.astype(np.float64)
        if i < model.num_layers - 1:
            a = acts[model.activation](a)
    return a


def kernel_path(model, X):
    """(logits, probs, labels) kernel by kernel."""
    logits = model._forward(model._check_input(X), training=False)[0]
    return logits, model.backend.softmax(logits), np.argmax(logits, axis=1)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("n", [0, 1, 2, 15, 16, 17, 203])
def test_matches_kernel_path(backend, activation, n):
    """Every activation; batch sizes around the threads' threshold (16), 1 and empty."""
    model = NeuralNetwork([60, 24, 18, 7], activation=activation, backend=backend, seed=1)
    for b in model.biases:
        b[:] = np.random.default_rng(2).normal(0, 0.1, b.shape)
    X = sparse_images(n)
    assert model._fused_plan() is not None
    logits, probs, labels = kernel_path(model, X)
    np.testing.assert_allclose(model.logits(X), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.forward(X), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X), labels)
    assert model.predict(X).dtype == np.int64 and model.logits(X).shape == (n, 7)
    np.testing.assert_allclose(model.logits(X), numpy_forward(model, X), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", FUSED)
def test_float64_model_to_float64_precision(backend):
    model = NeuralNetwork([60, 30, 9], backend=backend, dtype=np.float64, seed=0)
    X = sparse_images(50, dtype=np.float64)
    np.testing.assert_allclose(model.logits(X), numpy_forward(model, X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", FUSED)
def test_input_layouts(backend):
    """Non-contiguous views, float64 input to a float32 model, images (N, h, w), dense rows."""
    model = NeuralNetwork([60, 20, 5], backend=backend, seed=0)
    base = sparse_images(40, d=120)
    dense = np.random.default_rng(1).random((9, 60)).astype(np.float32)
    for X in (base[:, ::2], base[::-3, 1::2], np.asfortranarray(base[:, :60]), base[:, :60].astype(np.float64),
              base[:, :60].reshape(40, 6, 10), dense, -dense):
        expected = kernel_path(model, np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1))[0]
        np.testing.assert_allclose(model.logits(X), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("numba" not in FUSED, reason="numba unavailable")
def test_every_input_layout_runs_the_one_compiled_signature():
    """Strided, Fortran-ordered and float64 inputs reach the compiled forward as C-contiguous rows
    of the model's dtype: no new Numba specialization (each costs seconds of compiling)."""
    import importlib

    ff = importlib.import_module("fastnn.backends.numba.fused_forward")  # the module, not the function
    model = NeuralNetwork([60, 20, 5], backend="numba", seed=0)
    base = sparse_images(40, d=120)
    for X in (base[:, :60].copy(), base[:1, :60].copy()):                  # the threaded and the serial forward
        model.logits(X), model.predict(X)
    kernels = (ff._forward_rows, ff._forward_serial, ff._forward_parallel)
    before = [len(k.signatures) for k in kernels]
    for X in (base[:, ::2], base[::-3, 1::2], np.asfortranarray(base[:, :60]), base[:, :60].astype(np.float64),
              base[:1, ::2], base[:1, :60].astype(np.float64)):
        model.logits(X), model.forward(X), model.predict(X)
    assert [len(k.signatures) for k in kernels] == before


@pytest.mark.parametrize("backend", FUSED)
def test_real_mnist_labels_identical(backend, mnist_dir):
    """On the real test images: labels identical to the kernel path's, logits to 1e-5."""
    from fastnn.data.datasets import load_dataset

    X = load_dataset("mnist", "test", data_dir=mnist_dir).features(np.arange(3000))
    model = NeuralNetwork([784, 128, 64, 10], backend=backend, seed=0)
    logits, _, labels = kernel_path(model, X)
    np.testing.assert_array_equal(model.predict(X), labels)
    np.testing.assert_allclose(model.logits(X), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("batch", [1, 40], ids=["one row", "threaded"])
def test_garbage_in_is_an_error_on_every_backend(backend, batch):
    """The policy of fastnn.inference.forward: NaN and inf are refused by every model; a model of pixels
    also refuses inputs outside [0, 1] (3e38, pixels left in 0-255); the row is named. The fused
    kernels check in compiled code, the kernel paths in Python: the same errors."""
    from fastnn.inference.forward import InputRangeError

    model = NeuralNetwork([60, 20, 5], activation="tanh", backend=backend, seed=0)
    good = sparse_images(batch)
    for value, message in ((np.nan, "holds NaN"), (np.inf, "holds an infinite value"),
                           (-np.inf, "holds an infinite value")):
        X = good.copy()
        X[batch - 1, 7] = value
        for call in (model.predict, model.forward, model.logits):
            with pytest.raises(InputRangeError, match=f"X row {batch - 1} {message}"):
                call(X)
    wide = good * 255                                                # finite: fine for a model of anything
    assert np.isfinite(model.logits(wide)).all()
    model.pixel_inputs = True                                        # a model of pixels: [0, 1] only
    with pytest.raises(InputRangeError, match=r"values up to 2\d\d\.?\d*: pixels in 0-255, not scaled"):
        model.predict(wide)
    huge = good.copy()
    huge[0, 3] = 3e38
    with pytest.raises(InputRangeError, match="X row 0 holds 3e"):
        model.forward(huge)
    assert model.predict(good).shape == (batch,)                     # the good rows still work


def test_the_pretrained_models_refuse_unscaled_pixels(mnist_dir):
    from fastnn.data.datasets import load_dataset
    from fastnn.inference.forward import InputRangeError

    test = load_dataset("mnist", "test").subset(slice(0, 100))
    model = NeuralNetwork.pretrained("mnist")
    assert model.pixel_inputs
    with pytest.raises(InputRangeError, match="not scaled"):
        model.predict(test.images.astype(np.float32))               # 0-255 floats: an error, not 97%
    assert (model.predict(test.features()) == test.labels).mean() > 0.9
    with pytest.raises(InputRangeError, match="X row 0 holds NaN"):
        model.predict(np.full((1, 784), np.nan, dtype=np.float32))   # not a confident 8


@pytest.mark.parametrize("backend", FUSED)
def test_plan_follows_the_model(backend):
    """In-place updates are seen; a replaced array, another backend or activation rebuilds the plan;
    an array the kernels cannot take sends the call down the kernel path."""
    model = NeuralNetwork([60, 20, 5], backend=backend, seed=0)
    X = sparse_images(30)
    plan = model._fused_plan()
    model.weights[0] *= 2                                           # in place: same plan, new result
    assert model._fused_plan() is plan
    np.testing.assert_allclose(model.logits(X), kernel_path(model, X)[0], rtol=1e-5, atol=1e-5)
    model.weights[1] = model.weights[1] + 1                         # replaced: a new plan
    assert model._fused_plan() is not plan
    np.testing.assert_allclose(model.logits(X), kernel_path(model, X)[0], rtol=1e-5, atol=1e-5)
    model.weights[0] = np.asfortranarray(model.weights[0])          # not C-contiguous: kernel path
    assert model._fused_plan() is None
    np.testing.assert_allclose(model.logits(X), kernel_path(model, X)[0], rtol=1e-5, atol=1e-5)
    model.set_backend("numpy")
    assert model._fused_plan() is None


def test_plan_refuses_what_it_cannot_run():
    model = NeuralNetwork([6, 4, 3], seed=0)
    with pytest.raises(ValueError, match="has none"):
        ForwardPlan(model.backend, model.weights, model.biases, "relu", model.dtype)


@pytest.mark.parametrize("backend", FUSED)
def test_after_fused_training(backend):
    """The fused trainer packs the weights into one buffer (views): the forward follows them."""
    from fastnn.data.datasets import Dataset
    from fastnn.training.factory import make_trainer
    from fastnn.training.optim import make_optimizer

    rng = np.random.default_rng(0)
    images = ((rng.random((300, 60)) < 0.2) * rng.integers(1, 256, (300, 60))).astype(np.uint8)
    ds = Dataset(images, rng.integers(0, 5, 300), [str(i) for i in range(5)], "toy")
    model = NeuralNetwork([60, 20, 5], backend=backend, seed=0)
    X = ds.features()
    model.predict(X)
    trainer = make_trainer(model, make_optimizer("momentum", model, 0.05), ds, log=lambda *a: None)
    trainer.run_epoch(rng.permutation(300), 32)
    np.testing.assert_allclose(model.logits(X), kernel_path(model, X)[0], rtol=1e-5, atol=1e-5)


def test_commands_pick_a_fused_forward():
    """evaluate and predict load models onto the fastest backend with a fused forward ("auto")."""
    from fastnn.inference.forward import INFERENCE_BACKENDS, inference_backend

    assert inference_backend("numpy") == "numpy"
    assert inference_backend() == next(b for b in (*INFERENCE_BACKENDS, "numpy")
                                       if b in available_backends() or b == "numpy")


@pytest.mark.parametrize("backend", FUSED)
def test_same_arrays_is_identity_not_equality(backend):
    """ForwardPlan.matches' test (compiled on cython, Python on numba): the same objects in order."""
    from fastnn.backends import get_backend
    from fastnn.inference.forward import same_arrays

    same = getattr(get_backend(backend), "same_arrays", same_arrays)
    a, b = np.zeros(3), np.zeros(3)
    for check in (same, same_arrays):
        assert check([a, b], (a, b)) and check((a, b), (a, b)) and check([], ())
        assert not check([a, b.copy()], (a, b))                  # equal values, another object
        assert not check([b, a], (a, b)) and not check([a], (a, b)) and not check([a, b, a], (a, b))
    if same is not same_arrays:
        with pytest.raises(TypeError, match="list or a tuple"):
            same(iter([a, b]), (a, b))


def test_model_arrays_sit_on_cache_lines(tmp_path):
    """Made, loaded and trained models keep their weights and biases 64-byte aligned
    (fastnn.backends.memory): the AVX-512 forward loads W0's rows as whole cache lines."""
    from fastnn.backends.memory import aligned_copy, aligned_zeros

    assert aligned_zeros((3, 5), np.float32).ctypes.data % 64 == 0
    copy = aligned_copy(np.arange(7.0)[::2])
    assert copy.ctypes.data % 64 == 0 and copy.flags.c_contiguous and copy.tolist() == [0, 2, 4, 6]
    model = NeuralNetwork([60, 20, 5], seed=0)
    model.save(tmp_path / "m.npz")
    for m in (model, NeuralNetwork.load(tmp_path / "m.npz"), NeuralNetwork.pretrained("mnist")):
        assert all(a.ctypes.data % 64 == 0 for a in (*m.weights, *m.biases))
    np.testing.assert_array_equal(NeuralNetwork.load(tmp_path / "m.npz").weights[1], model.weights[1])


def test_cython_runner_checks_and_releases_its_lock():
    """The cython ForwardRunner (the plan's calls in compiled code): refuses what is not its
    groups, releases its lock after an error (the next call runs), and many threads calling one
    model at once each get their own rows' labels."""
    if "cython" not in available_backends():
        pytest.skip("the cython backend is not built here (pip install -e .)")
    import threading

    from fastnn.backends import get_backend
    from fastnn.inference.forward import InputRangeError

    runner_class = get_backend("cython").ForwardRunner
    model = NeuralNetwork([60, 20, 5], backend="cython", seed=0)
    plan = model._fused_plan()
    with pytest.raises(TypeError, match="ForwardParameters"):
        runner_class(plan._params, plan._work, (), lambda *a: None)
    table = tuple(plan._options[mode][unit_range] for mode in ("logits", "probs", "labels") for unit_range in (0, 1))
    for weights in ((), list(plan._params.weights), (np.zeros(3),)):            # never indexed unchecked
        with pytest.raises(TypeError, match="params.weights"):
            runner_class(plan._params._replace(weights=weights), plan._work, table, lambda *a: None)
    runner = plan._runner
    with pytest.raises(ValueError, match="of X's dtype"):
        runner.run(sparse_images(4).astype(np.float64), 0, True)         # not the weights' dtype
    with pytest.raises(ValueError, match="mode"):
        runner.run(sparse_images(4), 3, True)
    bad = sparse_images(4)
    bad[2, 5] = np.nan
    with pytest.raises(InputRangeError, match="X row 2 holds NaN"):
        runner.labels(bad, True)
    X = sparse_images(300)
    expected = kernel_path(model, X)[2]
    np.testing.assert_array_equal(runner.labels(X, True), expected)      # the lock was released
    results, errors = {}, []

    def worker(k):
        try:
            rows = slice(0, 300) if k % 2 else slice(k, k + 1)             # big batches and single rows
            for _ in range(20):
                results[k] = model.predict(X[rows])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, labels in results.items():
        np.testing.assert_array_equal(labels, expected[slice(0, 300) if k % 2 else slice(k, k + 1)])


@pytest.mark.parametrize("backend", FUSED)
def test_byte_swapped_input_is_converted_not_misread(backend):
    """A big-endian float32 X is the same numbers: predict converts it (the fast path takes only
    the model's own dtype object); handed straight to cython's compiled forward it is refused."""
    model = NeuralNetwork([60, 20, 5], backend=backend, seed=0)
    X = sparse_images(40)
    swapped = X.astype(">f4")
    np.testing.assert_array_equal(model.predict(swapped), model.predict(X))
    np.testing.assert_array_equal(model.predict(swapped[:1]), model.predict(X[:1]))
    plan = model._fused_plan()
    assert plan.try_labels(swapped, True) is None and plan.try_labels(X.tolist(), True) is None
    if backend == "cython":
        with pytest.raises(ValueError, match="native byte order"):
            plan.run(swapped, "labels")


POOL_PLACEMENT = """
import os
import numpy as np
from fastnn import NeuralNetwork
rng = np.random.default_rng(0)
X = ((rng.random((4000, 60)) < 0.2) * rng.random((4000, 60))).astype(np.float32)
model = NeuralNetwork([60, 24, 18, 7], backend="cython", seed=1)
expected = np.concatenate([model.predict(X[i:i + 1]) for i in range(len(X))])   # batch 1: no workers
every = os.sched_getaffinity(0)
for cpus in (every, {min(every)}, every):
    os.sched_setaffinity(0, cpus)
    assert np.array_equal(model.predict(X), expected), cpus
    workers = []
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/comm") as comm:
            if comm.read().strip() == "fastnn-forward":
                workers.append(t)
    assert workers
    for t in workers:
        allowed = os.sched_getaffinity(int(t))
        assert allowed <= cpus and len(allowed) == max(1, len(cpus) - 1), (allowed, cpus)
print("ok")
"""


@pytest.mark.skipif("cython" not in FUSED, reason="the cython backend is not built here (pip install -e .)")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_pool_workers_run_beside_the_caller():
    """The forward's worker threads (forward_pool.h) run where the caller may, its own CPU left
    out when it has more than one: with every CPU, with one, and with every CPU again (in a child
    process, so that the affinity it sets stays there), and the labels do not change."""
    result = subprocess.run([sys.executable, "-c", POOL_PLACEMENT], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
