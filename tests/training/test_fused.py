"""The fused training path (numba, cython) and the torch baseline trainer follow the kernel path.

Oracle: the kernel-by-kernel path (``model.backward`` + ``optimizer.step``) on the same model,
data order and dropout draws. Tolerance: losses agree to 1e-5 relative over 200 steps in
float64 (only the order of floating-point sums differs; measured ~1e-15).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import BackendUnavailable, available_backends, get_backend
from fastnn.data.csr import images_to_csr
from fastnn.data.datasets import Dataset, to_float
from fastnn.training.factory import make_trainer
from fastnn.training.fused import FusedTrainer, fused_unsupported_reason
from fastnn.training.optim import SGD, make_optimizer
from fastnn.training.trainers import KernelTrainer

FUSED = [b for b in ("numba", "cython") if b in available_backends()]
N_STEPS, BATCH = 200, 32


def toy_dataset(n=700, d=50, c=5, seed=0, density=0.3) -> Dataset:
    """Sparse uint8 'images' like MNIST's (mostly zeros), integer labels."""
    rng = np.random.default_rng(seed)
    images = ((rng.random((n, d)) < density) * rng.integers(1, 256, (n, d))).astype(np.uint8)
    return Dataset(images, rng.integers(0, c, n), [str(i) for i in range(c)], "toy")


