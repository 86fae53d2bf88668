"""``python -m fastnn.predict --model PATH IMAGE...``: classify image files of your own.

Each image (PNG, JPEG, ...; any size or colour) is prepared the way MNIST's digits were
(Y. LeCun et al., the MNIST database's description): grayscale; inverted when the background
is light, so ink is bright on black; cropped to the bounding box of the ink; scaled to fit a
20 x 20 box keeping the aspect ratio (anti-aliased); pasted into a 28 x 28 image so that the
ink's centre of mass is at the centre. It then prints, per file, the predicted label, its
probability and the top 3. A file that cannot be read as an image is reported and skipped;
the other files are still classified (exit status 1 if any failed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .data import DATASETS
from .inference import inference_backend
from .model import ModelFileError, NeuralNetwork


class ImageError(ValueError):
    """A file that cannot be read as an image, or holds nothing to classify."""


def preprocess(image) -> np.ndarray:
    """A PIL image -> float32 (784,) in [0, 1], MNIST-style (see the module docstring).

    Raises:
        ImageError: the image is blank (no ink to centre).
    """
    from PIL import Image

    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0             # (H, W), 1 = white

    def background(img):
        return float(np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])))

    if background(gray) > 0.5:                                                  # light background: invert
        gray = 1.0 - gray
    gray = np.clip(gray - background(gray), 0.0, None)                          # background to 0
    peak = gray.max()
    if peak <= 0.05:
        raise ImageError("the image is blank: no ink to classify")
    gray = gray / peak                                                          # ink in [0, 1]
    rows = np.flatnonzero(gray.max(axis=1) > 0.1)
    cols = np.flatnonzero(gray.max(axis=0) > 0.1)
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]                     # bounding box of the ink
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = Image.fromarray((crop * 255).astype(np.uint8)).resize((new_w, new_h), Image.LANCZOS)
    small = np.asarray(small, dtype=np.float32) / 255.0                         # (<=20, <=20)
    canvas = np.zeros((28, 28), dtype=np.float32)
    total = small.sum()
    cy = (small.sum(axis=1) @ np.arange(new_h)) / total                         # centre of mass
    cx = (small.sum(axis=0) @ np.arange(new_w)) / total
    top = int(round(13.5 - cy))
    left = int(round(13.5 - cx))
    top = min(max(top, 0), 28 - new_h)
    left = min(max(left, 0), 28 - new_w)
    canvas[top:top + new_h, left:left + new_w] = small
    return np.clip(canvas, 0.0, 1.0).reshape(-1)


def load_image(path) -> np.ndarray:
    """Read ``path`` and preprocess it; ImageError names the file and the problem."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.predict",
        description="Classify image files (PNG, JPEG; any size or colour) with a trained model. Each image is "
                    "preprocessed like MNIST: grayscale, inverted if the background is light, cropped to the ink, "
                    "fitted into 20x20 and centred by centre of mass in 28x28.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="a best_model.npz written by python -m fastnn.train")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="class names to print when the model file has none (default: the model's own, else 0..C-1)")
    p.add_argument("--top", type=int, default=3, help="how many classes to list per image")
    args = p.parse_args(argv)
    try:
        model = NeuralNetwork.load(args.model, backend=inference_backend())   # a fused forward where one runs
    except (ModelFileError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if model.layer_sizes[0] != 784:
        print(f"error: {args.model}: the model takes {model.layer_sizes[0]} inputs, not 28x28 images", file=sys.stderr)
        return 2
    names = model.class_names or (list(DATASETS[args.dataset].classes) if args.dataset else None)
    names = names or [str(i) for i in range(model.layer_sizes[-1])]
    failed = 0
    for path in args.images:
        try:
            x = load_image(path)
        except ImageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        probs = model.forward(x[None, :].astype(model.dtype))[0]                  # (C,)
        order = np.argsort(probs)[::-1][:args.top]
        top = ", ".join(f"{names[k]} {probs[k]:.3f}" for k in order)
        print(f"{Path(path).name}: {names[order[0]]} (probability {probs[order[0]]:.3f}); top {len(order)}: {top}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
