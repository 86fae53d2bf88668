"""One trainer interface for every training path; ``make_trainer`` picks the path.

A trainer updates a ``NeuralNetwork`` in place from mini-batches of a training ``Dataset``:

- ``run_steps(order, first_step, n_steps, batch_size)``: steps ``first_step`` .. of the epoch
  whose sample order is ``order`` (n,); returns their losses, (k,) float64, each the batch's
  mean cross-entropy before that step's update (k < n_steps at the end of the epoch, or where
  the kernel path met a non-finite loss);
- ``run_epoch(order, batch_size, on_steps=None)``: the whole epoch in calls of the trainer's
  ``steps_per_call`` steps (``STEPS_PER_CALL``, 32, unless a trainer sets its own: the fused
  trainer runs 128); ``on_steps(losses)`` after each call (a progress bar, a non-finite check
  that raises to stop); returns every loss and leaves the model current;
- ``sync_to_model()``: make ``model.weights``/``biases`` current (a copy back for the torch and
  JAX comparators; nothing for the others);
- ``description``: which path runs, for the first lines a command prints.

The paths: ``FusedTrainer`` (``fastnn.training.fused``: whole steps in compiled code, numba and cython),
``KernelTrainer`` (below: one backend call per kernel), ``TorchTrainer``
(``fastnn.comparators.torch_trainer``: nn.Module + autograd + torch.optim, the professional baseline) and
``JaxTrainer`` (``fastnn.comparators.jax_trainer``: a benchmark comparator). The training loop in
``fastnn.train`` never knows which one it runs.
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np

from fastnn.backends.timing import phase
from fastnn.data.datasets import to_float

__all__ = ["Trainer", "TrainerBase", "KernelTrainer", "warm_up", "checked_order", "batch_images",
           "STEPS_PER_CALL"]

STEPS_PER_CALL = 32   # steps per call by default: a progress bar and Ctrl-C get a turn between calls


class Trainer(Protocol):
    description: str

    def run_steps(self, order: np.ndarray, first_step: int, n_steps: int, batch_size: int) -> np.ndarray: ...

    def run_epoch(self, order: np.ndarray, batch_size: int,
                  on_steps: Callable[[np.ndarray], None] | None = None) -> np.ndarray: ...

    def sync_to_model(self) -> None: ...


class TrainerBase:
    """``run_epoch`` and ``sync_to_model`` for trainers that define ``run_steps``; ``timer`` (a
    ``fastnn.backends.timing.PhaseTimer`` or None) is read by trainers that time their phases."""

    description = ""
    timer = None
    steps_per_call = STEPS_PER_CALL

    def run_epoch(self, order: np.ndarray, batch_size: int,
                  on_steps: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """Every step of the epoch ordered by ``order`` (n,), ``steps_per_call`` per call; returns
        the losses (n_steps,) float64 (fewer if the kernel path stopped at a non-finite loss)."""
        n_steps = -(-len(order) // batch_size)
        per_call = self.steps_per_call
        chunks = []
        for first in range(0, n_steps, per_call):
            losses = self.run_steps(order, first, per_call, batch_size)
            chunks.append(losses)
            if on_steps is not None:
                on_steps(losses)
            if len(losses) < min(per_call, n_steps - first):
                break
        self.sync_to_model()
        return np.concatenate(chunks) if chunks else np.empty(0)

    def sync_to_model(self) -> None:
        """Nothing to do: the model's arrays are the ones trained."""

    def warm_up(self, batch_size: int) -> None:
        """Compile (or load from a cache) what ``run_steps`` will run, on no data; changes nothing.
        Nothing to do for paths that compile nothing."""


