"""Reading a whole number: the digits of an image found, each classified, the number and a confidence.

Contract: ``read_number(model, image)`` finds the digits of a multi-digit number in ``image``
and classifies them, and returns a ``NumberReading``. How it finds them depends on the model:

- a digit classifier (classes 0-9): ``fastnn.data.numbers.segment_digits`` (connected
  components, touching digits cut at the column of least ink), all digits classified in one
  forward pass;
- a number reader (classes 0-9 and ``NOT_A_DIGIT``, trained with ``python -m fastnn.train
  --number-pieces N``; the shipped ``NeuralNetwork.pretrained("mnist", variant="numbers")``):
  recognition-based segmentation, every candidate piece (``candidate_pieces``) classified in
  one forward pass and the cuts chosen whose pieces read best (``choose_pieces``, each piece
  scored by the log probability of its best digit less ``DIGIT_PENALTY``), so touching digits
  are cut where the pieces are whole digits. The penalty is a prior against reading more
  digits (a reading with one more digit must be e^penalty times as probable).

The reading holds
the number as text, its confidence (the product of the digits' top probabilities: the
probability that every digit is right, if the model's probabilities are calibrated and the
digits independent) and each digit's label, probability and box. ``draw_reading`` writes the
image with each digit's box and label drawn in (Pillow).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastnn.common.errors import UserError
from fastnn.data.images import as_gray, read_image
from fastnn.data.numbers import NOT_A_DIGIT, candidate_pieces, choose_pieces, segment_digits

__all__ = ["DIGIT_PENALTY", "NumberReading", "read_number", "draw_reading"]

# A number reader's cost of one more digit, in log probability (a prior against reading more digits),
# chosen on two validation sets no evaluation uses (MNIST training digits composed; numbers in the
# validation fonts): the best mean, ties to the smaller. For a reader trained on MNIST pieces only,
# 2 (a thick printed 1 read as two 1s otherwise); for the shipped one, which also learned printed
# digits, 0 (97.0% / 100% at 0 and 0.5, 96.0% / 100% at 2; REPORT, "Reading numbers").
DIGIT_PENALTY = 0.0


@dataclass(frozen=True)
class NumberReading:
    """text: the digits read, left to right; confidence: the product of their top probabilities;
    digits: one (label, probability, box) per digit, box (top, left, bottom, right) in pixels;
    inputs: (k, 784) float32, the digits' 28 x 28 images as the model saw them."""
    text: str
    confidence: float
    digits: tuple
    inputs: np.ndarray = field(default=None, compare=False, repr=False)


def _gray(image) -> np.ndarray:
    """A path, a Pillow image or a gray array (H, W) in [0, 1] -> float32 gray (H, W)."""
    if isinstance(image, np.ndarray):
        return image
    if hasattr(image, "mode"):                                                    # a Pillow image
        return as_gray(image)
    with read_image(image) as img:
        return as_gray(img)


def read_number(model, image) -> NumberReading:
    """Read the number in ``image`` (a file path, a Pillow image, or gray (H, W) floats in [0, 1],
    either polarity) with ``model``: a digit classifier on 28 x 28 images whose classes are the
    digits 0-9, or a number reader whose classes are the digits and NOT_A_DIGIT (module
    docstring). A digit's probability is the model's probability of that digit.

    Raises:
        UserError: the model does not classify digits.
        ImageError: the file is not an image fastnn reads, or holds no ink (BlankImage).
    """
    names = [str(c) for c in (model.class_names or range(model.layer_sizes[-1]))]
    digit_names = [str(d) for d in range(10)]
    reader = names == [*digit_names, NOT_A_DIGIT]
    if model.layer_sizes[0] != 784 or not (names == digit_names or reader):
        raise UserError(f"reading numbers needs a digit model (784 inputs, classes 0-9, optionally "
                        f"{NOT_A_DIGIT!r}); this one has {model.layer_sizes[0]} inputs and classes "
                        f"{', '.join(names[:4])}...")
    gray = _gray(image)
    if reader:
        all_cuts, pieces = candidate_pieces(gray)
        probs = model.forward(np.stack([p.image for p in pieces]).astype(model.dtype))  # (pieces, 11)
        best = probs[:, :10].max(axis=1).astype(np.float64)                            # (pieces,)
        chosen = choose_pieces(all_cuts, pieces, np.log(np.maximum(best, 1e-30)) - DIGIT_PENALTY)
        boxes = [pieces[k].box for k in chosen]
        inputs, probs = np.stack([pieces[k].image for k in chosen]), probs[chosen, :10]  # (k, 784), (k, 10)
    else:
        digits = segment_digits(gray)
        boxes = [d.box for d in digits]
        inputs = np.stack([d.image for d in digits])                                  # (k, 784)
        probs = model.forward(inputs.astype(model.dtype))                             # (k, 10)
    labels = probs.argmax(axis=1)
    top = probs[np.arange(len(boxes)), labels]
    return NumberReading("".join(names[k] for k in labels), float(np.prod(top.astype(np.float64))),
                         tuple((names[k], float(p), box) for k, p, box in zip(labels, top, boxes)), inputs)


def draw_reading(image, reading: NumberReading, path) -> None:
    """``image`` (as ``read_number`` takes it) with each digit's box and label drawn in, and the
    number with its confidence on top, written to ``path`` as PNG (atomically)."""
    from PIL import Image, ImageDraw, ImageFont

    from fastnn.common.io import atomic_write

    gray = _gray(image)
    scale = max(1, int(np.ceil(240 / max(gray.shape))))                          # small images drawn larger
    base = Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    base = base.resize((base.width * scale, base.height * scale), Image.NEAREST)
    band = 22
    canvas = Image.new("RGB", (base.width, base.height + band), "white")
    canvas.paste(base, (0, band))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for label, p, (top, left, bottom, right) in reading.digits:
        box = (left * scale, top * scale + band, right * scale - 1, bottom * scale + band - 1)
        draw.rectangle(box, outline=(220, 40, 40), width=2)
        draw.text((box[0] + 2, box[1] + 1), label, fill=(220, 40, 40), font=font)
    draw.text((4, 3), f"{reading.text}  (confidence {reading.confidence:.3f})", fill=(0, 0, 0), font=font)
    with atomic_write(path) as f:
        canvas.save(f, format="PNG")
