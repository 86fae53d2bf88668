"""Reading image files as they would be shown: one reader for predict, the demos and image folders.

Contract: ``read_image(source, max_pixels)`` returns a loaded Pillow image of one of
``IMAGE_FORMATS`` (Pillow is told which decoders it may use: never EPS, which runs
Ghostscript, nor any of its other formats), refused before decoding when it declares more than
``max_pixels``; ``as_gray`` turns it into float gray as displayed. Errors are ``ImageError``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["IMAGE_FORMATS", "IMAGE_SUFFIXES", "MAX_PIXELS", "ImageError", "ImageTooLarge", "BlankImage", "read_image",
           "as_gray"]

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
