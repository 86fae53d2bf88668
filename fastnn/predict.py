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

``--number`` reads each image as a multi-digit number instead (``fastnn.model.numbers.read_number``;
without ``--model``, with MNIST's number reader, ``NeuralNetwork.pretrained("mnist", variant="numbers")``):
it prints the number, its confidence (the product of the digits' probabilities) and each digit;
``--annotate DIR`` also writes the image with each digit's box and label drawn in.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fastnn.common.cli import HelpFormatter, int_at_least, printable, regular_file, run_main
from fastnn.common.errors import UserError
from fastnn.data.datasets import DATASETS
from fastnn.data.images import IMAGE_SUFFIXES, ImageError, load_image, preprocess  # noqa: F401 - also predict's Python API
from fastnn.inference.forward import inference_backend
from fastnn.model.network import NeuralNetwork


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
    p.add_argument("--number", action="store_true",
                   help="read each image as a multi-digit number: find the digits (connected components, cuts "
                        "chosen where the pieces read best), classify each; print the number and its confidence "
                        "(the product of the digits' probabilities); without --model, MNIST's number reader")
    p.add_argument("--annotate", default=None, metavar="DIR",
                   help="with --number: also write DIR/<image name>-number.png, each digit's box and label drawn in")
    return p


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.model is None:
        if args.number and (args.dataset or "mnist") == "mnist":            # the number reader (classes 0-9, none)
            model = NeuralNetwork.pretrained("mnist", variant="numbers")
        else:
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
    if args.annotate and not args.number:
        raise UserError("--annotate draws the digits --number finds; add --number")
    if args.number:
        return _read_numbers(model, image_paths(args.images), args.annotate)
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


def _read_numbers(model, paths, annotate) -> int:
    """--number: each image read as a number; exit status 1 if any could not be read."""
    from fastnn.model.numbers import draw_reading, read_number

    if annotate:
        folder = Path(annotate)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--annotate {annotate} is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in paths:
        try:
            reading = read_number(model, path)
        except ImageError as exc:
            print(f"error: {printable(Path(path).name)}: {printable(exc)}", file=sys.stderr)
            failed += 1
            continue
        digits = ", ".join(f"{label} {p:.3f}" for label, p, _ in reading.digits)
        print(f"{printable(Path(path).name)}: {reading.text} (confidence {reading.confidence:.3f}); "
              f"digits: {digits}")
        if annotate:
            target = Path(annotate) / f"{Path(path).stem}-number.png"
            draw_reading(path, reading, target)
            print(f"  wrote {printable(target)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
