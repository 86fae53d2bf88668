"""Image corruptions of the MNIST-C kind, seeded and deterministic, for the robustness benchmark.

Contract: ``corrupt(images, name, severity, seed)`` returns a corrupted copy of ``images``
(N, H, W) uint8, the same shape and dtype, the same for the same arguments on any machine;
``CORRUPTIONS`` names the 16 kinds, ``SEVERITIES`` their levels (1 mild, 2 medium, 3 strong).
Nothing here is hand-written filtering: scipy.ndimage does the blurs, affine maps and
convolutions, scikit-image the noise, drawing and edges; numpy draws the random parameters.

After Mu and Gilmer, "MNIST-C: A Robustness Benchmark for Computer Vision" (ICML workshop
2019): the same 15 kinds (shot and impulse noise; glass and motion blur; shear, scale, rotate,
translate; brightness; stripe, fog, spatter, dotted line, zigzag, Canny edges) plus contrast,
each at three severities here (their paper has one; level 2 is near theirs). The parameters
are ours, chosen so that severity 1 leaves a digit plainly readable to a person and severity 3
still readable with effort (``python -m fastnn.evaluate --corruptions`` draws examples).

Randomness: one ``numpy.random.Generator`` per call, seeded by (seed, the kind's index in
``CORRUPTIONS``, severity), so each kind and level has its own stream. The stream is drawn image
by image, so image i's corruption depends on the images before it: call ``corrupt`` on the
whole set at once (as the benchmark does) to reproduce its tables.

Requires scikit-image (``pip install -e ".[robust]"``); scipy is a dependency of fastnn.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "require_scikit_image"]

SEVERITIES = (1, 2, 3)


def require_scikit_image():
    """scikit-image, or a UserError naming the extra that installs it."""
    from fastnn.common.errors import UserError

    try:
        import skimage  # noqa: F401
    except ImportError as exc:      # ImportError, not only ModuleNotFoundError: a broken install says so too
        raise UserError(f"the corruptions need scikit-image ({exc}): pip install -e \".[robust]\"") from None


# ---------------------------------------------------------------- the kinds, on float images in [0, 1]
def _shot_noise(x, s, rng):
    """Poisson noise: photon counts of mean x * lam, then back to [0, 1]."""
    lam = (12.0, 5.0, 2.5)[s - 1]
    return rng.poisson(x * lam) / lam


def _impulse_noise(x, s, rng):
    """Salt and pepper on a fraction of the pixels (skimage.util.random_noise)."""
    from skimage.util import random_noise

    return random_noise(x, mode="s&p", amount=(0.03, 0.08, 0.15)[s - 1], rng=rng)


def _glass_blur(x, s, rng):
    """Gaussian blur, local pixel shuffles (each pixel takes a neighbour's value within
    ``delta``), blur again: frosted glass (scipy.ndimage.gaussian_filter)."""
    from scipy.ndimage import gaussian_filter

    sigma, delta, rounds = ((0.4, 1, 1), (0.6, 1, 2), (0.8, 2, 2))[s - 1]
    n, h, w = x.shape
    x = gaussian_filter(x, sigma=(0, sigma, sigma))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for _ in range(rounds):
        dr = rng.integers(-delta, delta + 1, size=(n, h, w))
        dc = rng.integers(-delta, delta + 1, size=(n, h, w))
        r = np.clip(rows + dr, 0, h - 1)
        c = np.clip(cols + dc, 0, w - 1)
        x = x[np.arange(n)[:, None, None], r, c]
    return gaussian_filter(x, sigma=(0, sigma, sigma))


def _motion_blur(x, s, rng):
    """Convolution with a line of ``length`` pixels at a random angle per image
    (skimage.draw.line for the kernel, scipy.ndimage.convolve)."""
    from scipy.ndimage import convolve
    from skimage.draw import line

    length = (5, 9, 13)[s - 1]
    half = length // 2
    out = np.empty_like(x)
    for i, angle in enumerate(rng.uniform(0, np.pi, size=len(x))):
        kernel = np.zeros((length, length))
        dr, dc = int(round(half * np.sin(angle))), int(round(half * np.cos(angle)))
        rr, cc = line(half - dr, half - dc, half + dr, half + dc)
        kernel[rr, cc] = 1.0
        out[i] = convolve(x[i], kernel / kernel.sum(), mode="constant")
    return out


def _affine(x, matrices, offsets):
    """Each image through its own affine map about the centre (scipy.ndimage.affine_transform,
    bilinear, zeros outside): output pixel o reads input pixel M (o - c) + c + offset."""
    from scipy.ndimage import affine_transform

    centre = (np.array(x.shape[1:]) - 1) / 2
    out = np.empty_like(x)
    for i, (m, t) in enumerate(zip(matrices, offsets)):
        out[i] = affine_transform(x[i], m, offset=centre - m @ centre + t, order=1, mode="constant")
    return out


def _signs(rng, n):
    return rng.choice((-1.0, 1.0), size=n)


def _shear(x, s, rng):
    """Horizontal shear by +-k (each image's sign at random)."""
    k = (0.2, 0.4, 0.6)[s - 1] * _signs(rng, len(x))
    return _affine(x, [np.array([[1.0, 0.0], [ki, 1.0]]) for ki in k], np.zeros((len(x), 2)))


def _scale(x, s, rng):
    """Zoom by f or 1/f about the centre (each image's choice at random)."""
    f = (1.25, 1.5, 1.9)[s - 1] ** _signs(rng, len(x))
    return _affine(x, [np.eye(2) / fi for fi in f], np.zeros((len(x), 2)))


def _rotate(x, s, rng):
    """Rotation by +-angle degrees (each image's sign at random)."""
    a = np.deg2rad((15.0, 30.0, 45.0)[s - 1]) * _signs(rng, len(x))
    return _affine(x, [np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) for t in a],
                   np.zeros((len(x), 2)))


