"""Which trainer runs a model: ``make_trainer`` picks the fastest path for the backend.

The torch backend trains with PyTorch's own autograd and optimizers (a comparator, in
``fastnn.comparators``); it is found by name, as the backends are (``OWN_TRAINERS``), so that
the training package never imports the comparators that build on it.
"""
from __future__ import annotations

import importlib

from fastnn.training.fused import FusedTrainer, fused_unsupported_reason, has_fused_path
from fastnn.training.trainers import KernelTrainer, Trainer

__all__ = ["make_trainer", "OWN_TRAINERS", "own_trainer"]

# backend name -> "module:class" of the trainer that backend brings with it
OWN_TRAINERS = {"torch": "fastnn.comparators.torch_trainer:TorchTrainer"}


def own_trainer(backend_name: str) -> type:
    """The trainer class ``OWN_TRAINERS`` names for ``backend_name`` (imported on first use)."""
    module, _, name = OWN_TRAINERS[backend_name].partition(":")
    return getattr(importlib.import_module(module), name)


def make_trainer(model, optimizer, dataset, *, fused: bool = True, seed: int = 0, log=print,
                 augmenter=None, label_smoothing: float = 0.0) -> Trainer:
    """The fastest path that trains ``model`` with ``optimizer`` on ``dataset``.

    PyTorch's own (``TorchTrainer``) for the torch backend; the fused path where the backend
    has one and it supports the model and optimizer (else it says why once, through ``log``,
    and trains kernel by kernel); kernel by kernel when ``fused`` is False or the backend has
    no fused path. ``seed`` seeds torch's generator (its dropout masks). ``augmenter`` (a
    ``fastnn.data.augment.Augmenter``) moves every training sample as it is drawn, on every path;
    ``label_smoothing`` (eps in [0, 1)) smooths the targets (``NeuralNetwork.backward``).
    """
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if model.backend_name in OWN_TRAINERS:
        return own_trainer(model.backend_name)(model, optimizer, dataset, seed=seed, augmenter=augmenter,
                                               label_smoothing=label_smoothing)
    if fused and has_fused_path(model.backend):
        reason = fused_unsupported_reason(model, optimizer)
        if reason is None:
            return FusedTrainer(model, optimizer, dataset, augmenter, label_smoothing)
        log(f"note: {reason}; training kernel by kernel instead of on the fused path")
    return KernelTrainer(model, optimizer, dataset, augmenter, label_smoothing)
