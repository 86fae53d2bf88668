"""Compile a first run's Numba kernels in two processes at once, before the first epoch.

Contract: ``compile_in_workers(spec)`` fills Numba's on-disk cache with every kernel a fused
training run of that shape calls, so that the training process then loads them (~0.2 s)
instead of compiling them one after another (~16 s on one core); it changes nothing else.

Numba compiles one function at a time under a global lock, and the fused step is most of the
work: ``fused_steps`` links and re-optimizes its callees, so compiling its biggest callee,
``_finish_step``, elsewhere first takes ~2 s off it. Both steps call fastnn's GEMM, which is a
C-callable function of its own (``fastnn.backends.numba.gemm.use_dtype``, ~3 s): it must exist
before either is compiled. The split (measured: 12.6 s of wall time for both workers, the GEMM
included; 9.4 s before the fused step had its own GEMM):

- worker "steps": ``_layer0_forward``; once the other worker has saved the GEMM,
  ``_thread_step``; once it has saved ``_finish_step``, ``fused_steps`` (which loads it from the cache);
- worker "rest": the GEMM, ``_finish_step``, then augmentation, the fused forward, the loss and
  the interface kernels that evaluation calls.

Each worker calls the kernels on a small made-up trainer with the run's dtype, depth and
augmentation: Numba's signatures depend on types, never on sizes or values, so the training
process finds each one in the cache (``fastnn.training.trainers.warm_up`` counts what it still had to
compile: 0 is tested). The helpers are called with the argument types ``fused_steps`` passes
them (int64 indices, the dtype's scalars): a mismatch would only cost a compile.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["KernelSpec", "compile_in_workers"]


@dataclass(frozen=True)
class KernelSpec:
    """What a fused training run's kernel signatures depend on."""
    layer_sizes: tuple            # (D, H..., C): the forward pass takes one array per layer
    dtype: str                    # "float32" or "float64"
    image_shape: tuple            # (rows, cols) of the training images, for augmentation
    augment: bool                 # whether the run augments (augment_csr)


def _made_up_trainer(spec: KernelSpec, batch_size: int = 64):
    """A FusedTrainer of ``spec``'s types on 64 random images (the model's sizes are the run's)."""
    from fastnn.data.augment import Augmenter, parse_augment
    from fastnn.data.datasets import Dataset
    from fastnn.model.network import NeuralNetwork
    from fastnn.training.fused import FusedTrainer
    from fastnn.training.optim import make_optimizer

    rng = np.random.default_rng(0)
    n_classes = spec.layer_sizes[-1]
    images = ((rng.random((batch_size, *spec.image_shape)) < 0.2) * 200).astype(np.uint8)
    data = Dataset(images, rng.integers(0, n_classes, batch_size).astype(np.uint8),
                   tuple(str(c) for c in range(n_classes)), "made-up")
    model = NeuralNetwork(list(spec.layer_sizes), backend="numba", dtype=np.dtype(spec.dtype), seed=0)
    augmenter = Augmenter(parse_augment("shift=1"), spec.image_shape, 0) if spec.augment else None
    trainer = FusedTrainer(model, make_optimizer("momentum", model, 0.05, 1e-4, 0.9), data, augmenter)
    trainer._allocate(batch_size)
    return model, trainer


def _compile_steps(spec: KernelSpec, saved) -> None:
    """Worker "steps" (see the module docstring)."""
    from fastnn.backends.numba import fused_step as nf
    from fastnn.backends.numba.gemm import use_dtype

    model, tr = _made_up_trainer(spec)
    i64, none = np.int64, tr._aug_order[:0]                          # (0,) int64: no rows
    hyper = tr.hyperparameters()
    H0 = int(tr.sizes[1])
    W0 = tr.theta[tr.w_off[0]:tr.w_off[0] + int(tr.sizes[0]) * H0].reshape(int(tr.sizes[0]), H0)   # (D, H0)
    nf._layer0_forward(tr.indptr, tr.indices, tr.pixels, none, i64(0), i64(0), W0, tr.row_bounds[0],
                       tr.row_bounds[1], tr.z0_parts[0, :0].reshape(0, H0), tr.csc_ptr[0], tr.csc_sample[0],
                       tr.csc_value[0], tr.csc_span[0])
    saved["gemm"].wait(timeout=120)                                  # then load it (or compile it here)
    use_dtype(model.dtype)
    nf._thread_step(i64(0), i64(0), i64(0), i64(1), i64(0), i64(0), tr.labels, none, tr.sizes, tr.w_off, tr.b_off,
                    tr.act_off, tr.mask_off, tr.theta, tr.z0_parts, tr.acts, tr.outs, tr.grads_act, i64(tr._act),
                    np.ones((1, 1), dtype=model.dtype), False, hyper.label_smoothing, np.zeros((0, 0), dtype=np.int64))
    saved["finish_step"].wait(timeout=120)                           # then compile it here, if need be
    tr.augmenter = None                                              # the other worker compiles augment_csr
    tr.warm_up(64)                                                   # fused_steps


def _compile_rest(spec: KernelSpec, saved) -> None:
    """Worker "rest" (see the module docstring)."""
    from fastnn.backends.numba import fused_step as nf
    from fastnn.backends.numba.gemm import use_dtype
    from fastnn.training.trainers import warm_up

    model, tr = _made_up_trainer(spec)
    i64 = np.int64
    hyper = tr.hyperparameters()
    try:
        use_dtype(model.dtype)                                       # the GEMM both steps call
    finally:
        saved["gemm"].set()
    try:
        nf._finish_step(i64(0), i64(0), tr.sizes, tr.w_off, tr.b_off, tr.act_off, tr.row_bounds, tr.col_bounds,
                        tr.theta, tr.state1, tr.state2, tr.acts, tr.grads_act, tr.csc_ptr, tr.csc_sample,
                        tr.csc_value, tr.scratch, hyper, hyper.lr, model.dtype.type(1),
                        np.zeros((0, 0), dtype=np.int64))
    finally:
        saved["finish_step"].set()
    tr._kernel = lambda *args: None                                  # the other worker compiles fused_steps
    warm_up(model, tr, 64)                                           # augment_csr, the forward, the loss


def compile_in_workers(spec: KernelSpec) -> float:
    """Fill Numba's cache with ``spec``'s kernels from two worker processes; return the seconds.

    A worker that fails leaves its kernels to the training process (which compiles whatever it
    does not find in the cache), so this never stops a run: it raises nothing but KeyboardInterrupt.
    """
    import multiprocessing

    t0 = time.perf_counter()
    workers = []
    try:
        context = multiprocessing.get_context("spawn")              # a fresh interpreter: no forked threads
        saved = {"gemm": context.Event(), "finish_step": context.Event()}
        workers = [context.Process(target=target, args=(spec, saved), daemon=True)
                   for target in (_compile_steps, _compile_rest)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    except OSError:                    # no processes or semaphores here: the training process compiles
        pass
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join()
    return time.perf_counter() - t0