def trajectory(trainer_cls, backend, optimizer, weight_decay, dropout, activation, dtype=np.float64,
               n_steps=N_STEPS, sizes=(50, 16, 12, 5), **kw):
    """Losses of the first ``n_steps`` steps (several epochs, calls of uneven length)."""
    ds = toy_dataset()
    model = NeuralNetwork(list(sizes), activation=activation, backend=backend, dtype=dtype, seed=3,
                          dropout=dropout)
    opt = make_optimizer(optimizer, model, 0.01 if optimizer == "adam" else 0.05, weight_decay)
    trainer = trainer_cls(model, opt, ds, **kw)
    rng = np.random.default_rng(7)
    losses = []
    steps_per_epoch = -(-len(ds) // BATCH)
    while len(losses) < n_steps:
        order = rng.permutation(len(ds))
        for first in range(0, steps_per_epoch, 7):
            losses.extend(trainer.run_steps(order, first, 7, BATCH))
    return np.array(losses[:n_steps]), model, opt


CASES = [("sgd", 0.0, 0.0, "relu"), ("momentum", 1e-3, 0.0, "relu"), ("adam", 1e-3, 0.2, "relu"),
         ("momentum", 0.0, 0.3, "tanh"), ("adam", 0.0, 0.0, "sigmoid")]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("optimizer,weight_decay,dropout,activation", CASES)
def test_fused_trajectory_matches_kernel_path(backend, optimizer, weight_decay, dropout, activation):
    ref, ref_model, ref_opt = trajectory(KernelTrainer, "numpy", optimizer, weight_decay, dropout, activation)
    got, model, opt = trajectory(FusedTrainer, backend, optimizer, weight_decay, dropout, activation)
    assert got.shape == ref.shape == (N_STEPS,) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for W, W_ref in zip(model.weights, ref_model.weights):        # the model sees the fused updates
        np.testing.assert_allclose(W, W_ref, rtol=1e-6, atol=1e-9)
    assert opt.t == ref_opt.t >= N_STEPS


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("sizes", [(50, 33, 7, 5), (50, 40, 17, 5), (50, 300, 20, 5)],
                         ids=["narrow hidden layer", "odd widths", "wider than a column block"])
def test_fused_trajectory_at_uneven_splits_matches_kernel_path(backend, sizes):
    """Layers narrower than fused_interface.NARROW split their weights by rows (33 rows: 16 and 17),
    wider ones by columns (17 columns: 16 and 1); layer 0 wider than COLUMN_BLOCK (256) runs its
    forward a block of columns at a time (256, then 44); all follow the kernel path."""
    ref, ref_model, _ = trajectory(KernelTrainer, "numpy", "momentum", 1e-3, 0.0, "relu", sizes=sizes)
    got, model, _ = trajectory(FusedTrainer, backend, "momentum", 1e-3, 0.0, "relu", sizes=sizes)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for W, W_ref in zip(model.weights, ref_model.weights):
        np.testing.assert_allclose(W, W_ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_fused_layer0_update_from_registers_matches_kernel_path(backend, optimizer):
    """With SGD or momentum, layer 0's gradient rows update W0 (and the velocity) straight from the
    registers the sums are in, a block of columns at a time (100 float64 columns: 64 and 32 on
    AVX-512, 32 at a time on AVX2), and the last columns through memory (4): the kernel path's
    trajectory all the same."""
    sizes = (50, 100, 12, 5)
    ref, ref_model, _ = trajectory(KernelTrainer, "numpy", optimizer, 1e-3, 0.0, "relu", sizes=sizes)
    got, model, _ = trajectory(FusedTrainer, backend, optimizer, 1e-3, 0.0, "relu", sizes=sizes)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for W, W_ref in zip(model.weights, ref_model.weights):
        np.testing.assert_allclose(W, W_ref, rtol=1e-6, atol=1e-9)


@pytest.mark.skipif("cython" not in available_backends(), reason="the cython backend is not built here")
def test_cython_steps_on_a_smaller_team_than_asked_are_the_same():
    """The Cython step runs one OpenMP team per call and gives each thread parts t, t + team, ...:
    with the runtime limited to one thread (OMP_THREAD_LIMIT=1) it runs both threads' parts
    itself, and the losses and weights come out bit for bit as with two."""
    import os
    import subprocess

    code = (
        "import numpy as np, sys; sys.path.insert(0, sys.argv[1]); from test_fused import trajectory;"
        "import fastnn.training.fused as f; from fastnn.training.fused import FusedTrainer;"
        "f._num_threads = lambda backend: 2;"                      # T = 2 parts, whatever the team"
        "losses, model, _ = trajectory(FusedTrainer, 'cython', 'adam', 1e-3, 0.2, 'relu', n_steps=60);"
        "np.save(sys.argv[2], np.concatenate([losses, *[w.ravel() for w in model.weights]]));"
        "from fastnn.backends.cython import openmp_threads; print(openmp_threads())")
    here = os.path.dirname(__file__)
    out = {}
    for limit in ("1", "2"):
        env = {**os.environ, "OMP_THREAD_LIMIT": limit, "OMP_NUM_THREADS": "2"}
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fastnn-team-{os.getpid()}-{limit}.npy")
        done = subprocess.run([sys.executable, "-c", code, here, path], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-1] == limit                    # the team OpenMP gives
        out[limit] = np.load(path)
        os.remove(path)
    np.testing.assert_array_equal(out["1"], out["2"])


@pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed: pip install -e .")
def test_numba_steps_on_fewer_threads_than_parts_are_the_same(monkeypatch):
    """Numba's step runs one parallel loop per call whose threads claim the T parts of each phase
    and wait for the parts, not for each other: with Numba on one thread (the loop's iterations
    one after another) it must neither hang nor change a bit."""
    import numba

    import fastnn.training.fused as fused

    monkeypatch.setattr(fused, "_num_threads", lambda backend: 2)            # T = 2 parts either way
    two, model2, _ = trajectory(FusedTrainer, "numba", "adam", 1e-3, 0.2, "relu", n_steps=60)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one, model1, _ = trajectory(FusedTrainer, "numba", "adam", 1e-3, 0.2, "relu", n_steps=60)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    for W1, W2 in zip(model1.weights, model2.weights):
        np.testing.assert_array_equal(W1, W2)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("optimizer,dropout", [("momentum", 0.0), ("adam", 0.2)])
def test_fused_trajectory_with_label_smoothing_matches_kernel_path(backend, optimizer, dropout):
    ref, _, _ = trajectory(KernelTrainer, "numpy", optimizer, 1e-3, dropout, "relu", label_smoothing=0.1)
    got, _, _ = trajectory(FusedTrainer, backend, optimizer, 1e-3, dropout, "relu", label_smoothing=0.1)
    plain, _, _ = trajectory(KernelTrainer, "numpy", optimizer, 1e-3, dropout, "relu")
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert not np.allclose(ref, plain, rtol=1e-3)                 # the smoothing changed the losses


@pytest.mark.parametrize("backend", FUSED)
def test_fused_float32_trains_close_to_kernel_path(backend):
    ref, _, _ = trajectory(KernelTrainer, "numpy", "momentum", 0.0, 0.0, "relu", np.float32, n_steps=60)
    got, model, _ = trajectory(FusedTrainer, backend, "momentum", 0.0, 0.0, "relu", np.float32, n_steps=60)
    assert model.weights[0].dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-3)


@pytest.mark.parametrize("backend", FUSED)
def test_fused_model_can_still_be_saved_and_switch_paths(backend, tmp_path):
    """Weights become views into the fused parameter vector; save/load and the kernel path still work."""
    ds = toy_dataset()
    model = NeuralNetwork([50, 16, 5], backend=backend, seed=0)
    opt = make_optimizer("momentum", model, 0.05)
    fused = FusedTrainer(model, opt, ds)
    order = np.arange(len(ds))
    fused.run_steps(order, 0, 5, 32)
    model.save(tmp_path / "m.npz")
    loaded = NeuralNetwork.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.weights[0], model.weights[0])
    before = model.weights[0].copy()
    KernelTrainer(model, opt, ds).run_steps(order, 5, 1, 32)            # the kernel path continues in place
    assert not np.array_equal(before, model.weights[0])
    np.testing.assert_array_equal(fused.theta[:50 * 16], model.weights[0].ravel())


