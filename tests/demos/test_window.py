"""``python -m fastnn.demo`` (matplotlib widgets), headless on Agg: synthetic mouse events draw
strokes through the figure's own event handlers, and the network must read them."""
from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from fastnn.demos.window import CANVAS, SAMPLE_SEVEN, Demo, brush_stroke  # noqa: E402

ONE = [[(140, 40), (140, 100), (141, 160), (141, 235)]]


@pytest.fixture
def demo():
    d = Demo("mnist")
    yield d
    import matplotlib.pyplot as plt

    plt.close(d.fig)


def test_brush_paints_a_soft_round_stroke():
    canvas = np.zeros((50, 50), dtype=np.float32)
    brush_stroke(canvas, 10, 25, 40, 25, radius=5)
    assert canvas[25, 10:41].min() == 1.0                     # the stroke's core is full ink
    assert canvas[25 + 4, 25] > 0 and canvas[25 + 4, 25] < 1  # the soft edge
    assert canvas[25 + 6, 25] == 0 and canvas[25, 47] == 0    # nothing beyond the radius
    brush_stroke(canvas, -100, -100, -90, -90)                # off the canvas: nothing, no error
    assert canvas.max() == 1.0


@pytest.mark.parametrize("strokes,label", [(ONE, "1"), (SAMPLE_SEVEN, "7")])
def test_mouse_strokes_are_read_as_the_digit(demo, strokes, label):
    probs = demo.draw_strokes(strokes)
    assert probs.shape == (10,) and abs(float(probs.sum()) - 1) < 1e-5
    assert demo.prediction == label and probs.max() > 0.5
    assert demo.canvas.max() == 1.0 and demo.input_image.get_array().max() > 0.9


def test_moves_without_a_press_draw_nothing_and_clear_empties(demo):
    from matplotlib.backend_bases import MouseEvent

    demo.fig.canvas.draw()
    px, py = demo.ax_draw.transData.transform((140, 140))
    demo.fig.canvas.callbacks.process("motion_notify_event",
                                      MouseEvent("motion_notify_event", demo.fig.canvas, px, py))
    assert demo.canvas.max() == 0                                 # hovering is not drawing
    demo.draw_strokes(ONE)
    demo.clear()
    assert demo.canvas.max() == 0 and demo.classify_canvas() is None
    assert all(bar.get_width() == 0 for bar in demo.bars)


def test_random_test_image_and_dataset_switch(mnist_dir):
    d = Demo("mnist", data_dir=mnist_dir, seed=1)
    truth, pred = d.random_test_image()
    assert truth in d.class_names and pred in d.class_names
    assert d.canvas.shape == (CANVAS, CANVAS) and d.canvas.max() > 0.5
    d.set_dataset("fashion-mnist")
    assert d.class_names[0] == "T-shirt/top" and d.model.dataset == "fashion-mnist"
    truth, pred = d.random_test_image()
    assert truth in d.class_names


def test_screenshot_command_writes_a_png(tmp_path):
    out = tmp_path / "demo.png"
    res = subprocess.run([sys.executable, "-m", "fastnn.demo", "--screenshot", str(out)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "the network reads 7" in res.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_display_is_one_line_and_status_2():
    res = subprocess.run([sys.executable, "-m", "fastnn.demo"], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert res.returncode == 2 and res.stderr.startswith("error: matplotlib's backend is 'Agg'")


def test_demo_runs_in_jupyter_with_ipympl():
    """``%matplotlib widget`` then ``Demo()`` in a kernel (nbclient): the figure is ipympl's
    widget canvas and strokes drawn through it are read."""
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    import importlib.util

    if importlib.util.find_spec("ipympl") is None:        # looked up, not imported: it would patch this process
        pytest.skip("ipympl not installed (%matplotlib widget needs it): pip install -e '.[test]'")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("%matplotlib widget"),
                      nbformat.v4.new_code_cell("from fastnn.demos.window import Demo, SAMPLE_SEVEN\nd = Demo()\n"
                                                "d.draw_strokes(SAMPLE_SEVEN)\n"
                                                "print(type(d.fig.canvas).__module__, d.prediction)")]
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[1].outputs)
    assert printed.startswith("ipympl") and printed.strip().endswith(" 7")


def test_number_mode_reads_two_drawn_digits_and_boxes_them(demo):
    demo.set_number_mode(True)
    assert demo.canvas.shape[1] > 2 * demo.canvas.shape[0]
    strokes = [[(x * 0.6 + dx, y * 0.6 + 10) for x, y in stroke] for dx in (40, 300) for stroke in SAMPLE_SEVEN]
    demo.draw_strokes(strokes)
    assert demo.reading["number"] == "77"
    assert len(demo._boxes) == 4                                        # a box and a label per digit
    assert demo.input_image.get_array().shape == (28, 56)
    demo.clear()
    assert demo.reading is None and demo._boxes == []


def test_the_sliders_and_the_robust_model(demo):
    demo.draw_strokes(ONE)
    clean = demo.input_image.get_array().copy()
    demo.sliders["noise"].set_val(0.2)                                  # through the widget, as a user does
    assert not np.array_equal(demo.input_image.get_array(), clean)
    demo.set_variant("robust")
    assert demo.model.input_norm == "background"
    demo.sliders["noise"].set_val(0.0)
    assert demo.prediction == "1" and np.array_equal(demo.input_image.get_array(), clean)
    demo.set_dataset("fashion-mnist")                                   # no robust model there: the standard one
    assert demo.variant == "standard" and demo.model.input_norm == "none"
