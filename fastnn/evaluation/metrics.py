"""Classification metrics in NumPy: accuracy, confusion matrix, per-class precision / recall / F1
with macro and weighted averages, calibration (reliability bins, expected calibration error),
and dead-ReLU fractions.

Conventions (those of scikit-learn with ``zero_division=0``, which the tests use as the oracle):
a class never predicted has precision 0, a class absent from the labels has recall 0, and F1
is 0 when precision + recall is 0; each such case is listed in ``notes``. Labels and
predictions are integer arrays (N,) with values in [0, C).
"""
from __future__ import annotations

import numpy as np


def _check(labels, preds, num_classes: int | None):
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    if labels.shape != preds.shape or labels.ndim != 1:
        raise ValueError(f"labels shape {labels.shape} and predictions shape {preds.shape} must be equal and 1-D")
    if labels.dtype.kind not in "iu" or preds.dtype.kind not in "iu":
        raise TypeError(f"labels and predictions must be integers, got {labels.dtype} and {preds.dtype}")
    if num_classes is None:
        num_classes = int(max(labels.max(initial=-1), preds.max(initial=-1))) + 1
    for name, arr in (("labels", labels), ("predictions", preds)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got [{arr.min()}, {arr.max()}]")
    return labels.astype(np.int64), preds.astype(np.int64), num_classes


def accuracy(labels, preds) -> float:
    """Fraction of predictions equal to the labels (nan for no samples)."""
    labels, preds, _ = _check(labels, preds, None)
    return float(np.mean(labels == preds)) if labels.size else float("nan")


def confusion_matrix(labels, preds, num_classes: int | None = None) -> np.ndarray:
    """Counts (C, C) int64: row = true class, column = predicted class."""
    labels, preds, c = _check(labels, preds, num_classes)
    return np.bincount(labels * c + preds, minlength=c * c).reshape(c, c)


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the recall view); rows of a class with no samples stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)                          # (C, 1)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def classification_report(labels, preds, num_classes: int | None = None, class_names=None) -> dict:
    """Per-class precision, recall, F1 and support, macro and weighted averages, accuracy.

    Returns a dict: ``per_class`` (list of dicts with name, precision, recall, f1, support),
    ``macro`` and ``weighted`` (precision, recall, f1), ``accuracy``, ``confusion_matrix``
    (counts, list of lists), ``notes`` (where a 0/0 was defined as 0).
    """
    labels, preds, c = _check(labels, preds, num_classes)
    cm = confusion_matrix(labels, preds, c)
    tp = np.diag(cm).astype(np.float64)                             # (C,)
    predicted = cm.sum(axis=0).astype(np.float64)                   # (C,)
    support = cm.sum(axis=1).astype(np.float64)                     # (C,)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    notes = []
    for k in range(c):
        if predicted[k] == 0:
            notes.append(f"class {names[k]} is never predicted: precision defined as 0")
        if support[k] == 0:
            notes.append(f"class {names[k]} has no samples: recall defined as 0")
    total = support.sum()
    weights = support / total if total else np.zeros(c)
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_class": [{"class": k, "name": names[k], "precision": float(precision[k]), "recall": float(recall[k]),
                       "f1": float(f1[k]), "support": int(support[k])} for k in range(c)],
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted": {"precision": float(precision @ weights), "recall": float(recall @ weights),
                     "f1": float(f1 @ weights)},
        "confusion_matrix": cm.tolist(),
        "notes": notes,
    }


def most_confused_pairs(cm: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal counts as (true class, predicted class, count), largest first."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:k]
    pairs = [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(flat, off.shape))]
    return [p for p in pairs if p[2] > 0]


def reliability(probs, labels, n_bins: int = 15) -> dict:
    """Reliability diagram data and the expected calibration error (ECE).

    Confidence = the top probability; samples are binned by confidence into ``n_bins`` equal
    bins of [0, 1]. ECE = sum_b (n_b / N) |accuracy_b - confidence_b| (C. Guo et al., "On
    Calibration of Modern Neural Networks", ICML 2017).

    Args:
        probs: (N, C) class probabilities. labels: (N,) int.
    Returns:
        dict with ``ece``, and per bin ``bin_edges`` (n_bins+1,), ``accuracy``, ``confidence``,
        ``count`` (n_bins,) (empty bins: accuracy and confidence 0, count 0).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probs shape {probs.shape} and labels shape {labels.shape}: expected (N, C) and (N,)")
    confidence = probs.max(axis=1)                                  # (N,)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)   # (N,)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)   # (N,)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    acc = np.divide(np.bincount(which, correct, n_bins), count, out=np.zeros(n_bins), where=count > 0)
    conf = np.divide(np.bincount(which, confidence, n_bins), count, out=np.zeros(n_bins), where=count > 0)
    n = max(len(labels), 1)
    ece = float(np.sum(count / n * np.abs(acc - conf)))
    return {"ece": ece, "bin_edges": edges.tolist(), "accuracy": acc.tolist(), "confidence": conf.tolist(),
            "count": count.astype(int).tolist()}


def dead_unit_fraction(activations: np.ndarray) -> float:
    """Fraction of units (columns of a (N, H) activation array) that are zero for every sample."""
    activations = np.asarray(activations)
    if activations.ndim != 2 or activations.shape[1] == 0:
        raise ValueError(f"activations must be (N, H), got shape {activations.shape}")
    return float(np.mean(np.all(activations == 0, axis=0)))
