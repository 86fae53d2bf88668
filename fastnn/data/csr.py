"""The training images as a CSR matrix, the form the fused training kernels read (three bytes per
non-zero: ``fastnn.backends.fused_interface.CsrBatch``)."""
from __future__ import annotations

import numpy as np

__all__ = ["MAX_FEATURES", "images_to_csr"]

MAX_FEATURES = 65536   # the fused path stores pixel indices as uint16


def images_to_csr(images: np.ndarray):
    """uint8 images (n, ...) -> CSR (indptr (n+1,) int64, indices (nnz,) uint16, pixels (nnz,) uint8).

    The zeros are omitted; the kernels compute x = dtype(pixel) * dtype(1/255), bit-identical to
    ``fastnn.data.datasets.to_float``. Three bytes per non-zero: a batch's rows, random in the epoch's
    order, come from memory at 2.7 times the rate of float32 values with int32 indices.
    Raises ValueError for more than ``MAX_FEATURES`` features or images not of uint8.
    """
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    flat = images.reshape(images.shape[0], -1)                      # (n, D)
    if flat.shape[1] > MAX_FEATURES:
        raise ValueError(f"{flat.shape[1]} features: the fused path takes at most {MAX_FEATURES}")
    chunk = 2048                                                    # rows at a time: small temporaries
    indptr = np.zeros(flat.shape[0] + 1, dtype=np.int64)
    for start in range(0, flat.shape[0], chunk):                    # pass 1: non-zeros per row
        indptr[start + 1:start + 1 + chunk] = np.count_nonzero(flat[start:start + chunk], axis=1)
    np.cumsum(indptr, out=indptr)
    indices = np.empty(indptr[-1], dtype=np.uint16)                 # (nnz,)
    pixels = np.empty(indptr[-1], dtype=np.uint8)                   # (nnz,)
    for start in range(0, flat.shape[0], chunk):                    # pass 2: fill in place, row by row
        block = flat[start:start + chunk]                           # (b, D)
        rows, cols = np.nonzero(block)                              # row-major order
        lo, hi = indptr[start], indptr[min(start + chunk, flat.shape[0])]
        indices[lo:hi] = cols
        pixels[lo:hi] = block[rows, cols]
    return indptr, indices, pixels
