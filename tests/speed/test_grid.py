"""The shape grid's points, FLOP counts and figure (``fastnn.speed.grid``)."""
from __future__ import annotations

from fastnn.speed.grid import BATCHES, DEPTHS, WIDTHS, epoch_flop, grid_points, plot_grid


def test_the_grid_covers_the_issue_s_shapes():
    points = grid_points()
    assert [p["value"] for p in points if p["sweep"] == "width"] == WIDTHS == [64, 128, 256, 512, 1024]
    assert [p["value"] for p in points if p["sweep"] == "batch"] == BATCHES == [16, 32, 64, 128, 256, 512, 1024]
    assert [len(p["layers"]) - 2 for p in points if p["sweep"] == "depth"] == DEPTHS == [1, 2, 3, 4]
    assert {"width": [784, 1024, 512, 10]}["width"] in [p["layers"] for p in points]
    assert all(p["batch"] == 64 for p in points if p["sweep"] != "batch")


def test_epoch_flop_counts_each_product_once_per_pass():
    # 784-128-64-10: forward and weight gradient for every layer, input gradient for the last two
    products = [784 * 128, 128 * 64, 64 * 10]
    assert epoch_flop([784, 128, 64, 10], 64, samples=1) == 2 * (2 * sum(products) + sum(products[1:]))
    sparse = epoch_flop([784, 128, 64, 10], 64, density=0.2, samples=1)
    assert sparse == 2 * (2 * 0.2 * products[0] + 2 * sum(products[1:]) + sum(products[1:]))
    assert epoch_flop([784, 128, 64, 10], 64) == 60_000 * epoch_flop([784, 128, 64, 10], 64, samples=1)


def test_plot_grid_draws_every_sweep(tmp_path):
    rows = [{"sweep": p["sweep"], "value": p["value"], "layers": p["layers"], "batch": p["batch"], "trainer": t,
             "epoch_s": 0.1 * (1 + i)} for p in grid_points() for i, t in enumerate(["numba", "jax-scan"])]
    plot_grid(rows, tmp_path / "grid.png", 150.0, 0.19)
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    plot_grid([r for r in rows if r["sweep"] == "width"], tmp_path / "width.png", None, 0.19)   # a part, no limits
    assert (tmp_path / "width.png").exists()