def _translate(x, s, rng):
    """Shift by +-d pixels along each axis (each image's signs at random)."""
    d = (2.0, 4.0, 6.0)[s - 1]
    offsets = d * np.stack([_signs(rng, len(x)), _signs(rng, len(x))], axis=1)       # (N, 2)
    return _affine(x, [np.eye(2)] * len(x), offsets)


def _brightness(x, s, rng):
    """Every pixel brighter by b: a grey background."""
    return x + (0.15, 0.3, 0.45)[s - 1]


def _contrast(x, s, rng):
    """Contrast scaled by c about each image's mean."""
    c = (0.6, 0.4, 0.25)[s - 1]
    mean = x.mean(axis=(1, 2), keepdims=True)                                          # (N, 1, 1)
    return (x - mean) * c + mean


def _stripe(x, s, rng):
    """A vertical stripe of w columns inverted, at a random column per image."""
    w = (3, 5, 7)[s - 1]
    out = x.copy()
    for i, c0 in enumerate(rng.integers(0, x.shape[2] - w + 1, size=len(x))):
        out[i, :, c0:c0 + w] = 1.0 - out[i, :, c0:c0 + w]
    return out


def _smooth_field(rng, shape, sigma):
    """Random field in [0, 1]: uniform noise blurred (scipy.ndimage.gaussian_filter), rescaled per image."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.random(shape), sigma=(0, sigma, sigma))
    lo = field.min(axis=(1, 2), keepdims=True)
    hi = field.max(axis=(1, 2), keepdims=True)
    return (field - lo) / np.maximum(hi - lo, 1e-12)


def _fog(x, s, rng):
    """A smooth bright haze added, then rescaled as MNIST-C does: (x + c f) max / (max + c)."""
    c = (0.4, 0.7, 1.0)[s - 1]
    peak = x.max(axis=(1, 2), keepdims=True)
    return (x + c * _smooth_field(rng, x.shape, 3.0)) * peak / (peak + c)


def _spatter(x, s, rng):
    """Drops: where a blurred random field passes a threshold, the pixel is set bright."""
    threshold = (0.85, 0.78, 0.70)[s - 1]
    drops = _smooth_field(rng, x.shape, 1.0) > threshold
    return np.where(drops, 1.0, x)


def _draw_lines(x, rng, n_lines, n_segments, dotted):
    """Random polylines drawn bright (skimage.draw.line): n_segments segments each, every other
    pixel when ``dotted``."""
    from skimage.draw import line

    n, h, w = x.shape
    out = x.copy()
    for i in range(n):
        for _ in range(n_lines):
            points = np.stack([rng.integers(0, h, size=n_segments + 1), rng.integers(0, w, size=n_segments + 1)], 1)
            for (r0, c0), (r1, c1) in zip(points[:-1], points[1:]):
                rr, cc = line(int(r0), int(c0), int(r1), int(c1))
                if dotted:
                    rr, cc = rr[::2], cc[::2]
                out[i, rr, cc] = 1.0
    return out


def _dotted_line(x, s, rng):
    """1-3 dotted straight lines across the image."""
    return _draw_lines(x, rng, s, 1, True)


def _zigzag(x, s, rng):
    """1-3 zigzags of three segments."""
    return _draw_lines(x, rng, s, 3, False)


def _canny_edges(x, s, rng):
    """The image replaced by its Canny edges (skimage.feature.canny, sigma by severity)."""
    from skimage.feature import canny

    sigma = (0.5, 1.0, 1.5)[s - 1]
    return np.stack([canny(img, sigma=sigma) for img in x]).astype(np.float64)


CORRUPTIONS = {
    "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "glass_blur": _glass_blur, "motion_blur": _motion_blur,
    "shear": _shear, "scale": _scale, "rotate": _rotate, "translate": _translate,
    "brightness": _brightness, "contrast": _contrast,
    "stripe": _stripe, "fog": _fog, "spatter": _spatter, "dotted_line": _dotted_line, "zigzag": _zigzag,
    "canny_edges": _canny_edges,
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (N, H, W) uint8 under corruption ``name`` at ``severity`` (1-3): a new (N, H, W)
    uint8 array, rounded from the corrupted float image clipped to [0, 1]. Deterministic in
    (images, name, severity, seed). Raises ValueError for an unknown name or severity or images
    that are not (N, H, W) uint8; UserError when scikit-image is missing."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W) uint8, got {images.shape} {images.dtype}")
    require_scikit_image()
    if len(images) == 0:
        return images.copy()
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity])
    x = images.astype(np.float64) / 255.0                                              # (N, H, W)
    out = CORRUPTIONS[name](x, severity, rng)
    return np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