def test_images_to_csr_matches_dense_features():
    ds = toy_dataset(n=40)
    ds.images[3] = 0                                                # an all-zero image: an empty row
    indptr, indices, pixels = images_to_csr(ds.images)
    assert indptr.shape == (41,) and indptr.dtype == np.int64 and indices.dtype == np.uint16
    assert pixels.dtype == np.uint8 and pixels.shape == indices.shape == (indptr[-1],)
    assert indptr[4] == indptr[3]
    dense = np.zeros((40, 50), np.float32)
    for i in range(40):
        row = slice(indptr[i], indptr[i + 1])
        assert np.all(np.diff(indices[row].astype(int)) > 0)         # sorted: the kernels search them
        dense[i, indices[row]] = pixels[row].astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(dense, to_float(ds.images, np.float32))   # the kernels' x, bit for bit


def test_images_to_csr_refuses_what_the_kernels_cannot_index():
    with pytest.raises(ValueError, match="uint8"):
        images_to_csr(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="at most 65536"):
        images_to_csr(np.zeros((1, 65537), np.uint8))


def test_row_and_column_bounds_split_the_work():
    from fastnn.training.fused import column_bounds, row_bounds_by_nonzeros

    assert column_bounds(128, 2).tolist() == [0, 64, 128]           # 64-byte aligned halves
    assert column_bounds(10, 2).tolist() == [0, 5, 10]              # narrow layers: plain halves
    assert column_bounds(100, 3).tolist() == [0, 48, 80, 100]
    indices = np.array([0, 0, 0, 1, 5, 6, 7, 7], dtype=np.uint16)   # half the non-zeros in rows 0..1
    assert row_bounds_by_nonzeros(indices, 8, 2).tolist() == [0, 2, 8]
    assert row_bounds_by_nonzeros(indices, 8, 4).tolist() == [0, 1, 2, 7, 8]
    assert row_bounds_by_nonzeros(np.zeros(0, np.uint16), 8, 2).tolist() == [0, 4, 8]


@pytest.mark.parametrize("backend", FUSED)
def test_unsupported_optimizer_falls_back_and_says_so(backend):
    class Lion(SGD):                     # an optimizer the fused kernels do not know
        pass

    model = NeuralNetwork([50, 8, 5], backend=backend)
    opt = Lion(model, 0.1)
    said = []
    trainer = make_trainer(model, opt, toy_dataset(), log=said.append)
    assert isinstance(trainer, KernelTrainer)
    assert len(said) == 1 and "Lion" in said[0] and "kernel by kernel" in said[0]
    assert fused_unsupported_reason(model, make_optimizer("adam", model, 0.01)) is None
    with pytest.raises(ValueError, match="no fused path"):
        FusedTrainer(NeuralNetwork([50, 8, 5], backend="numpy"), make_optimizer("sgd", model, 0.1), toy_dataset())


