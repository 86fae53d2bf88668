"""Training-time corruptions, written here (augmentation is fastnn's own): blur, affine warps,
salt-and-pepper noise and stray lines, and the pool the robust recipe trains on.

Contract: ``distort(images, kinds, rng)`` returns a corrupted copy of ``images`` (N, H, W) uint8,
each image by one of ``kinds`` (drawn uniformly) with its own random parameters;
``CorruptedPool(images, kinds, seed)`` holds the training images followed by one corrupted copy
of each (2N images), and ``pool.order(permutation, p, rng)`` maps an epoch's permutation of
0..N-1 to rows of the pool: the corrupted copy with probability p, else the clean image. The
trainers and the fused path then see an ordinary data set of 2N images: nothing else changes,
and the sparse path stays sparse (a corrupted digit has 1-3x the clean one's non-zeros).

The kinds (``DISTORTIONS``), each drawn per image:

- ``blur``: the separable binomial filter [1, 2, 1] / 4 along rows and columns, 1-3 times
  (a Gaussian of sigma 0.7-1.2 pixels);
- ``affine``: rotation by -25..25 degrees, scaling by 0.75..1.33 (log-uniform), horizontal shear
  -0.4..0.4, about the centre, bilinear, zeros outside;
- ``noise``: 1-12 % of the pixels set to 255 or 0, half each (salt and pepper);
- ``lines``: 1-2 straight lines of brightness 128-255 between random points of the image.

They are not the benchmark's (``fastnn.data.corruptions``, made with scipy.ndimage and
scikit-image), so a model trained on these and scored on those is measured on corruptions it
never saw, even for the kinds they share a name with.
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["DISTORTIONS", "distort", "CorruptedPool", "parse_distortions", "DISTORT_HELP"]

DISTORT_HELP = ("training-time corruptions of the robust recipe: 'none', or comma-separated kinds among blur, "
                "affine, noise, lines, and optionally ':p=P' (the share of samples drawn corrupted per epoch, "
                "default 0.5), e.g. 'blur,affine,noise,lines:p=0.5'")


def _blur(x, rng):
    """[1, 2, 1] / 4 along both axes, 1-3 passes per image: x (n, H, W) float."""
    passes = rng.integers(1, 4, size=len(x))
    out = x.copy()
    for k in range(1, 4):
        sel = passes >= k
        y = out[sel]
        p = np.pad(y, ((0, 0), (1, 1), (1, 1)))
        y = (p[:, :-2, 1:-1] + 2 * p[:, 1:-1, 1:-1] + p[:, 2:, 1:-1]) / 4                     # (m, H, W)
        p = np.pad(y, ((0, 0), (1, 1), (1, 1)))
        out[sel] = (p[:, 1:-1, :-2] + 2 * p[:, 1:-1, 1:-1] + p[:, 1:-1, 2:]) / 4
    return out


def _affine(x, rng):
    """Rotation, scaling and shear about the centre, bilinear sampling, zeros outside."""
    n, h, w = x.shape
    theta = np.deg2rad(rng.uniform(-25, 25, size=n))
    scale = np.exp(rng.uniform(np.log(0.75), np.log(1.33), size=n))
    shear = rng.uniform(-0.4, 0.4, size=n)
    cos, sin = np.cos(theta), np.sin(theta)
    # inverse map: output pixel (r, c) reads input (A (r - cr, c - cc) + centre), A = (R S H)^-1 / scale
    a = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)                   # (n, 2, 2) R^T
    a[:, :, 1] -= shear[:, None] * a[:, :, 0]                                              # undo the shear
    a /= scale[:, None, None]
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    rows, cols = np.meshgrid(np.arange(h) - centre[0], np.arange(w) - centre[1], indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()])                                          # (2, H W)
    src = a @ grid + centre[None, :, None]                                                 # (n, 2, H W)
    r0 = np.floor(src[:, 0]).astype(np.int64)
    c0 = np.floor(src[:, 1]).astype(np.int64)
    fr, fc = src[:, 0] - r0, src[:, 1] - c0
    flat = x.reshape(n, -1)
    out = np.zeros((n, h * w))
    idx = np.arange(n)[:, None]
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        out += weight * inside * flat[idx, np.clip(r, 0, h - 1) * w + np.clip(c, 0, w - 1)]
    return out.reshape(n, h, w)


def _noise(x, rng):
    """Salt and pepper: a share a (1-12 %) of the pixels, half set to 1, half to 0."""
    a = rng.uniform(0.01, 0.12, size=(len(x), 1, 1))
    u = rng.random(x.shape)
    out = np.where(u < a / 2, 1.0, x)
    return np.where((u >= a / 2) & (u < a), 0.0, out)


def _lines(x, rng):
    """1-2 lines of brightness 0.5-1 between random points, drawn by 2 (H + W) samples along each."""
    n, h, w = x.shape
    out = x.copy()
    t = np.linspace(0, 1, 2 * (h + w))
    for k in range(2):
        sel = np.flatnonzero((k == 0) | (rng.random(n) < 0.5))
        ends = rng.uniform(0, 1, size=(len(sel), 4)) * [h - 1, w - 1, h - 1, w - 1]         # (m, 4)
        rr = np.rint(ends[:, :1] + t * (ends[:, 2:3] - ends[:, :1])).astype(np.int64)       # (m, T)
        cc = np.rint(ends[:, 1:2] + t * (ends[:, 3:4] - ends[:, 1:2])).astype(np.int64)
        value = rng.uniform(0.5, 1.0, size=(len(sel), 1))
        rows = np.broadcast_to(sel[:, None], rr.shape)
        out[rows, rr, cc] = np.maximum(out[rows, rr, cc], value)
    return out


DISTORTIONS = {"blur": _blur, "affine": _affine, "noise": _noise, "lines": _lines}


def distort(images: np.ndarray, kinds, rng) -> np.ndarray:
    """A corrupted copy of ``images`` (N, H, W) uint8: each image by one of ``kinds`` (names of
    ``DISTORTIONS``, drawn uniformly per image) with its own parameters from ``rng``. Raises
    ValueError for an unknown kind or images that are not (N, H, W) uint8."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in DISTORTIONS]
    if unknown or not kinds:
        raise ValueError(f"unknown training corruption {unknown[0] if unknown else '(none)'!r}; "
                         f"choose from {', '.join(DISTORTIONS)}")
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W) uint8, got {images.shape} {images.dtype}")
    x = images.astype(np.float64) / 255                                                   # (N, H, W)
    which = rng.integers(0, len(kinds), size=len(images))
    out = x.copy()
    for k, name in enumerate(kinds):
        sel = which == k
        if sel.any():
            out[sel] = DISTORTIONS[name](x[sel], rng)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def parse_distortions(spec: str) -> tuple[tuple, float]:
    """'none' | 'kind,kind[:p=P]' -> (kinds, p). Raises ValueError naming the part it cannot read."""
    spec = (spec or "none").strip().lower()
    if spec in ("", "none"):
        return (), 0.0
    kinds_part, _, p_part = spec.partition(":")
    kinds = tuple(k.strip() for k in kinds_part.split(",") if k.strip())
    for k in kinds:
        if k not in DISTORTIONS:
            raise ValueError(f"unknown kind {k!r}; choose from {', '.join(DISTORTIONS)}")
    p = 0.5
    if p_part:
        m = re.fullmatch(r"p=([0-9.]+)", p_part.strip())
        if not m or not 0 < float(m.group(1)) <= 1:
            raise ValueError(f"{p_part.strip()!r}: write p=P with 0 < P <= 1")
        p = float(m.group(1))
    if not kinds:
        raise ValueError("name at least one kind, or 'none'")
    return kinds, p


class CorruptedPool:
    """The training images (N, H, W) uint8 followed by one corrupted copy of each (``distort``,
    seeded): ``images`` (2N, H, W), ``labels`` (2N,). ``order`` picks the rows of an epoch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, kinds, seed: int):
        self.n = len(images)
        corrupted = distort(images, kinds, np.random.default_rng([seed, 7]))
        self.images = np.concatenate([images, corrupted])
        self.labels = np.concatenate([labels, labels])

    def order(self, permutation: np.ndarray, p: float, rng) -> np.ndarray:
        """The pool rows of an epoch: permutation (n,) of 0..N-1, each sample's corrupted copy
        (row i + N) with probability p."""
        return permutation + self.n * (rng.random(len(permutation)) < p)
