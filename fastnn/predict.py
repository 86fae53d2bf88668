"""``python -m fastnn.predict --model PATH IMAGE...``: classify image files of your own.

Each image (PNG, JPEG, ...; any size or colour) is prepared the way MNIST's digits were
(Y. LeCun et al., the MNIST database's description): grayscale; inverted when the background
is light, so ink is bright on black; cropped to the bounding box of the ink; scaled to fit a
20 x 20 box keeping the aspect ratio (anti-aliased); pasted into a 28 x 28 image so that the
ink's centre of mass is at the centre. Before that the file is read as it would be shown: the
EXIF orientation applied, a transparent background composited on white, 16-bit and float
images scaled by their range. It then prints, per file, the predicted label, its probability
and the top 3. A file that cannot be read as an image (or is a decompression bomb, a pipe, a
folder) is reported and skipped; the other files are still classified (exit status 1 if any
failed). A folder given as IMAGE stands for the image files in it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ._cli import HelpFormatter, UserError, int_at_least, printable, regular_file, run_main
from .data import DATASETS
from .images import IMAGE_SUFFIXES, MAX_PIXELS, BlankImage, ImageError, as_gray, read_image  # noqa: F401 - predict's API
from .inference import inference_backend
from .model import NeuralNetwork


def preprocess(image) -> np.ndarray:
    """A PIL image -> float32 (784,) in [0, 1], MNIST-style (see the module docstring).

    Raises:
        BlankImage: the image is blank (no ink to centre). ImageError: a colour mode with no gray.
    """
    from PIL import Image

    gray = as_gray(image)                                                       # (H, W), 1 = white

    def background(img):
        return float(np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])))

    if background(gray) > 0.5:                                                  # light background: invert
        gray = 1.0 - gray
    gray = np.clip(gray - background(gray), 0.0, None)                          # background to 0
    peak = gray.max()
    if peak <= 0.05:
        raise BlankImage("the image is blank: no ink to classify")
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
    try:
        regular_file(path, "image")
        with read_image(path) as img:
            return preprocess(img)
    except UserError as exc:
        raise ImageError(str(exc)) from exc
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def image_paths(args) -> list[Path]:
    """The IMAGE arguments, each folder replaced by its image files (sorted by name)."""
    paths = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        else:
            paths.append(path)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.predict",
        description="Classify your own images (PNG, JPEG, ...; or folders of them) with a trained model. Each is "
                    "preprocessed like MNIST: grayscale, inverted if the background is light, cropped to the ink, "
                    "fitted into 20x20 and centred by centre of mass in 28x28.",
        formatter_class=HelpFormatter)
    p.add_argument("--model", default=None,
                   help="a best_model.npz written by python -m fastnn.train (default: the pretrained model of "
                        "--dataset that ships with fastnn)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them")
    p.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="without --model: whose pretrained model (default mnist); with it: class names to print "
                        "when the model file has none (default: the model's own, else 0..C-1)")
    p.add_argument("--top", type=int_at_least(1), default=3, help="how many classes to list per image (>= 1)")
    return p


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.model is None:
        model = NeuralNetwork.pretrained(args.dataset or "mnist")
        args.model = f"the pretrained {model.dataset} model"
    else:
        model = NeuralNetwork.load(regular_file(args.model, "model file"), backend=inference_backend())
    if model.layer_sizes[0] != 784:
        raise UserError(f"{args.model}: the model takes {model.layer_sizes[0]} inputs, not 28x28 images")
    n_classes = model.layer_sizes[-1]
    if args.dataset and len(DATASETS[args.dataset].classes) != n_classes:
        raise UserError(f"--dataset {args.dataset} has {len(DATASETS[args.dataset].classes)} classes, the model "
                        f"{n_classes}")
    if model.class_names:
        names = model.class_names
        if args.dataset and list(DATASETS[args.dataset].classes) != list(names):
            print(f"note: the model's own class names are used (it was trained on "
                  f"{model.dataset or 'other classes'}, not --dataset {args.dataset})", file=sys.stderr)
    elif args.dataset:
        names = list(DATASETS[args.dataset].classes)
    else:
        names = [str(i) for i in range(n_classes)]
    names = [printable(n) for n in names]                     # from a file: never obeyed as terminal codes
    failed = 0
    for path in image_paths(args.images):
        try:
            x = load_image(path)
        except ImageError as exc:
            print(f"error: {printable(exc)}", file=sys.stderr)
            failed += 1
            continue
        probs = model.forward(x[None, :].astype(model.dtype))[0]                  # (C,)
        order = np.argsort(probs)[::-1][:args.top]
        top = ", ".join(f"{names[k]} {probs[k]:.3f}" for k in order)
        print(f"{printable(Path(path).name)}: {names[order[0]]} (probability {probs[order[0]]:.3f}); "
              f"top {len(order)}: {top}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
