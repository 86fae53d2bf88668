"""How good a trained model is, where it fails, what it learned: ``run`` behind ``python -m fastnn.evaluate``.

Computes on the test set (``fastnn.evaluation.metrics``): accuracy, per-class precision / recall / F1,
macro and weighted averages, the confusion matrix (counts and row-normalized), the most
confused class pairs, calibration (reliability bins, expected calibration error) and the
fraction of dead hidden units per layer. Writes ``evaluation.json`` and these figures into
``--out`` (default: ``evaluation-<dataset>/`` beside the model; new or empty unless
``--overwrite``), and prints a table:

- ``confusion_matrix.png``: row-normalized heatmap annotated with counts;
- ``misclassified.png``: the most confident mistakes, with true / predicted label and confidence;
- ``most_confused.png``: the class pairs confused most often;
- ``first_layer_weights.png``: each first-layer unit's weights as a 28 x 28 image;
- ``hidden_activations.png``: mean activation of each hidden unit for each class;
- ``saliency.png``: |d score of the predicted class / d pixel| for a few test images, from the
  model's own backward pass (``NeuralNetwork.input_gradient``);
- ``calibration.png``: reliability diagram with the ECE;
- ``learning_curves.png`` and ``dead_units.png``, when the run's ``history.csv`` sits beside the model.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fastnn.common.cli import new_run_folder, output_folder, printable, regular_file, release_folder
from fastnn.common.errors import UserError
from fastnn.common.io import read_history, write_json
from fastnn.data.datasets import DATASETS, load_dataset
from fastnn.data.folders import FOLDER_SPLIT_SEED, FOLDER_TEST_FRACTION, folder_has_splits, load_folder_dataset
from fastnn.evaluation import metrics
from fastnn.model.network import NeuralNetwork


def predict_probs(model: NeuralNetwork, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities (N, C) in evaluation mode, ``batch_size`` rows at a time."""
    return np.concatenate([model.forward(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])


def int8_accuracy(model: NeuralNetwork, X: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> dict:
    """The int8 opt-in's figures (``model.to_int8()``, ``fastnn.inference.int8``) on the same test
    images X (N, D): {"accuracy", "labels_changed" (against the float model's ``preds`` (N,)),
    "reason"}; where the model cannot run in int8 here the first two are None and "reason" says
    why (else None)."""
    from fastnn.model.int8 import int8_unavailable_reason

    reason = int8_unavailable_reason(model)
    if reason:
        return {"accuracy": None, "labels_changed": None, "reason": reason}
    labels8 = model.to_int8().predict(X)                                          # (N,)
    return {"accuracy": float(np.mean(labels8 == labels)), "labels_changed": int(np.sum(labels8 != preds)),
            "reason": None}


def evaluate_model(model: NeuralNetwork, dataset) -> tuple[dict, dict]:
    """(metrics dict for evaluation.json, arrays the figures need: X, probs, preds, labels, hidden)."""
    X = dataset.features(dtype=model.dtype)                                     # (N, D)
    probs = predict_probs(model, X)                                             # (N, C)
    preds = probs.argmax(axis=1)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    report = metrics.classification_report(labels, preds, model.layer_sizes[-1], dataset.class_names)
    cm = np.array(report["confusion_matrix"])
    rel = metrics.reliability(probs, labels)
    hidden = _hidden_in_batches(model, X)
    dead = [metrics.dead_unit_fraction(h) for h in hidden]
    result = {
        "dataset": dataset.name.split("/")[0], "samples": int(len(labels)), "accuracy": report["accuracy"],
        "per_class": report["per_class"], "macro": report["macro"], "weighted": report["weighted"],
        "confusion_matrix": report["confusion_matrix"],
        "confusion_matrix_normalized": metrics.normalize_rows(cm).round(6).tolist(),
        "most_confused": [{"true": dataset.class_names[t], "predicted": dataset.class_names[p], "count": n}
                          for t, p, n in metrics.most_confused_pairs(cm, 10)],
        "calibration": rel, "expected_calibration_error": rel["ece"],
        "dead_units_per_layer": dead, "int8": int8_accuracy(model, X, preds, labels), "notes": report["notes"],
    }
    return result, {"X": X, "probs": probs, "preds": preds, "labels": labels, "hidden": hidden}


def _hidden_in_batches(model, X, batch_size: int = 4096) -> list[np.ndarray]:
    parts = [model.hidden_outputs(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    return [np.concatenate([p[layer] for p in parts]) for layer in range(model.num_layers - 1)]


# ---------------------------------------------------------------- figures
def _names(dataset):
    return [str(n) for n in dataset.class_names]


def plot_confusion(cm, names, path, title) -> None:
    from fastnn.common.plotting import plt, save_figure

    norm = metrics.normalize_rows(cm)
    c = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * c, 0.8 + 0.55 * c))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(c), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class (row)")
    save_figure(fig, path)


def plot_misclassified(X, labels, preds, probs, names, path, title, n: int = 32) -> None:
    from fastnn.common.plotting import plt, save_figure

    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]])][:n]              # most confident mistakes first
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.35, rows * 1.6))
    for ax in np.ravel(axes):
        ax.axis("off")
    side = int(round(np.sqrt(X.shape[1])))
    for ax, i in zip(np.ravel(axes), wrong):
        ax.imshow(X[i].reshape(side, side), cmap="gray_r")
        ax.set_title(f"true {names[labels[i]]}\npred {names[preds[i]]} {probs[i, preds[i]]:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_most_confused(pairs, names, path, title) -> None:
    from fastnn.common.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(pairs), 1) + 1.2))
    labels = [f"{names[t]} → {names[p]}" for t, p, _ in pairs][::-1]
    ax.barh(labels, [n for _, _, n in pairs][::-1], color="tab:red")
    ax.set_xlabel("test images (true class → predicted class)")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def plot_first_layer(W0, path, title) -> None:
    from fastnn.common.plotting import plt, save_figure

    n_in, h = W0.shape
    side = int(round(np.sqrt(n_in)))
    if side * side != n_in:
        raise ValueError(f"first-layer weights {W0.shape}: the inputs are not a square image")
    cols = 16 if h >= 64 else 8
    rows = -(-h // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.7 + 0.6))
    for ax in np.ravel(axes):
        ax.axis("off")
    for k, ax in enumerate(np.ravel(axes)[:h]):
        w = W0[:, k].reshape(side, side)
        lim = np.abs(w).max() or 1.0
        ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_hidden_activations(hidden, labels, names, path, title) -> None:
    from fastnn.common.plotting import plt, save_figure

    fig, axes = plt.subplots(len(hidden), 1, figsize=(10, 2.4 * len(hidden) + 0.8), squeeze=False,
                             constrained_layout=True)
    for layer, (ax, acts) in enumerate(zip(axes[:, 0], hidden)):
        means = np.stack([acts[labels == c].mean(axis=0) if np.any(labels == c) else np.zeros(acts.shape[1])
                          for c in range(len(names))])                       # (C, H)
        im = ax.imshow(means, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel(f"unit of hidden layer {layer + 1}", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.02, label="mean activation")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_saliency(model, X, labels, preds, names, path, title, n: int = 8) -> None:
    from fastnn.common.plotting import plt, save_figure

    idx = np.arange(min(n, len(X)))
    grad = model.input_gradient(X[idx], np.eye(model.layer_sizes[-1], dtype=model.dtype)[preds[idx]])
    side = int(round(np.sqrt(X.shape[1])))
    fig, axes = plt.subplots(2, len(idx), figsize=(1.4 * len(idx), 3.3))
    for col, i in enumerate(idx):
        axes[0, col].imshow(X[i].reshape(side, side), cmap="gray_r")
        axes[0, col].set_title(f"true {names[labels[i]]}\npred {names[preds[i]]}", fontsize=7)
        axes[1, col].imshow(np.abs(grad[col]).reshape(side, side), cmap="hot")
        axes[0, col].axis("off")
        axes[1, col].axis("off")
    axes[1, 0].set_title("|d score / d pixel|", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_calibration(rel, path, title) -> None:
    from fastnn.common.plotting import plt, save_figure

    edges = np.array(rel["bin_edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    count = np.array(rel["count"])
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    used = count > 0
    ax.bar(centers[used], np.array(rel["accuracy"])[used], width=width * 0.95, color="tab:blue", edgecolor="black",
           label="accuracy in the bin")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(centers[used], np.array(rel["confidence"])[used], "o", color="tab:red", ms=4, label="mean confidence")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{title}\nexpected calibration error {100 * rel['ece']:.2f}%", fontsize=10)
    ax_hist.bar(centers, count, width=width * 0.95, color="gray")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("confidence (top class probability)")
    ax_hist.set_ylabel("test images")
    save_figure(fig, path)


def plot_history_figures(history_csv: Path, out: Path, title: str) -> list[str]:
    """learning_curves.png and dead_units.png from a run's history.csv; returns the files written."""
    from fastnn.common.plotting import plot_learning_curves, plt, save_figure

    try:
        rows = read_history(history_csv)
    except (ValueError, OSError) as exc:
        print(f"note: skipped the learning curves: {history_csv} is not a readable history.csv "
              f"({' '.join(str(exc).split())[:100]})", file=sys.stderr)
        return []
    if not rows:
        return []
    plot_learning_curves(rows, out / "learning_curves.png", title)
    written = ["learning_curves.png"]
    layers = sorted(k for k in rows[0] if k.startswith("dead_units_layer"))
    if layers:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in layers:
            ax.plot([r["epoch"] for r in rows], [100 * r[key] for r in rows], marker="o", ms=3,
                    label=key.replace("dead_units_layer", "hidden layer "))
        ax.set_xlabel("epoch")
        ax.set_ylabel("dead units (%)")
        ax.set_title(f"{title}: units that output 0 for all of 1,024 training images", fontsize=9)
        ax.legend(fontsize=8)
        save_figure(fig, out / "dead_units.png")
        written.append("dead_units.png")
    return written


def format_table(result: dict) -> str:
    lines = [f"{'class':>14s} {'precision':>9s} {'recall':>7s} {'f1':>7s} {'support':>8s}"]
    for row in result["per_class"]:
        lines.append(f"{row['name']:>14s} {row['precision']:9.4f} {row['recall']:7.4f} {row['f1']:7.4f} "
                     f"{row['support']:8d}")
    for avg in ("macro", "weighted"):
        m = result[avg]
        lines.append(f"{avg + ' avg':>14s} {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:7.4f} "
                     f"{result['samples']:8d}")
    lines.append(f"accuracy {100 * result['accuracy']:.2f}% on {result['samples']} {result['dataset']} test images; "
                 f"expected calibration error {100 * result['expected_calibration_error']:.2f}%")
    lines.append("dead hidden units (0 for every test image): "
                 + ", ".join(f"layer {i + 1} {100 * d:.1f}%" for i, d in enumerate(result["dead_units_per_layer"])))
    int8 = result.get("int8") or {}
    if int8.get("accuracy") is not None:
        lines.append(f"with layer 0 in int8 (model.to_int8(), an opt-in for speed): accuracy "
                     f"{100 * int8['accuracy']:.2f}%, {int8['labels_changed']} labels changed")
    if result["most_confused"]:
        lines.append("most confused: " + ", ".join(f"{p['true']}→{p['predicted']} ({p['count']})"
                                                   for p in result["most_confused"][:5]))
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def load_model_and_test(model_path=None, dataset: str | None = None, data_dir=None, backend: str = "auto", log=print,
                        data=None):
    """(model, test set, dataset name, shipped, model_path) as ``run`` resolves them: the model file
    (None: the pretrained model of ``dataset``, else MNIST's), the test split of ``dataset`` (None:
    the dataset the model file records, else MNIST) or of the image folder ``data``. Raises
    UserError, ModelFileError, DataError (one line each)."""
    from fastnn.inference.forward import inference_backend

    shipped = model_path is None
    if shipped:                                     # the pretrained model of the dataset (default mnist)
        from fastnn.pretrained import model_path as pretrained_path

        model_path = pretrained_path(dataset or "mnist")
        log(f"model: the pretrained {dataset or 'mnist'} model that ships with fastnn ({model_path.name}; --model "
            f"for your own)")
        dataset = None if data is not None else dataset or "mnist"
    model = NeuralNetwork.load(regular_file(model_path, "model file"), backend=inference_backend(backend))
    if data is not None:
        if dataset is not None:
            raise UserError("--data evaluates on an image folder; drop --dataset")
        if not Path(data).is_dir():
            raise UserError(f"--data {data} is not a folder of class folders")
        test = load_folder_dataset(data, "test")
        dataset = printable(Path(data).resolve().name) or "images"
        log(f"data: the test split of {data} ({len(test)} images"
            + ("" if folder_has_splits(data) else
               f": a stratified {FOLDER_TEST_FRACTION:.0%} of each class, seed {FOLDER_SPLIT_SEED}, "
               f"as train --data made")
            + ")")
    elif dataset is None and model.dataset and model.dataset not in DATASETS:
        raise UserError(f"{model_path} was trained on the image folder {printable(model.dataset)!r}: evaluate it "
                        f"with --data FOLDER")
    elif dataset is None:
        dataset = model.dataset if model.dataset in DATASETS else "mnist"
        log(f"dataset: {dataset} ({'recorded in the model file' if model.dataset else 'the default'}; "
            f"--dataset to choose)")
    elif model.dataset and model.dataset != dataset:
        log(f"warning: the model was trained on {printable(model.dataset)}, evaluated here on {dataset}")
    if data is None:
        test = load_dataset(dataset, "test", data_dir)
    check_fits(model, test, model_path, dataset)
    if model.class_names is not None and list(model.class_names) != list(test.class_names):
        log(f"warning: the model was trained on classes {', '.join(printable(c) for c in model.class_names[:3])}..., "
            f"not {dataset}'s")
    return model, test, dataset, shipped, model_path


def check_fits(model, test, model_path, dataset) -> None:
    """UserError unless the model's inputs and classes are the test set's."""
    if test.num_features != model.layer_sizes[0] or test.num_classes != model.layer_sizes[-1]:
        raise UserError(f"{model_path}: model {model.layer_sizes[0]} inputs / {model.layer_sizes[-1]} classes does "
                         f"not fit {dataset} ({test.num_features} / {test.num_classes})")


def run(model_path=None, dataset: str | None = None, out=None, data_dir=None, backend: str = "auto", log=print,
        overwrite: bool = False, data=None) -> dict:
    """Evaluate the model file (None: the pretrained model of ``dataset``, else MNIST's) on
    ``dataset``'s test split (None: the dataset the model file records, else MNIST), or on the
    test split of the image folder ``data`` (``fastnn.data.folders.load_folder_dataset``: the same
    split ``train --data`` made); write the JSON and figures into ``out`` (None: ``evaluation-<dataset>`` beside the
    model; a new or empty folder unless ``overwrite``). ``backend`` "auto": the fastest with a
    fused forward here (``fastnn.inference.forward.inference_backend``).

    Raises:
        UserError, ModelFileError, DataError: the model, the data or ``out`` (one line each).
    """
    model, test, dataset, shipped, model_path = load_model_and_test(model_path, dataset, data_dir, backend, log, data)
    if out is None and shipped:                     # never into the installed package
        out = new_run_folder(f"evaluation-{dataset}-pretrained")
    out = output_folder(out or Path(model_path).parent / f"evaluation-{dataset}", overwrite)
    try:
        return _write_evaluation(model, test, out, model_path, dataset, shipped, log)
    finally:
        release_folder(out)


def _write_evaluation(model, test, out: Path, model_path, dataset: str, shipped: bool, log) -> dict:
    """evaluation.json and the figures of ``model`` on ``test`` into the claimed folder ``out``."""
    result, arrays = evaluate_model(model, test)
    result["model"] = str(model_path)
    write_json(result, out / "evaluation.json")
    names = _names(test)
    cm = np.array(result["confusion_matrix"])
    arch = "-".join(map(str, model.layer_sizes))
    tag = f"{dataset} test set, {arch} MLP"
    X, labels, preds, probs = arrays["X"], arrays["labels"], arrays["preds"], arrays["probs"]
    plot_confusion(cm, names, out / "confusion_matrix.png",
                   f"Confusion matrix, {tag}: accuracy {100 * result['accuracy']:.2f}%")
    plot_misclassified(X, labels, preds, probs, names, out / "misclassified.png",
                       f"The most confident mistakes ({int((preds != labels).sum())} of {len(labels)} wrong), {tag}")
    plot_most_confused(metrics.most_confused_pairs(cm, 10), names, out / "most_confused.png",
                       f"Most confused class pairs, {tag}")
    plot_first_layer(model.weights[0], out / "first_layer_weights.png",
                     f"First-layer weights, one 28x28 image per unit (red +, blue -), {arch}")
    if arrays["hidden"]:
        plot_hidden_activations(arrays["hidden"], labels, names, out / "hidden_activations.png",
                                f"Mean activation of each hidden unit per class, {tag}")
    plot_saliency(model, X, labels, preds, names, out / "saliency.png",
                  "Saliency: gradient of the predicted class score w.r.t. the pixels (first test images)")
    plot_calibration(result["calibration"], out / "calibration.png", f"Reliability diagram, {tag}")
    written = ["evaluation.json", "confusion_matrix.png", "misclassified.png", "most_confused.png",
               "first_layer_weights.png", "hidden_activations.png", "saliency.png", "calibration.png"]
    history = Path(model_path).parent / "history.csv"
    if history.exists() and not shipped:
        written += plot_history_figures(history, out, f"{dataset}, {arch}")
    log(format_table(result))
    log(f"wrote {out}/{{{', '.join(written)}}}")
    return result
