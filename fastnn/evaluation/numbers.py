"""How well a digit model reads whole numbers: ``python -m fastnn.evaluate --numbers``.

Contract: ``number_sets(test, n, seed)`` makes the test sets, seeded; ``evaluate_numbers(model,
sets)`` reads every image with ``fastnn.model.numbers.read_number`` and counts; ``run_numbers``
writes ``numbers.json``, ``numbers.md`` and ``number_examples.png`` (readings drawn, wrong ones
first) into ``--out``.

The sets (2-4 digits each, Gaussian noise added):

- ``mnist-composed``: MNIST test digits side by side (``compose_number``), the gaps between their
  ink drawn from -1..6 pixels (so some touch or overlap slightly), moved up or down by up to 2
  pixels, noise 0.08; and the same digits with the two ways it splits: ``mnist-spaced`` (gaps
  1..6: no digits touch) and ``mnist-overlapping`` (gaps -2..0: every pair touches or overlaps);
- ``fonts``: numbers drawn in six TrueType fonts that matplotlib ships (``render_number``), 48
  pixels high, noise 0.05: printed digits, not handwritten ones.

A number counts as read when every digit is right and none is missing or extra.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastnn.common.cli import new_run_folder, output_folder, regular_file, release_folder
from fastnn.common.errors import UserError
from fastnn.common.io import atomic_write, write_json
from fastnn.data.datasets import to_float
from fastnn.data.images import ImageError
from fastnn.data.numbers import compose_number, number_fonts, render_number
from fastnn.model.network import NeuralNetwork
from fastnn.model.numbers import read_number

__all__ = ["COMPOSED_SETS", "number_sets", "evaluate_numbers", "run_numbers"]

# set name -> gaps between the digits' ink (pixels, inclusive)
COMPOSED_SETS = {"mnist-composed": (-1, 6), "mnist-spaced": (1, 6), "mnist-overlapping": (-2, 0)}


def number_sets(test, n: int = 1000, seed: int = 0) -> dict:
    """{set name: [(gray image (H, W) float32, the number's digits as text, the digits' own images
    (k, 28, 28) uint8 or None)]}: ``n`` numbers per MNIST-composed set from ``test`` (a digit
    ``Dataset``), with the test images they were composed of, and ``n`` in fonts (spread over them,
    None)."""
    sets = {}
    for index, (name, gap) in enumerate(COMPOSED_SETS.items()):
        rng = np.random.default_rng([seed, index])
        items = []
        for _ in range(n):
            idx = rng.integers(0, len(test), size=int(rng.integers(2, 5)))
            items.append((compose_number(test.images[idx], rng, gap=gap, noise=0.08),
                          "".join(str(int(test.labels[i])) for i in idx), test.images[idx]))
        sets[name] = items
    rng = np.random.default_rng([seed, len(COMPOSED_SETS)])
    fonts = number_fonts()
    items = []
    for i in range(n if fonts else 0):
        text = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(2, 5))))
        items.append((render_number(text, fonts[i % len(fonts)], rng=rng, noise=0.05), text, None))
    sets["fonts"] = items
    return sets


def evaluate_numbers(model: NeuralNetwork, sets: dict, progress: bool = True) -> dict:
    """Per set: numbers, the share read entirely right, the share with the right digit count, the
    per-digit accuracy where the count is right, the mean confidence of right and of wrong
    readings; for sets composed of known digit images, ``read_right_perfect_cuts``: the share whose
    digits the model all classifies right from their own 28x28 images (what perfect segmentation
    would reach: the bound the digit classifier sets); and up to 8 readings per set for the
    figure (wrong ones first)."""
    from tqdm import tqdm

    result = {}
    total = sum(len(v) for v in sets.values())
    with tqdm(total=total, desc="numbers", unit="image", disable=not progress, leave=False) as bar:
        for name, items in sets.items():
            right = count_right = digits_right = digits_total = alone_right = 0
            conf_right, conf_wrong, shown = [], [], []
            composed = all(item[2] is not None for item in items) and len(items) > 0
            for gray, truth, sources in items:
                if composed:                                   # a number reader's "none" class left out
                    probs = model.forward(to_float(sources.reshape(len(sources), -1), model.dtype))  # (k, C)
                    labels = probs[:, :10].argmax(axis=1)                                          # (k,)
                    alone_right += "".join(str(int(v)) for v in labels) == truth
                try:
                    reading = read_number(model, gray)
                    text, confidence = reading.text, reading.confidence
                except ImageError:
                    reading, text, confidence = None, "", 0.0
                ok = text == truth
                right += ok
                (conf_right if ok else conf_wrong).append(confidence)
                if len(text) == len(truth):
                    count_right += 1
                    digits_right += sum(a == b for a, b in zip(text, truth))
                    digits_total += len(truth)
                if reading is not None:
                    shown.append((ok, gray, reading, truth))
                bar.update()
            wrong = [s for s in shown if not s[0]][:4]              # up to 4 wrong, then right ones
            n = max(len(items), 1)
            result[name] = {
                "numbers": len(items), "read_right": right / n, "digit_count_right": count_right / n,
                "digit_accuracy_when_count_right": digits_right / digits_total if digits_total else None,
                "read_right_perfect_cuts": alone_right / n if composed else None,
                "mean_confidence_right": float(np.mean(conf_right)) if conf_right else None,
                "mean_confidence_wrong": float(np.mean(conf_wrong)) if conf_wrong else None,
                "examples": wrong + [s for s in shown if s[0]][:8 - len(wrong)],
            }
    return result


def format_markdown(result: dict) -> str:
    lines = ["| set | numbers | read entirely right | digit count right | digits right (count right) | "
             "confidence: right / wrong | right with perfect cuts |", "|---|---|---|---|---|---|---|"]
    for name, r in result.items():
        def pct(v):
            return "-" if v is None else f"{100 * v:.1f}%"

        def conf(v):
            return "-" if v is None else f"{v:.3f}"

        lines.append(f"| {name} | {r['numbers']} | **{pct(r['read_right'])}** | {pct(r['digit_count_right'])} | "
                     f"{pct(r['digit_accuracy_when_count_right'])} | {conf(r['mean_confidence_right'])} / "
                     f"{conf(r['mean_confidence_wrong'])} | {pct(r.get('read_right_perfect_cuts'))} |")
    return "\n".join(lines) + "\n"


def plot_examples(result: dict, path, title: str) -> None:
    """A row per set: its example readings, boxes and labels drawn in (wrong ones first)."""
    from fastnn.common.plotting import plt, save_figure

    rows = [(name, r["examples"]) for name, r in result.items() if r["examples"]]
    cols = max(len(e) for _, e in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.0 * cols, 1.3 * len(rows) + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, examples) in enumerate(rows):
        for c, (ok, gray, reading, truth) in enumerate(examples):
            ax = axes[r, c]
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
            for _, _, (top, left, bottom, right) in reading.digits:
                ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                           ec="tab:red", lw=0.8))
            ax.set_title(f"{reading.text} ({reading.confidence:.2f})" + ("" if ok else f"\nwas {truth}"),
                         fontsize=7, color="black" if ok else "tab:red")
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def run_numbers(model_path=None, out=None, data_dir=None, backend: str = "auto", log=print, overwrite: bool = False,
                n: int = 1000, seed: int = 0) -> dict:
    """``python -m fastnn.evaluate --numbers``: the model file (None: the shipped MNIST number reader) on
    ``number_sets`` of ``n`` numbers each; writes the files of the module docstring into ``out``
    (None: ``numbers`` beside the model, or a new folder under runs/ for the shipped one).

    Raises:
        UserError, ModelFileError, DataError: the model (not a digit model), the data or ``out``.
    """
    from fastnn.data.datasets import load_dataset
    from fastnn.inference.forward import inference_backend

    if n < 1:
        raise UserError(f"--limit must be a positive number of numbers per set, got {n}")
    shipped = model_path is None
    if shipped:
        from fastnn.pretrained import model_path as pretrained_path
        from fastnn.pretrained import variant_path

        model_path = variant_path("mnist", "numbers") or pretrained_path("mnist")
        log(f"model: the pretrained mnist number reader that ships with fastnn ({model_path.name}; --model for "
            f"your own)")
    model = NeuralNetwork.load(regular_file(model_path, "model file"), backend=inference_backend(backend))
    test = load_dataset("mnist", "test", data_dir)
    if out is None and shipped:
        out = new_run_folder("numbers-pretrained")
    out = output_folder(out or Path(model_path).parent / "numbers", overwrite)
    try:
        log(f"reading {n} numbers per set (2-4 digits), seed {seed}")
        result = evaluate_numbers(model, number_sets(test, n, seed))
        plot_examples(result, out / "number_examples.png", f"numbers read by {Path(model_path).name} (seed {seed})")
        for r in result.values():
            del r["examples"]
        record = {"model": str(model_path), "seed": seed, "sets": result}
        write_json(record, out / "numbers.json")
        table = format_markdown(result)
        with atomic_write(out / "numbers.md", "w") as f:
            f.write(f"# Numbers read by {Path(model_path).name} (seed {seed})\n\n{table}")
        log(table)
        log(f"wrote {out}/{{numbers.json, numbers.md, number_examples.png}}")
        return record
    finally:
        release_folder(out)
