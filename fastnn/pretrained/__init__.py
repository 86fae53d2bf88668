"""The models that ship with fastnn: one per dataset, trained by the project's default command,
and variants of the same network beside them (``VARIANTS``).

``fastnn/pretrained/<dataset>.npz`` is a model file as ``python -m fastnn.train`` writes it
(``best_model.npz``; read by ``NeuralNetwork.load``, never unpickled) and
``<dataset>.json`` beside it says where it came from: the command, the commit, the machine,
and the test accuracy the run printed. ``NeuralNetwork.pretrained(dataset)`` loads one;
``python -m fastnn.predict`` and ``python -m fastnn.evaluate`` use it when no ``--model`` is
given. ``python -m fastnn.pretrained`` lists them, and ``python -m fastnn.pretrained --from
RUN_DIR --out fastnn/pretrained`` packages a finished training run (how these were made).
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DATASETS", "VARIANTS", "model_path", "variant_path", "info"]

DATASETS = ("mnist", "fashion-mnist")
FOLDER = Path(__file__).resolve().parent
# Other models of the same network, <dataset>-<variant>.npz beside the default one:
# "torch": trained by PyTorch's autograd and optimizer with the same command and recipe
# (``--backend torch``), the professional baseline the robustness benchmark (``python -m
# fastnn.evaluate --corruptions``) evaluates side by side; "robust": the robust recipe
# (``--corrupt ... --input-norm background``: training-time corruptions, normalized inputs);
# "all-data": the recipe chosen on validation, trained again on every training image
# (``--val-split 0``): Fashion-MNIST's 90% model; "numbers": MNIST's number reader (``--number-pieces``:
# classes 0-9 and "none"), what ``python -m fastnn.predict --number`` reads numbers with.
VARIANTS = ("torch", "robust", "all-data", "numbers")


def model_path(dataset: str = "mnist") -> Path:
    """The shipped model file of ``dataset``. Raises ValueError naming the datasets that have one,
    FileNotFoundError if the installation lost it."""
    if dataset not in DATASETS:
        raise ValueError(f"no pretrained model for {dataset!r}; there is one for {', '.join(DATASETS)}")
    path = FOLDER / f"{dataset}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"the pretrained {dataset} model is missing from this installation ({path}); "
                                f"reinstall fastnn, or train one: python -m fastnn.train --dataset {dataset}")
    return path


def variant_path(dataset: str = "mnist", variant: str = "torch") -> Path | None:
    """The shipped ``variant`` (``VARIANTS``) of ``dataset``'s model, or None when none ships for
    that dataset. Raises ValueError for an unknown variant."""
    if variant not in VARIANTS:
        raise ValueError(f"no model variant {variant!r}; there are {', '.join(VARIANTS)}")
    path = FOLDER / f"{dataset}-{variant}.npz"
    return path if dataset in DATASETS and path.is_file() else None


def info(dataset: str = "mnist", variant: str | None = None) -> dict:
    """What ``<dataset>.json`` (``<dataset>-<variant>.json`` for a variant) records: command,
    commit, test_accuracy, val_accuracy, ..."""
    path = model_path(dataset) if variant is None else variant_path(dataset, variant)
    if path is None:
        raise FileNotFoundError(f"no {variant} model ships for {dataset}")
    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
