"""Reading a whole number: the digits of an image found, each classified, the number and a confidence.

Contract: ``read_number(model, image)`` finds the digits of a multi-digit number in ``image``
(``fastnn.data.numbers.segment_digits``: connected components and column projections through
scipy.ndimage), classifies all of them in one forward pass and returns a ``NumberReading``:
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
from fastnn.data.numbers import segment_digits

__all__ = ["NumberReading", "read_number", "draw_reading"]


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
    either polarity) with ``model``, a digit classifier on 28 x 28 images whose classes are the
    digits 0-9.

    Raises:
        UserError: the model does not classify digits.
        ImageError: the file is not an image fastnn reads, or holds no ink (BlankImage).
    """
    names = [str(c) for c in (model.class_names or range(model.layer_sizes[-1]))]
    if model.layer_sizes[0] != 784 or names != [str(d) for d in range(10)]:
        raise UserError(f"reading numbers needs a digit model (784 inputs, classes 0-9); this one has "
                        f"{model.layer_sizes[0]} inputs and classes {', '.join(names[:4])}...")
    digits = segment_digits(_gray(image))
    inputs = np.stack([d.image for d in digits])                                      # (k, 784)
    probs = model.forward(inputs.astype(model.dtype))                                 # (k, 10)
    labels = probs.argmax(axis=1)
    top = probs[np.arange(len(digits)), labels]
    return NumberReading("".join(names[k] for k in labels), float(np.prod(top.astype(np.float64))),
                         tuple((names[k], float(p), d.box) for k, p, d in zip(labels, top, digits)), inputs)


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
