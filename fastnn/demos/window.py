"""Draw a digit (or a piece of clothing) and watch the network read it: the ``Demo`` window behind
``python -m fastnn.demo``.
(``--web``: the same in a web page, ``fastnn.demos.web``.)

A matplotlib window (or a Jupyter cell with ``%matplotlib widget``, ipympl) with:

- a drawing canvas (280 x 280 pixels; press and drag the mouse; a soft round brush),
- the 28 x 28 input as the network sees it: the canvas after the MNIST-style preprocessing that
  ``python -m fastnn.predict`` applies (``fastnn.predict.preprocess``, the same code),
- the class probabilities as a live bar chart, and the two hidden layers' activations,
- buttons: Clear; Random test image (a real test image, its label and the prediction);
  MNIST / Fashion-MNIST (switch to that dataset's pretrained model); Number (a wide canvas: draw
  a whole number, read digit by digit, ``fastnn.model.numbers.read_number``, each digit boxed);
  Robust model (MNIST's robust model, ``NeuralNetwork.pretrained("mnist", variant="robust")``);
- two sliders, noise and blur: the drawing is read through Gaussian noise and a Gaussian blur of
  that strength (``fastnn.demos.state.degrade``, the web page's too), so robustness shows live.

The pretrained model of ``--dataset`` by default (``NeuralNetwork.pretrained``), or ``--model``
for your own (the dataset buttons then only change which test images are drawn). From Python:
``Demo().show()``, or ``Demo()`` in a notebook cell.
"""
from __future__ import annotations

import numpy as np

from fastnn.data.datasets import DATASETS

__all__ = ["Demo", "brush_stroke"]

CANVAS = 280          # drawing canvas, pixels per side (10 per input pixel)
NUMBER_CANVAS = (200, 600)   # the Number mode's canvas, (height, width) pixels
# A 7 as two mouse strokes on the canvas (pixels): the bar, then the stem
SAMPLE_SEVEN = [[(70, 60), (130, 58), (190, 57), (215, 60)],
                [(215, 60), (190, 110), (165, 160), (145, 215), (135, 240)]]
BRUSH_RADIUS = 11.0   # pixels: a stroke ~2 input pixels wide, like MNIST's pen


def brush_stroke(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float, radius: float = BRUSH_RADIUS) -> None:
    """Paint a soft round brush along the segment (x0, y0) -> (x1, y1) into ``canvas`` (H, W)
    float in [0, 1], in place: ink = 1 inside 0.6 radius, falling off linearly to 0 at the radius,
    and the maximum with what is there (strokes never darken)."""
    H, W = canvas.shape
    lo_x, hi_x = int(max(0, min(x0, x1) - radius - 1)), int(min(W, max(x0, x1) + radius + 2))
    lo_y, hi_y = int(max(0, min(y0, y1) - radius - 1)), int(min(H, max(y0, y1) + radius + 2))
    if lo_x >= hi_x or lo_y >= hi_y:
        return
    yy, xx = np.mgrid[lo_y:hi_y, lo_x:hi_x].astype(np.float32)                 # (h, w) pixel centres
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.zeros_like(xx) if length2 == 0 else np.clip(((xx - x0) * dx + (yy - y0) * dy) / length2, 0, 1)
    dist = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))                  # (h, w) to the segment
    ink = np.clip((radius - dist) / (0.4 * radius), 0, 1)                     # (h, w) soft edge
    np.maximum(canvas[lo_y:hi_y, lo_x:hi_x], ink, out=canvas[lo_y:hi_y, lo_x:hi_x])


