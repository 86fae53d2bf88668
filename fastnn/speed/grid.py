"""The shape grid: every trainer's epoch at every width, batch size and depth, against JAX.

Points (``grid_points``), all ReLU, SGD with momentum, MNIST:

- width: hidden width H = 64 .. 1024 as 784-H-H/2-10, batch 64;
- batch: 16 .. 1024 at the seed network 784-128-64-10;
- depth: 1 to 4 hidden layers (784-128-10, 784-128-64-10, 784-128-64-32-10, 784-128-64-32-16-10),
  batch 64.

``benchmarks/test_grid.py`` times each point's trainers interleaved (A B C D A B C D) and
records them; ``plot_grid`` draws epoch time against each sweep, one line per trainer, with
two compute limits at the machine's best sgemm rate: the dense model FLOPs of an epoch, and the
same with layer 0's two products (forward x W0, gradient x^T G0) scaled by the share of
non-zero pixels, the work a sparse layer 0 must still do (``epoch_flop``).
"""
from __future__ import annotations

__all__ = ["BATCHES", "DEPTHS", "WIDTHS", "epoch_flop", "grid_points", "plot_grid"]

WIDTHS = [64, 128, 256, 512, 1024]
BATCHES = [16, 32, 64, 128, 256, 512, 1024]
DEPTHS = [1, 2, 3, 4]
SEED_LAYERS = [784, 128, 64, 10]
EPOCH_SAMPLES = 60_000


def grid_points() -> list[dict]:
    """Every point: {"sweep": "width" | "batch" | "depth", "value", "layers", "batch"}."""
    points = [{"sweep": "width", "value": h, "layers": [784, h, h // 2, 10], "batch": 64} for h in WIDTHS]
    points += [{"sweep": "batch", "value": b, "layers": list(SEED_LAYERS), "batch": b} for b in BATCHES]
    hidden = [128, 64, 32, 16]
    points += [{"sweep": "depth", "value": d, "layers": [784, *hidden[:d], 10], "batch": 64} for d in DEPTHS]
    return points


def epoch_flop(layers, batch: int, density: float = 1.0, samples: int = EPOCH_SAMPLES) -> float:
    """Model FLOPs of an epoch of ``samples`` (2 per multiply-add): per step the forward products,
    the weight gradients and the input gradients of every layer but the first. ``density`` < 1
    scales layer 0's forward product and weight gradient by the share of non-zero inputs: the
    arithmetic a sparse first layer cannot skip."""
    products = [n_in * n_out for n_in, n_out in zip(layers[:-1], layers[1:])]
    per_sample = 2 * (2 * density * products[0] + 2 * sum(products[1:]) + sum(products[1:]))
    return per_sample * samples


def plot_grid(rows: list[dict], path, sgemm_gflops: float | None, density: float) -> None:
    """Three panels (width, batch, depth): epoch seconds (60,000 samples) per trainer, log scale,
    with the dense and the sparse compute limits at ``sgemm_gflops`` when given.

    ``rows``: {"sweep", "value", "layers", "batch", "trainer", "epoch_s"} each."""
    from fastnn.common.plotting import COLORS, plt, save_figure

    sweeps = [("width", "hidden width H (784-H-H/2-10, batch 64)"), ("batch", "batch size (784-128-64-10)"),
              ("depth", "hidden layers (128, 64, 32, 16; batch 64)")]
    trainers = list(dict.fromkeys(r["trainer"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, (sweep, xlabel) in zip(axes, sweeps):
        points = sorted({(r["value"], tuple(r["layers"]), r["batch"]) for r in rows if r["sweep"] == sweep})
        if not points:
            ax.set_visible(False)
            continue
        xs = [p[0] for p in points]
        for trainer in trainers:
            ys = {r["value"]: r["epoch_s"] for r in rows if r["sweep"] == sweep and r["trainer"] == trainer}
            ax.plot([x for x in xs if x in ys], [ys[x] for x in xs if x in ys], marker="o", label=trainer,
                    color=COLORS.get(trainer))
        if sgemm_gflops:
            dense = [epoch_flop(layers, b) / (sgemm_gflops * 1e9) for _, layers, b in points]
            sparse = [epoch_flop(layers, b, density) / (sgemm_gflops * 1e9) for _, layers, b in points]
            ax.plot(xs, dense, "k--", lw=1, label=f"dense limit ({sgemm_gflops:.0f} GFLOP/s)")
            ax.plot(xs, sparse, "k:", lw=1, label=f"sparse layer-0 limit ({100 * density:.0f}% non-zero)")
        if sweep != "depth":
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("epoch (60,000 samples), s")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Epoch time at every shape, side by side (interleaved per point)")
    save_figure(fig, path)
