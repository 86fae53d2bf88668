"""The corruption benchmark: accuracy under corrupted test images, side by side for several models.

Contract: ``evaluate_corruptions(models, test, ...)`` corrupts the test set once per (kind,
severity) with ``fastnn.data.corruptions.corrupt`` (seeded: every model sees the same images)
and returns every model's accuracy on each; ``run_corruptions`` is ``python -m fastnn.evaluate
--corruptions``: it loads the model and the shipped torch-trained baseline of the same network,
evaluates both and writes into ``--out``:

- ``corruptions.json``: per model, the clean accuracy, the accuracy per kind and severity, the
  mean per kind, and the summaries below (for all kinds, and for the held-out kinds when named);
- ``corruptions.md``: the same as a Markdown table (kinds down, models across);
- ``corruption_examples.png``: a few test images under every kind and severity;
- ``corruption_accuracy.png``: a bar chart of the mean accuracy per kind, a bar per model.

The summaries, after Hendrycks and Dietterich (ICLR 2019) and Mu and Gilmer (2019): the mean
corrupted accuracy (over kinds and severities), the clean and mean corrupted errors, the
**gap** (mean corrupted error - clean error: what corruption costs) and the **relative error**
(mean corrupted error / clean error).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastnn.common.cli import new_run_folder, output_folder, printable, regular_file, release_folder
from fastnn.common.errors import UserError
from fastnn.common.io import atomic_write, write_json
from fastnn.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt, require_scikit_image
from fastnn.model.network import NeuralNetwork

__all__ = ["evaluate_corruptions", "summarize", "run_corruptions", "format_markdown"]


def _accuracy(model: NeuralNetwork, images: np.ndarray, labels: np.ndarray, batch_size: int = 4096) -> float:
    """Accuracy of ``model`` on (N, H, W) uint8 images (x = pixel / 255, as the test set's features)."""
    flat = images.reshape(len(images), -1)                                              # (N, D) uint8
    preds = np.concatenate([model.predict(flat[i:i + batch_size].astype(model.dtype) / model.dtype.type(255))
                            for i in range(0, len(flat), batch_size)])
    return float((preds == labels).mean())


def summarize(result: dict, kinds) -> dict:
    """The summaries of one model's ``result`` (as ``evaluate_corruptions`` returns) over ``kinds``:
    mean corrupted accuracy and error, the clean error, the gap and the relative error."""
    accs = [result["accuracy"][k][str(s)] for k in kinds for s in result["severities"]]
    mean_acc = float(np.mean(accs))
    clean_err = 1.0 - result["clean_accuracy"]
    mean_err = 1.0 - mean_acc
    return {"kinds": list(kinds), "mean_corrupted_accuracy": mean_acc, "clean_error": clean_err,
            "mean_corrupted_error": mean_err, "error_gap": mean_err - clean_err,
            "relative_error": mean_err / clean_err if clean_err > 0 else None}


def evaluate_corruptions(models: dict, test, kinds=None, severities=SEVERITIES, seed: int = 0, held_out=None,
                         progress: bool = True, examples: int = 0) -> dict:
    """Every model of ``models`` (label -> NeuralNetwork) on ``test`` (a ``Dataset``) clean and under
    each corruption of ``kinds`` (default: all of ``CORRUPTIONS``) at each of ``severities``, the
    same corrupted images for every model (``corrupt(test.images, kind, severity, seed)``).

    Returns {"samples", "seed", "severities", "kinds", "held_out", "models": {label: {"clean_accuracy",
    "accuracy": {kind: {severity: acc}}, "mean_accuracy": {kind: acc}, "all": summary, "held_out":
    summary or None}}, "examples": {kind: (severities, examples, H, W) uint8} when ``examples``}.
    Raises ValueError for an unknown kind or severity, UserError without scikit-image.
    """
    from tqdm import tqdm

    kinds = list(CORRUPTIONS) if kinds is None else list(kinds)
    for k in kinds + list(held_out or ()):
        if k not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {k!r}; choose from {', '.join(CORRUPTIONS)}")
    for s in severities:
        if s not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {s!r}")
    require_scikit_image()
    labels = np.asarray(test.labels, dtype=np.int64)
    out = {"samples": int(len(labels)), "seed": seed, "severities": list(severities), "kinds": kinds,
           "held_out": [k for k in kinds if k in set(held_out or ())], "models": {}}
    results = {label: {"clean_accuracy": _accuracy(m, test.images, labels), "severities": list(severities),
                       "accuracy": {}} for label, m in models.items()}
    shown = {}
    with tqdm(total=len(kinds) * len(severities), desc="corruptions", unit="set", disable=not progress,
              leave=False) as bar:
        for kind in kinds:
            for s in severities:
                images = corrupt(test.images, kind, s, seed)                            # (N, H, W) uint8
                for label, m in models.items():
                    results[label]["accuracy"].setdefault(kind, {})[str(s)] = _accuracy(m, images, labels)
                if examples:
                    shown.setdefault(kind, []).append(images[:examples])
                bar.update()
    for label, r in results.items():
        r["mean_accuracy"] = {k: float(np.mean(list(r["accuracy"][k].values()))) for k in kinds}
        r["all"] = summarize(r, kinds)
        r["held_out"] = summarize(r, out["held_out"]) if out["held_out"] else None
        del r["severities"]
        out["models"][label] = r
    if examples:
        out["examples"] = {k: np.stack(v) for k, v in shown.items()}
        out["clean_examples"] = test.images[:examples]
    return out


def format_markdown(result: dict) -> str:
    """``result``'s table: a row per kind (mean over severities, then each severity), a column per
    model; then the summaries."""
    labels = list(result["models"])
    sev = result["severities"]
    head = "| corruption | " + " | ".join(f"{printable(m)}: mean | " + " | ".join(f"s{s}" for s in sev)
                                          for m in labels) + " |"
    rule = "|---|" + "---|" * (len(labels) * (len(sev) + 1))
    lines = [head, rule]
    clean = " | ".join(f"{100 * result['models'][m]['clean_accuracy']:.2f} |" + " |" * len(sev) for m in labels)
    lines.append(f"| clean | {clean}".rstrip())
    for k in result["kinds"]:
        mark = " (held out)" if k in result["held_out"] else ""
        cells = " | ".join(f"{100 * result['models'][m]['mean_accuracy'][k]:.2f} | "
                           + " | ".join(f"{100 * result['models'][m]['accuracy'][k][str(s)]:.2f}" for s in sev)
                           for m in labels)
        lines.append(f"| {k}{mark} | {cells} |")
    lines += ["", "| model | clean error | mean corrupted error | gap | relative error |"
              + (" held-out gap |" if result["held_out"] else ""),
              "|---|---|---|---|---|" + ("---|" if result["held_out"] else "")]
    for m in labels:
        a = result["models"][m]["all"]
        rel = f"{a['relative_error']:.1f}x" if a["relative_error"] is not None else "-"
        row = (f"| {printable(m)} | {100 * a['clean_error']:.2f}% | {100 * a['mean_corrupted_error']:.2f}% | "
               f"{100 * a['error_gap']:.2f} points | {rel} |")
        if result["held_out"]:
            row += f" {100 * result['models'][m]['held_out']['error_gap']:.2f} points |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def plot_examples(result: dict, path, title: str) -> None:
    """A row per kind: the clean images, then each severity's (``result['examples']``)."""
    from fastnn.common.plotting import plt, save_figure

    kinds, sev = result["kinds"], result["severities"]
    clean = result["clean_examples"]
    n = len(clean)
    cols = n * (len(sev) + 1)
    fig, axes = plt.subplots(len(kinds), cols, figsize=(0.55 * cols + 1.2, 0.6 * len(kinds) + 0.6), squeeze=False)
    for r, k in enumerate(kinds):
        panels = [clean] + list(result["examples"][k])
        for g, images in enumerate(panels):
            for j in range(n):
                ax = axes[r, g * n + j]
                ax.imshow(images[j], cmap="gray", vmin=0, vmax=255)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and j == 0:
                    ax.set_title("clean" if g == 0 else f"severity {sev[g - 1]}", fontsize=7, loc="left")
        axes[r, 0].set_ylabel(k.replace("_", " "), rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.05)
    save_figure(fig, path)


def plot_accuracy(result: dict, path, title: str) -> None:
    """Mean accuracy per kind (over severities), a bar per model, the clean accuracies as lines."""
    from fastnn.common.plotting import plt, save_figure

    kinds, labels = result["kinds"], list(result["models"])
    x = np.arange(len(kinds))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(kinds) + 2), 4.2))
    for i, m in enumerate(labels):
        r = result["models"][m]
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, [100 * r["mean_accuracy"][k] for k in kinds], width,
                      label=f"{printable(m)} (clean {100 * r['clean_accuracy']:.2f}%, mean corrupted "
                            f"{100 * r['all']['mean_corrupted_accuracy']:.1f}%)")
        ax.axhline(100 * r["clean_accuracy"], color=bars.patches[0].get_facecolor(), lw=0.8, ls="--")
    ax.set_xticks(x, [k.replace("_", "\n") + ("\n(held out)" if k in result["held_out"] else "") for k in kinds],
                  fontsize=7)
    ax.set_ylabel("accuracy, mean over severities (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def run_corruptions(model_path=None, dataset: str | None = None, out=None, data_dir=None, backend: str = "auto",
                    log=print, overwrite: bool = False, kinds=None, severities=SEVERITIES, seed: int = 0,
                    baselines=None, held_out=None, limit: int | None = None, examples: int = 4) -> dict:
    """``python -m fastnn.evaluate --corruptions``: the model file (None: the shipped model of
    ``dataset``) and ``baselines`` (model files; None: the shipped torch-trained baseline of the
    dataset, when one ships; [] for none) on the first ``limit`` test images (None: all), clean and
    corrupted; writes the files of the module docstring into ``out`` (None: ``corruptions-<dataset>``
    beside the model, or a new folder under runs/ for the shipped one). Returns the result dict
    (without the example images).

    Raises:
        UserError, ModelFileError, DataError: the model, the data, ``out`` or a missing scikit-image.
    """
    from fastnn.evaluation.report import check_fits, load_model_and_test
    from fastnn.inference.forward import inference_backend
    from fastnn.pretrained import variant_path

    require_scikit_image()                          # before any work: the one-line fix first
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of test images, got {limit}")
    model, test, dataset, shipped, model_path = load_model_and_test(model_path, dataset, data_dir, backend, log)
    if len(test.images.shape) != 3:
        raise UserError(f"the corruptions work on (N, H, W) images; {dataset}'s are {test.images.shape}")
    if limit is not None:
        test = type(test)(test.images[:limit], test.labels[:limit], test.class_names, test.name)
    models = {"fastnn" if shipped else printable(Path(model_path).name): model}
    if baselines is None:
        path = variant_path(dataset, "torch") if dataset in ("mnist", "fashion-mnist") else None
        baselines = [path] if path is not None else []
        if path is None:
            log(f"no torch-trained baseline ships for {dataset}: --baseline MODEL to compare with one")
        else:
            log(f"baseline: the same network trained by PyTorch ({path.name}; --baseline for others)")
    for b in baselines:
        other = NeuralNetwork.load(regular_file(b, "baseline model file"), backend=inference_backend(backend))
        check_fits(other, test, b, dataset)
        label = "torch" if Path(b) == variant_path(dataset, "torch") else printable(Path(b).name)
        while label in models:
            label += "'"
        models[label] = other
    if out is None and shipped:                     # never into the installed package
        out = new_run_folder(f"corruptions-{dataset}-pretrained")
    out = output_folder(out or Path(model_path).parent / f"corruptions-{dataset}", overwrite)
    try:
        kinds = list(CORRUPTIONS) if kinds is None else list(kinds)
        log(f"corrupting {len(test)} {dataset} test images: {len(kinds)} kinds x {len(severities)} severities, "
            f"seed {seed}; models: {', '.join(models)}")
        result = evaluate_corruptions(models, test, kinds, severities, seed, held_out, examples=examples)
        title = f"{dataset}, {len(test)} test images, seed {seed}"
        if examples:
            plot_examples(result, out / "corruption_examples.png", f"corruptions ({title})")
            del result["examples"], result["clean_examples"]
        plot_accuracy(result, out / "corruption_accuracy.png", f"accuracy under corruption ({title})")
        result.update({"dataset": dataset, "model": str(model_path),
                       "baselines": [str(b) for b in baselines]})
        write_json(result, out / "corruptions.json")
        table = format_markdown(result)
        with atomic_write(out / "corruptions.md", "w") as f:
            f.write(f"# Accuracy under corruption: {title}\n\n{table}")
        log(table)
        written = ["corruptions.json", "corruptions.md", "corruption_accuracy.png"]
        log(f"wrote {out}/{{{', '.join(written + (['corruption_examples.png'] if examples else []))}}}")
        return result
    finally:
        release_folder(out)