class Demo:
    """The interactive figure (see the module docstring).

    Args:
        dataset: "mnist" or "fashion-mnist": whose pretrained model and test images.
        model_path: a model file of your own instead of the pretrained one.
        data_dir: where the test images are (default: $FASTNN_DATA_DIR, else the user cache).
        seed: seeds the Random test image button.
    Raises:
        ModelFileError, FileNotFoundError: ``model_path`` is not a model file.
    """

    def __init__(self, dataset: str = "mnist", model_path=None, data_dir=None, seed: int = 0):
        import matplotlib.pyplot as plt
        from matplotlib.widgets import Button, Slider

        from fastnn.demos.state import MAX_BLUR, DemoState

        self.data_dir, self.model_path = data_dir, model_path
        self.state = DemoState(model_path, data_dir, seed)                  # the models and test sets, cached
        self.rng = self.state.rng
        self.noise, self.blur, self.variant, self.number_mode = 0.0, 0.0, "standard", False
        self.reading = None                                                 # the Number mode's last reading
        self.canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)          # (280, 280) ink in [0, 1]
        self._last = None                                                   # the stroke's previous point
        self.fig = plt.figure(figsize=(11, 6.2))
        grid = self.fig.add_gridspec(2, 4, height_ratios=[6, 1.6], width_ratios=[3, 2, 3, 1.2])
        self.ax_draw = self.fig.add_subplot(grid[0, 0])
        self.ax_input = self.fig.add_subplot(grid[0, 1])
        self.ax_probs = self.fig.add_subplot(grid[0, 2:])
        self.ax_hidden = [self.fig.add_subplot(grid[1, 0:2]), self.fig.add_subplot(grid[1, 2:])]
        self.draw_image = self.ax_draw.imshow(self.canvas, cmap="gray", vmin=0, vmax=1)
        self.input_image = self.ax_input.imshow(np.zeros((28, 28)), cmap="gray", vmin=0, vmax=1)
        for ax, title in ((self.ax_draw, "draw here (press and drag)"), (self.ax_input, "what the network sees")):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
        buttons = [("Clear", self.clear), ("Random test image", self.random_test_image),
                   ("MNIST", lambda event: self.set_dataset("mnist")),
                   ("Fashion-MNIST", lambda event: self.set_dataset("fashion-mnist")),
                   ("Number", lambda event: self.set_number_mode(not self.number_mode)),
                   ("Robust model", lambda event: self.set_variant("standard" if self.variant == "robust"
                                                                    else "robust"))]
        self.buttons = {}
        for i, (label, action) in enumerate(buttons):
            ax = self.fig.add_axes((0.04 + 0.16 * i, 0.02, 0.145, 0.055))
            self.buttons[label] = Button(ax, label)
            self.buttons[label].on_clicked(action)
        self.sliders = {"noise": Slider(self.fig.add_axes((0.1, 0.095, 0.3, 0.03)), "noise", 0.0, 0.6, valinit=0.0),
                        "blur": Slider(self.fig.add_axes((0.58, 0.095, 0.3, 0.03)), "blur", 0.0, MAX_BLUR,
                                       valinit=0.0)}
        self.sliders["noise"].on_changed(lambda value: self.set_degradation(noise=value))
        self.sliders["blur"].on_changed(lambda value: self.set_degradation(blur=value))
        self.fig.canvas.mpl_connect("button_press_event", self._press)
        self.fig.canvas.mpl_connect("motion_notify_event", self._move)
        self.fig.canvas.mpl_connect("button_release_event", self._release)
        self.set_dataset(dataset, redraw=False)
        self.fig.subplots_adjust(left=0.04, right=0.98, top=0.9, bottom=0.2, hspace=0.55, wspace=0.25)

    # ------------------------------------------------------------------ model and data
    def set_dataset(self, dataset: str, redraw: bool = True) -> None:
        """Switch to ``dataset``: its pretrained model (unless a --model was given) and test images."""
        self.dataset = dataset
        if self.variant != "standard" and self.model_path is None and dataset != "mnist":
            self.variant = "standard"                                       # only MNIST has a robust model
        self.model = self.state.model(dataset, self.variant)
        names = self.model.class_names or list(DATASETS[dataset].classes)
        self.class_names = [str(n) for n in names]
        self.ax_probs.clear()
        self.bars = self.ax_probs.barh(np.arange(len(self.class_names)), np.zeros(len(self.class_names)),
                                       color="tab:blue")
        self.ax_probs.set_yticks(np.arange(len(self.class_names)), self.class_names, fontsize=8)
        self.ax_probs.invert_yaxis()
        self.ax_probs.set_xlim(0, 1)
        self.ax_probs.set_xlabel("probability", fontsize=8)
        source = (f"pretrained {dataset}{' robust' if self.variant == 'robust' else ''}" if self.model_path is None
                  else str(self.model_path))
        self.fig.suptitle(f"fastnn demo: {source} model, {'-'.join(map(str, self.model.layer_sizes))} MLP",
                          fontsize=10)
        self.hidden_images = []
        for ax, width in zip(self.ax_hidden, self.model.layer_sizes[1:-1]):
            ax.clear()
            self.hidden_images.append(ax.imshow(np.zeros((1, width)), aspect="auto", cmap="magma", vmin=0, vmax=1))
            ax.set_yticks([])
            ax.set_title(f"hidden layer ({width} {self.model.activation} units)", fontsize=8)
        self.clear(redraw=redraw)

    def test_set(self):
        """The current dataset's test images (loaded on first use)."""
        return self.state.test_set(self.dataset)

    def set_variant(self, variant: str) -> None:
        """"robust": MNIST's robust model (on Fashion-MNIST, or with --model, nothing changes);
        "standard": the dataset's default one. The drawing is read again."""
        if self.model_path is not None or self.dataset != "mnist":
            variant = "standard"
        self.variant = variant
        drawing = self.canvas.copy()
        self.set_dataset(self.dataset, redraw=False)                     # the model, its bars and title
        self.canvas[...] = drawing                                        # the drawing stays
        self.draw_image.set_data(self.canvas)
        self.classify_canvas()

    def set_degradation(self, noise: float | None = None, blur: float | None = None) -> None:
        """The sliders: read the drawing through Gaussian noise of ``noise`` and a blur of ``blur``
        canvas pixels (``fastnn.demos.state.degrade``)."""
        self.noise = self.noise if noise is None else float(noise)
        self.blur = self.blur if blur is None else float(blur)
        self.classify_canvas()

    def set_number_mode(self, on: bool) -> None:
        """Number mode: a wide canvas whose drawing is read as a multi-digit number."""
        self.number_mode = bool(on)
        self.canvas = np.zeros(NUMBER_CANVAS if on else (CANVAS, CANVAS), dtype=np.float32)
        self.ax_draw.clear()
        self.draw_image = self.ax_draw.imshow(self.canvas, cmap="gray", vmin=0, vmax=1)
        self.ax_draw.set_xticks([])
        self.ax_draw.set_yticks([])
        self.clear()

    # ------------------------------------------------------------------ drawing
    def _press(self, event):
        if event.inaxes is self.ax_draw and event.xdata is not None:
            self._last = (event.xdata, event.ydata)
            self.stroke_to(event.xdata, event.ydata)

    def _move(self, event):
        if self._last is not None and event.inaxes is self.ax_draw and event.xdata is not None:
            self.stroke_to(event.xdata, event.ydata)

    def _release(self, event):
        self._last = None

    def stroke_to(self, x: float, y: float) -> None:
        """Continue the stroke to canvas point (x, y) (pixels) and classify the drawing."""
        x0, y0 = self._last if self._last is not None else (x, y)
        brush_stroke(self.canvas, x0, y0, x, y)
        self._last = (x, y)
        self.draw_image.set_data(self.canvas)
        self.classify_canvas()

    def clear(self, event=None, redraw: bool = True) -> None:
        """Empty the canvas and the read-outs."""
        self.canvas[...] = 0
        self.draw_image.set_data(self.canvas)
        self._show_boxes(())
        self.reading = None
        self.show_input(None)
        self.ax_draw.set_title("draw a number (press and drag)" if self.number_mode else "draw here (press and drag)",
                               fontsize=9)
        if redraw:
            self.fig.canvas.draw_idle()

    # ------------------------------------------------------------------ the network
    def classify_canvas(self) -> np.ndarray | None:
        """Preprocess the canvas (through the sliders' noise and blur) like ``predict`` does and
        show what the network makes of it; returns the probabilities (C,), or None for an empty
        canvas (in Number mode: the last digit's, and ``self.reading`` holds the number)."""
        from PIL import Image

        from fastnn.common.errors import UserError
        from fastnn.data.images import ImageError, preprocess
        from fastnn.demos.state import degrade

        gray = degrade(self.canvas, self.noise, self.blur)                          # (H, W) in [0, 1]
        if self.number_mode:
            return self._read_number(gray, UserError, ImageError)
        try:
            x = preprocess(Image.fromarray((gray * 255).astype(np.uint8)))          # (784,) float32
        except ImageError:                                                         # nothing drawn yet
            self.show_input(None)
            return None
        return self.show_input(x)

    def _read_number(self, gray, user_error, image_error) -> np.ndarray | None:
        """Number mode: read ``gray`` as a number, box its digits, show their inputs side by side."""
        try:
            answer = self.state.read(self.dataset, gray, self.variant)
        except (image_error, user_error) as exc:                                   # blank, or not a digit model
            self.reading = None
            self._show_boxes(())
            self.show_input(None)
            if not isinstance(exc, image_error):
                self.ax_draw.set_title(str(exc)[:80], fontsize=8)
            return None
        self.reading = answer
        self._show_boxes(answer["digits"])
        inputs = [np.array(d["input"], dtype=np.float32).reshape(28, 28) for d in answer["digits"]]
        probs = self.show_input(inputs[-1].reshape(-1))                             # bars: the last digit
        self.input_image.set_data(np.hstack(inputs))
        self.input_image.set_extent((-0.5, 28 * len(inputs) - 0.5, 27.5, -0.5))
        self.ax_input.set_title(f"number: {answer['number']} (confidence {answer['confidence']:.2f})", fontsize=9)
        self.fig.canvas.draw_idle()
        return probs

    def _show_boxes(self, digits) -> None:
        """Each digit's box and label on the drawing (removing the previous ones)."""
        from matplotlib.patches import Rectangle

        for artist in getattr(self, "_boxes", []):
            artist.remove()
        self._boxes = []
        for d in digits:
            top, left, bottom, right = d["box"]
            self._boxes.append(self.ax_draw.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                                                fill=False, ec="tab:red", lw=1.2)))
            self._boxes.append(self.ax_draw.text(left, top - 3, d["label"], color="tab:red", fontsize=9))

    def show_input(self, x) -> np.ndarray | None:
        """Show input ``x`` (784,) in [0, 1] (None: empty), its probabilities and hidden activations."""
        if x is None:
            self.input_image.set_data(np.zeros((28, 28)))
            self.input_image.set_extent((-0.5, 27.5, 27.5, -0.5))
            for bar in self.bars:
                bar.set_width(0)
            for img in self.hidden_images:
                img.set_data(np.zeros_like(img.get_array()))
            self.ax_input.set_title("what the network sees", fontsize=9)
            self.fig.canvas.draw_idle()
            return None
        X = x.reshape(1, -1).astype(self.model.dtype)                               # (1, 784)
        probs = self.model.forward(X)[0]                                            # (C,)
        hidden = self.model.hidden_outputs(X)                                       # [(1, H1), (1, H2)]
        self.input_image.set_data(x.reshape(28, 28))
        self.input_image.set_extent((-0.5, 27.5, 27.5, -0.5))
        best = int(np.argmax(probs))
        for k, bar in enumerate(self.bars):
            bar.set_width(float(probs[k]))
            bar.set_color("tab:orange" if k == best else "tab:blue")
        for img, h in zip(self.hidden_images, hidden):
            img.set_data(h / max(float(h.max()), 1e-6))
        self.prediction = self.class_names[best]
        self.ax_input.set_title(f"network: {self.prediction} ({probs[best]:.2f})", fontsize=9)
        self.fig.canvas.draw_idle()
        return probs

    def random_test_image(self, event=None) -> tuple[str, str]:
        """Show a random test image (as the canvas, upscaled) and what the network says; returns
        (true label, predicted label)."""
        if self.number_mode:
            self.set_number_mode(False)                                     # a test image is one digit
        test = self.test_set()
        i = int(self.rng.integers(len(test)))
        image = test.images[i].astype(np.float32) / 255                            # (28, 28)
        self.canvas[...] = np.kron(image, np.ones((CANVAS // 28, CANVAS // 28), dtype=np.float32))
        self.draw_image.set_data(self.canvas)
        self.show_input(image.reshape(-1))                                          # already MNIST-style
        truth = self.class_names[int(test.labels[i])]
        self.ax_draw.set_title(f"test image {i}: {truth}", fontsize=9)
        self.fig.canvas.draw_idle()
        return truth, self.prediction

    def draw_strokes(self, strokes) -> np.ndarray | None:
        """Draw ``strokes`` (each a list of (x, y) canvas points, pixels) through the same mouse
        events a user makes (press, moves, release) and return the last probabilities."""
        from matplotlib.backend_bases import MouseEvent

        canvas = self.fig.canvas
        self.fig.canvas.draw()                                             # transforms are current
        for points in strokes:
            for k, (x, y) in enumerate(points):
                px, py = self.ax_draw.transData.transform((x, y))
                name = "button_press_event" if k == 0 else "motion_notify_event"
                canvas.callbacks.process(name, MouseEvent(name, canvas, px, py, button=1))
            canvas.callbacks.process("button_release_event",
                                     MouseEvent("button_release_event", canvas, px, py, button=1))
        return self.classify_canvas()

    def show(self) -> None:
        import matplotlib.pyplot as plt

        plt.show()
