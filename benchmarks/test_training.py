"""Training speed per backend, side by side with the frameworks a user would pick instead: one
full MNIST epoch (60,000 samples; every trainer in turn in each round, A B C ... A B C ...,
so that the shared machine's noise falls on all of them alike) and one step, batch 64, 784-128-64-10 ReLU, SGD with
momentum
0.9, lr 0.05, the same initial weights and data order for every entry. The summary prints each
epoch as a ratio to PyTorch's (``torch``: nn.Module + autograd + torch.optim) and to JAX's
(``jax-scan``: the epoch as one jit-compiled ``lax.scan`` over the batches).

Entries: numba and cython take their fused path (``*-timers``: the same with the fused kernels'
phase timers on, to show what they cost; ``*-augment``: the same with the MNIST recipe's
augmentation, each sample shifted as it is drawn, to show what that costs; ``*-robust``: the robust
recipe, ``*-augment`` drawing half its samples from a pool of corrupted, normalized copies,
``fastnn.data.distort``; the pool is made once, outside the timing, as a training run makes it
once); ``numba-kernels`` is numba kernel by kernel (``--no-fused``); numpy runs kernel by kernel
(its only path); ``jax-step`` calls a jitted step per batch; ``reference`` (Python loops) only in
the step benchmark. JAX entries skip with the reason where jax is not installed (``pip install -e
".[bench]"``). Each epoch round trains on from where the previous one stopped (same model), as
epochs do.

FLOP counts are the dense-equivalent model FLOPs (2 per multiply-add of every product in the
forward and backward pass); the fused path skips zero pixels, so it does fewer than it is
credited with, and its GFLOP/s is an effective rate.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.data.augment import Augmenter, parse_augment
from fastnn.training.config import RECIPES
from fastnn.training.factory import make_trainer
from fastnn.training.optim import make_optimizer

from .conftest import record, record_result

LAYERS = [784, 128, 64, 10]
BATCH = 64
BACKENDS = ["torch", "jax-scan", "jax-step", "numpy", "numba-kernels", "numba", "numba-augment", "numba-robust",
            "numba-timers", "cython", "cython-augment", "cython-robust", "cython-timers"]
AUGMENT = RECIPES["mnist"]["augment"]          # the MNIST recipe's augmentation, for the *-augment entries
ROBUST = "blur,affine,noise,lines:p=0.7"       # the robust recipe's corruptions (with AUGMENT and input norm)
_POOLS: dict = {}                              # the robust entries' pool and data set, made once


def _robust_data(dataset):
    """(CorruptedPool, p, the normalized pool as a Dataset) of the robust recipe, made once per set."""
    from fastnn.data.datasets import Dataset
    from fastnn.data.distort import CorruptedPool, parse_distortions
    from fastnn.data.normalize import normalize_images

    if id(dataset) not in _POOLS:
        kinds, p = parse_distortions(ROBUST)
        pool = CorruptedPool(dataset.images, dataset.labels, kinds, seed=0)
        _POOLS[id(dataset)] = (pool, p, Dataset(normalize_images(pool.images), pool.labels, dataset.class_names,
                                                "mnist+corrupted"))
    return _POOLS[id(dataset)]


def step_flop(batch: int = BATCH, layers=LAYERS) -> int:
    """Forward x W, backward grad W = a^T g, backward grad a = g W^T (not for the input layer)."""
    products = [n_in * n_out for n_in, n_out in zip(layers[:-1], layers[1:])]
    return 2 * batch * (2 * sum(products) + sum(products[1:]))


def _trainer(name, dataset):
    backend, _, variant = name.partition("-")
    model = NeuralNetwork(LAYERS, backend="numpy" if backend == "jax" else backend, seed=0)
    optimizer = make_optimizer("momentum", model, 0.05)
    if backend == "jax":
        jax_module = pytest.importorskip("fastnn.comparators.jax_trainer",
                                       reason="jax not installed: pip install -e '.[bench]'")
        return jax_module.JaxTrainer(model, optimizer, dataset, mode=variant)
    if backend not in available_backends():
        pytest.skip(f"backend {backend} unavailable here")
    augmenter = (Augmenter(parse_augment(AUGMENT), dataset.images.shape[1:]) if variant in ("augment", "robust")
                 else None)
    if variant == "robust":
        model.input_norm = "background"
        dataset = _robust_data(dataset)[2]
    trainer = make_trainer(model, optimizer, dataset, fused=variant != "kernels", log=lambda *a: None,
                           augmenter=augmenter)
    if variant == "timers":
        trainer.profile = True
    return trainer


ROUNDS = 7
EPOCH_GROUP = "epoch (60,000 MNIST samples)"


def test_epoch(benchmark, mnist_train):
    """Every trainer's epoch, interleaved: each round runs one epoch of every trainer in turn
    (A B C ... A B C ...), so a noisy moment on this shared machine lands on all of them rather
    than on one; per-trainer medians and minimums over ``ROUNDS`` rounds, after a validated
    warm-up epoch each (compilation, caches, the data paged in)."""
    names = []
    trainers = {}
    for name in BACKENDS:
        try:
            trainers[name] = _trainer(name, mnist_train)
            names.append(name)
        except pytest.skip.Exception as exc:
            print(f"skipped {name}: {exc}")
    rng = np.random.default_rng(0)
    n_steps = -(-len(mnist_train) // BATCH)
    times = {name: [] for name in names}

    def epoch(name):
        order = rng.permutation(len(mnist_train))
        if name.endswith("-robust"):                    # each sample's corrupted copy with probability p
            pool, p, _ = _robust_data(mnist_train)
            order = pool.order(order, p, rng)
        t0 = time.perf_counter()
        losses = trainers[name].run_epoch(order, BATCH)
        seconds = time.perf_counter() - t0
        assert len(losses) == n_steps and np.isfinite(losses).all(), name
        return seconds, float(losses.mean())

    for name in names:                                  # warm-up, validated: the trainer learns
        _, loss = epoch(name)
        assert loss < 1.0, f"{name}: the first epoch's mean loss {loss} is not training"

    def one_round():
        for name in names:
            times[name].append(epoch(name)[0])

    benchmark.group = EPOCH_GROUP + ", interleaved"
    flop = n_steps * step_flop()
    rounds = 1 if getattr(benchmark, "disabled", False) else ROUNDS
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    per_trainer = {name: {"median_s": float(np.median(t)), "min_s": float(np.min(t)), "times_s": t,
                          "gflops": flop / float(np.median(t)) / 1e9} for name, t in times.items()}
    benchmark.extra_info.update({"flop": flop, "interleaved": per_trainer})
    if rounds > 1:                                     # timing on: into the summary's ratio tables
        for name, r in per_trainer.items():
            record_result(EPOCH_GROUP, name, r["median_s"], r["min_s"], gflops=r["gflops"], times_s=r["times_s"])


@pytest.mark.parametrize("name", ["reference", "torch", "jax-step", "numpy", "numba-kernels", "numba", "cython"])
def test_step(benchmark, name, mnist_train):
    """One training step (batch 64) through the trainer, Python call included."""
    trainer = _trainer(name, mnist_train)
    order = np.random.default_rng(0).permutation(len(mnist_train))
    n_steps = len(order) // BATCH
    state = {"step": 0}

    def step():
        state["step"] = (state["step"] + 1) % n_steps
        return trainer.run_steps(order, state["step"], 1, BATCH)

    benchmark.group = "training step (batch 64)"
    flop = step_flop()
    benchmark.extra_info.update({"backend": name, "flop": flop})
    assert np.isfinite(step()).all()
    if name == "reference":
        benchmark.pedantic(step, rounds=3, iterations=1)
    else:
        benchmark(step)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gflops"] = flop / stats.stats.median / 1e9
        record(benchmark, "training step (batch 64)", name, gflops=benchmark.extra_info["gflops"])
