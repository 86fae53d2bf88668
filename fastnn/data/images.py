"""Reading image files as they would be shown: one reader for predict, the demos and image folders.

Contract: ``read_image(source, max_pixels)`` returns a loaded Pillow image of one of
``IMAGE_FORMATS`` (Pillow is told which decoders it may use: never EPS, which runs
Ghostscript, nor any of its other formats), refused before decoding when it declares more than
``max_pixels``; ``as_gray`` turns it into float gray as displayed. Errors are ``ImageError``.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["IMAGE_FORMATS", "IMAGE_SUFFIXES", "MAX_PIXELS", "ImageError", "ImageTooLarge", "BlankImage", "read_image",
           "as_gray", "preprocess", "load_image"]

# The formats fastnn decodes (Pillow's names) and the file suffixes it lists in folders.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MAX_PIXELS = 50_000_000      # larger images are refused (Pillow's decompression-bomb limit is 89 M)


class ImageError(ValueError):
    """A file that cannot be read as an image, or holds nothing to classify."""


class ImageTooLarge(ImageError):
    """An image over the pixel limit (refused from its header, before decoding)."""


class BlankImage(ImageError):
    """An image with no ink to classify."""


def read_image(source, max_pixels: int = MAX_PIXELS):
    """Open and decode ``source`` (a path or a binary file object) as a Pillow image.

    Raises:
        ImageError: not one of ``IMAGE_FORMATS`` (or not an image), over ``max_pixels`` pixels
            (checked from the header, before decoding), a decompression bomb, or damaged data.
    """
    from PIL import Image, UnidentifiedImageError

    from fastnn.common.io import NotARegularFile, open_regular

    if isinstance(source, (str, os.PathLike)):       # opened here: Pillow's open() would wait on a FIFO
        try:
            with open_regular(source, "rb") as f:
                return read_image(f, max_pixels)             # decoded before the file closes
        except NotARegularFile as exc:
            raise ImageError(exc.strerror) from None
    try:
        image = Image.open(source, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"not a readable image (fastnn reads {', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: {exc}") from None
    try:
        if image.width * image.height > max_pixels:
            raise ImageTooLarge(f"{image.width} x {image.height} pixels is more than {max_pixels:,}; "
                                f"scale it down first")
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"damaged {image.format} data ({type(exc).__name__}: {exc})") from None
    return image


def as_gray(image) -> np.ndarray:
    """A Pillow image as it would be displayed -> float32 (H, W) gray in [0, 1], 1 = white: the
    EXIF orientation applied; transparency composited on white (a digit drawn on a transparent
    canvas); 16-bit, 32-bit integer and float modes scaled by their range, not clipped at 255.

    Raises:
        ImageError: NaN or infinite values, a blank float image, or a colour mode Pillow cannot
            turn into gray (LAB, CMYK TIFFs that Pillow reads but does not convert, ...).
    """
    from PIL import Image, ImageOps

    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            values = np.asarray(image, dtype=np.float64)
            if values.ndim != 2:
                values = values.reshape(values.shape[0], -1)
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ImageError("the image holds NaN or infinite values")
            if hi <= lo:
                raise BlankImage("the image is blank: no ink to classify")
            return ((values - lo) / (hi - lo)).astype(np.float32)
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (ValueError, OSError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"cannot read the {image.mode} colour mode as gray ({exc})") from None


def preprocess(image) -> np.ndarray:
    """A PIL image -> float32 (784,) in [0, 1], prepared the way MNIST's digits were (Y. LeCun et
    al., the MNIST database's description): gray as displayed (``as_gray``); inverted when the
    background is light, so ink is bright on black; cropped to the bounding box of the ink;
    scaled to fit 20 x 20 keeping the aspect ratio (anti-aliased); pasted into 28 x 28 with the
    ink's centre of mass at the centre.

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
    """Read the file ``path`` and ``preprocess`` it: float32 (784,) in [0, 1].

    Raises:
        ImageError: naming the file and the problem (not a regular file, not an image fastnn
            reads, too large, blank).
    """
    try:
        with read_image(path) as img:
            return preprocess(img)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