@pytest.mark.parametrize("backend", FUSED)
def test_fused_rejects_mismatched_data(backend):
    model = NeuralNetwork([49, 8, 5], backend=backend)
    with pytest.raises(ValueError, match="49"):
        FusedTrainer(model, make_optimizer("sgd", model, 0.1), toy_dataset())


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_torch_trainer_follows_the_same_trajectory(torch, optimizer):
    """nn.Module + autograd + torch.optim from the same initial weights and batch order."""
    from fastnn.comparators.torch_trainer import TorchTrainer

    ref, _, _ = trajectory(KernelTrainer, "numpy", optimizer, 0.0, 0.0, "relu", n_steps=100)
    got, model, _ = trajectory(TorchTrainer, "numpy", optimizer, 0.0, 0.0, "relu", n_steps=100)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    ref, _, _ = trajectory(KernelTrainer, "numpy", optimizer, 0.0, 0.0, "relu", n_steps=50, label_smoothing=0.1)
    got, _, _ = trajectory(TorchTrainer, "numpy", optimizer, 0.0, 0.0, "relu", n_steps=50, label_smoothing=0.1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)               # torch's CrossEntropyLoss(label_smoothing)


@pytest.mark.parametrize("mode", ["scan", "step"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_jax_comparator_follows_the_same_trajectory(mode, weight_decay):
    """The benchmark's JAX comparator trains the same network: same losses as the kernel path
    (float32, JAX's own summation order), in scan mode through the jitted lax.scan."""
    jax_module = pytest.importorskip("fastnn.comparators.jax_trainer",
                                   reason="jax not installed: pip install -e '.[bench]'")

    ref, ref_model, _ = trajectory(KernelTrainer, "numpy", "momentum", weight_decay, 0.0, "relu", np.float32,
                                   n_steps=60)
    got, model, opt = trajectory(jax_module.JaxTrainer, "numpy", "momentum", weight_decay, 0.0, "relu",
                                 np.float32, n_steps=60, mode=mode)
    np.testing.assert_allclose(got, ref, rtol=1e-3)
    assert opt.t >= 60


def test_jax_comparator_run_epoch_brings_the_weights_back():
    jax_module = pytest.importorskip("fastnn.comparators.jax_trainer",
                                   reason="jax not installed: pip install -e '.[bench]'")
    ds = toy_dataset()
    models = [NeuralNetwork([50, 16, 5], backend="numpy", seed=1) for _ in range(2)]
    kernel = KernelTrainer(models[0], make_optimizer("momentum", models[0], 0.05), ds)
    jax_trainer = jax_module.JaxTrainer(models[1], make_optimizer("momentum", models[1], 0.05), ds, mode="scan")
    order = np.random.default_rng(0).permutation(len(ds))
    np.testing.assert_allclose(jax_trainer.run_epoch(order, 32), kernel.run_epoch(order, 32), rtol=1e-4)
    for W_jax, W_ref in zip(models[1].weights, models[0].weights):              # synced at the epoch's end
        np.testing.assert_allclose(W_jax, W_ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="ReLU, no dropout"):
        jax_module.JaxTrainer(NeuralNetwork([50, 5], backend="numpy", activation="tanh"),
                                make_optimizer("sgd", models[0], 0.1), ds)


def test_cython_unbuilt_says_how_to_build(monkeypatch):
    import fastnn.backends as backends

    monkeypatch.setitem(sys.modules, "fastnn.backends.cython.kernels", None)   # import fails
    monkeypatch.delitem(sys.modules, "fastnn.backends.cython", raising=False)
    monkeypatch.setattr(backends, "_cache", {})
    with pytest.raises(BackendUnavailable, match=r"pip install -e \."):
        get_backend("cython")


@pytest.mark.skipif("cython" not in available_backends(), reason="Cython kernels not built")
def test_cython_prange_is_parallel():
    """Without -fopenmp, prange silently runs serially: the build must have OpenMP on a multi-core machine."""
    import os

    from fastnn.backends.cython import openmp_threads

    wanted = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    # at least what OMP_NUM_THREADS asks: Numba's OpenMP threading layer, once a parallel Numba kernel
    # has run in this process, raises the shared OpenMP runtime's default to every core (the fused
    # path passes its own thread count, fastnn.backends.cython.num_threads, so it is not affected)
    assert openmp_threads() >= min(wanted, os.cpu_count() or 1), \
        "the Cython extension runs prange serially: rebuild with a compiler that supports -fopenmp"


@pytest.mark.skipif("numba" not in available_backends(), reason="numba unavailable")
def test_compiling_is_its_own_step(monkeypatch):
    """train's compile step says whether it compiles (first run) and how long it took; a warm-up
    changes neither the weights nor the optimizer's step count."""
    import fastnn.backends.numba as nb
    from fastnn.training.loop import compile_kernels

    model = NeuralNetwork([50, 8, 5], backend="numba")
    trainer = make_trainer(model, make_optimizer("momentum", model, 0.1), toy_dataset())
    before = [w.copy() for w in model.weights]
    said = []
    monkeypatch.setattr(nb, "fused_path_cached", lambda: False)
    seconds = compile_kernels(model, trainer, 16, log=said.append)
    assert seconds >= 0 and said and said[0].startswith("compiling the numba kernels (first run on this machine")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.weights)) and trainer.optimizer.t == 0
    said.clear()
    monkeypatch.setattr(nb, "fused_path_cached", lambda: True)
    compile_kernels(model, trainer, 16, log=said.append)     # everything is compiled in this process now
    assert not any("compiling" in s for s in said)