class KernelTrainer(TrainerBase):
    """The kernel-by-kernel path: per step, ``model.backward`` (one backend call per kernel) and
    ``optimizer.step()``. Stops a call early at a non-finite loss (without that step's update)."""

    def __init__(self, model, optimizer, dataset, augmenter=None, label_smoothing: float = 0.0):
        self.model, self.optimizer, self.dataset = model, optimizer, dataset
        self.augmenter = augmenter  # a fastnn.data.augment.Augmenter moves each batch, or None
        self.label_smoothing = float(label_smoothing)
        self.timer = None          # a fastnn.backends.timing.PhaseTimer times the data and optimizer phases
        self.description = f"kernel by kernel ({model.backend_name})" + (
            f", augmentation {augmenter}" if augmenter is not None else "")

    def run_steps(self, order, first_step: int, n_steps: int, batch_size: int) -> np.ndarray:
        """Train on batches ``first_step`` .. of ``order``; return their losses (stops at a non-finite one).
        Raises as ``checked_order``."""
        order = checked_order(order, len(self.dataset), first_step, n_steps, batch_size)
        losses = []
        for step in range(first_step, first_step + n_steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            if len(idx) == 0:
                break
            with phase(self.timer, "data"):
                images = batch_images(self.dataset, order, step, batch_size, self.augmenter)  # (B, ...) uint8
                X = to_float(images, self.model.dtype)                                        # (B, D)
                y = self.dataset.labels[idx].astype(np.int64)                  # (B,)
            loss = self.model.backward(X, y, self.label_smoothing, check_range=False)   # X from uint8: in [0, 1]
            losses.append(loss)
            if not math.isfinite(loss):
                break
            with phase(self.timer, "optimizer"):
                self.optimizer.step()
        return np.array(losses)


def checked_order(order, n: int, first_step: int, n_steps: int, batch_size: int) -> np.ndarray:
    """``order`` as an array, after checking every index that steps ``first_step`` ..
    ``first_step + n_steps - 1`` will use: the fused kernels index the training set with them
    and check nothing themselves, and NumPy would wrap a negative one. Once per call. An epoch
    may draw fewer rows than the set holds (the robust recipe's pool: n clean and n corrupted
    images, n drawn per epoch).

    Raises:
        ValueError: ``order`` is not 1-D integers, at most n of them; ``batch_size`` < 1;
            ``first_step`` or ``n_steps`` < 0.
        IndexError: an index the call would use is outside [0, n).
    """
    order = np.asarray(order)
    if order.ndim != 1 or len(order) > n or not (np.issubdtype(order.dtype, np.integer) or order.size == 0):
        raise ValueError(f"order must be at most {n} integer indices of the training samples, got "
                         f"{order.shape} {order.dtype}")
    if batch_size < 1 or first_step < 0 or n_steps < 0:
        raise ValueError(f"batch_size must be >= 1 and first_step, n_steps >= 0; got {batch_size}, "
                         f"{first_step}, {n_steps}")
    used = order[first_step * batch_size:(first_step + n_steps) * batch_size]
    if used.size and (used.min() < 0 or used.max() >= n):
        bad = used[(used < 0) | (used >= n)][0]
        raise IndexError(f"order holds index {bad}, outside the {n} training samples")
    return order


def warm_up(model, trainer: Trainer, batch_size: int) -> tuple[float, int]:
    """Compile, before the first epoch, every kernel a training run calls: the trainer's steps
    (``Trainer.warm_up``) and the evaluation-mode forward pass, loss and hidden outputs (on 32
    rows of zeros: enough to take the threaded forward; then one row, the serial forward that a
    single image's ``predict`` runs). Changes neither weights nor generators.

    Returns:
        (seconds taken, kernel specializations compiled in this process): 0 compiled means every
        kernel came from the backend's on-disk cache (Numba) or needed no compiling.
    """
    import time

    compiled = getattr(model.backend, "compiled_here", lambda: 0)
    before, t0 = compiled(), time.perf_counter()
    trainer.warm_up(batch_size)
    X = np.zeros((32, model.layer_sizes[0]), dtype=model.dtype)                   # (32, D)
    model.loss(X, np.zeros(32, dtype=np.int64))
    model.hidden_outputs(X)
    model.predict(X[:1])                                                            # one image: the serial forward
    return time.perf_counter() - t0, compiled() - before


def batch_images(dataset, order, step: int, batch_size: int, augmenter=None) -> np.ndarray:
    """uint8 images (B, ...) of step ``step`` of the epoch ordered by ``order`` (n,), moved by
    the augmenter's moves for that step when there is one."""
    images = dataset.images[order[step * batch_size:(step + 1) * batch_size]]
    if augmenter is None:
        return images
    from fastnn.data.augment import move_images
    return move_images(images, augmenter.moves(len(order), step, 1, batch_size))
