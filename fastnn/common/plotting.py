"""Figures written by fastnn's commands (matplotlib, non-interactive Agg backend)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fastnn.common.io import atomic_write  # noqa: E402

# One colour per backend or comparator in every figure (benchmarks_report, scaling).
COLORS = {"reference": "tab:gray", "numpy": "tab:blue", "numba-kernels": "tab:cyan", "numba": "tab:orange",
          "numba-timers": "moccasin", "cython": "tab:green", "cython-timers": "palegreen", "torch": "tab:red",
          "jax-step": "plum", "jax-scan": "tab:purple", "onnxruntime": "black", "openvino": "tab:brown",
          "numba-augment": "sandybrown", "cython-augment": "yellowgreen", "numba-robust": "chocolate",
          "cython-robust": "darkolivegreen", "cython-int8": "deeppink"}


def save_figure(fig, path, dpi: int = 120) -> None:
    """Render ``fig`` to PNG and write it atomically to ``path``; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def plot_learning_curves(history: list[dict], path, title: str = "") -> None:
    """Loss and accuracy per epoch, train against validation, side by side.

    ``history``: rows with keys epoch, train_loss, val_loss, train_accuracy, val_accuracy.
    """
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], style, ms=3, label=split)
        ax_acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], style, ms=3, label=split)
    ax_loss.set(xlabel="epoch", ylabel="mean cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