@pytest.mark.slow
@pytest.mark.skipif("numba" not in available_backends(), reason="numba unavailable")
def test_first_run_compiles_in_workers_and_the_run_finds_every_kernel(mnist_dir, tmp_path):
    """A first run (an empty Numba cache) compiles in a step of its own, in two worker processes
    (fastnn.training.precompile), and the training process then finds every kernel in the cache: it
    compiles none itself (the workers' signatures are the run's). A second run loads them."""
    import os
    import subprocess

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "FASTNN_DATA_DIR": str(mnist_dir)}
    command = [sys.executable, "-m", "fastnn.train", "--backend", "numba", "--limit", "2000", "--test-limit", "500",
               "--epochs", "1", "--quiet"]
    first = subprocess.run([*command, "--out", str(tmp_path / "first")], capture_output=True, text=True, env=env,
                           timeout=600)
    assert first.returncode == 0, first.stderr
    assert "compiling the numba kernels (first run on this machine): " in first.stdout
    assert "compiled in this process" not in first.stdout, first.stdout
    second = subprocess.run([*command, "--out", str(tmp_path / "second")], capture_output=True, text=True, env=env,
                            timeout=600)
    assert second.returncode == 0 and "loading the compiled numba kernels from Numba's cache" in second.stdout
    import json
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert metrics["compile_time_s"] > 0 and len(metrics["epoch_times_s"]) == 1


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_an_order_out_of_range_is_refused_before_the_kernel_runs(backend, augment):
    """The compiled kernels index the training set with ``order`` and check nothing: the trainer
    checks every index a call will use, once per call, and refuses as the kernel path does."""
    from fastnn.data.augment import Augmenter, parse_augment

    ds = toy_dataset(n=100, d=49)
    model = NeuralNetwork([49, 8, 5], backend=backend, seed=0)
    augmenter = Augmenter(parse_augment("shift=1"), (7, 7), 0) if augment else None
    trainer = FusedTrainer(model, make_optimizer("sgd", model, 0.1), ds, augmenter)
    before = [w.copy() for w in model.weights]
    order = np.arange(100)
    for bad in (100, -1, 10**12):
        wrong = order.copy()
        wrong[37] = bad
        with pytest.raises(IndexError, match=f"index {bad}, outside the 100 training samples"):
            trainer.run_epoch(wrong, 16)
        with pytest.raises(IndexError):                      # the kernel path refuses the same call
            KernelTrainer(model, make_optimizer("sgd", model, 0.1), ds).run_steps(wrong, 0, 7, 16)
    for wrong in (np.arange(101) % 100, order.astype(np.float64), order.reshape(10, 10)):
        with pytest.raises(ValueError, match=r"order must be at most 100 integer indices"):
            trainer.run_steps(wrong, 0, 7, 16)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        trainer.run_steps(order, 0, 7, 0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.weights))   # nothing ran
    trainer.run_epoch(order, 16)                                              # a good order still trains
    assert len(trainer.run_epoch(order[:50], 16)) == 4      # an epoch may draw fewer rows than the set (a pool)


def test_compiling_in_workers_never_stops_a_run(monkeypatch):
    """Where no worker process can be started, the training process compiles instead."""
    import multiprocessing

    from fastnn.training.precompile import KernelSpec, compile_in_workers

    def refuse(*args, **kwargs):
        raise OSError("no semaphores here")

    monkeypatch.setattr(multiprocessing, "get_context", refuse)
    assert compile_in_workers(KernelSpec((49, 8, 5), "float32", (7, 7), False)) >= 0
