"""The fused training path: whole SGD steps in compiled code, no Python round trip per kernel.

At batch 64 a kernel-by-kernel step makes ~20 calls from Python, each costing more than its
arithmetic. A backend that defines ``fused_steps`` (``numba``, ``cython``) instead runs many
whole steps per call: gather the shuffled mini-batch, forward, softmax cross-entropy,
backward and the optimizer update. It follows the same trajectory as the kernel path: same
initial weights, same data order (the same ``rng.permutation``), the same dropout draws
(``model.rng.random((B, H))`` per step and hidden layer, drawn here in that order) and the
same optimizer formulas (``fastnn.optim``). Only the order of floating-point sums differs,
so float64 losses agree to ~1e-12 relative (tested to 1e-5 over 200 steps).

``FusedTrainer`` packs every weight and bias into one flat vector ``theta`` and then makes the
model's ``weights``/``biases`` (and the optimizer's state) views into it, so the model is
always current: evaluate or save it between calls as usual.

``fused_steps(indptr, indices, values, labels, order, first_step, n_steps, batch_size, sizes,
w_off, b_off, theta, grads, work, state1, state2, decay, act, drop_mask, opt, hyper, t0, losses)``:

- ``indptr`` (n+1,) int64, ``indices`` (nnz,) int32, ``values`` (nnz,) float: the training
  images as a CSR matrix (x = pixel / 255, zeros omitted); ``labels`` (n,) int64.
- ``order`` (n,) int64: the epoch's permutation; steps cover ``order[step*B: (step+1)*B]``.
- ``sizes`` (L+1,) int64 layer sizes; ``w_off``/``b_off`` (L,) int64 offsets of W_l (row-major
  (n_in, n_out)) and b_l in ``theta`` (P,) float32/float64.
- ``grads`` (T, P) zeros, one row per thread (T = threads used); ``work`` (T, 3 * R * sum(sizes[1:]) + S)
  with R = ceil(batch_size / T), the most samples a thread takes per step, and S the largest
  weight matrix after the first (scratch for a weight gradient, so nothing is allocated per step).
- ``state1``/``state2`` (P,): momentum velocity, or Adam's m and v. ``decay`` (P,) float:
  weight_decay on weights, 0 on biases.
- ``act``: 0 relu, 1 sigmoid, 2 tanh. ``opt``: 0 sgd, 1 momentum, 2 adam; ``t0`` Adam steps so far.
- ``drop_mask`` (n_steps, B * sum(hidden)): the inverted-dropout masks (0 or 1 / keep), exactly
  the kernel path's; for step s, hidden layer l's (nb, H_l) block starts at
  nb * (sizes[1] + .. + sizes[l]). Unused (1, 1) when there is no dropout.
- ``hyper`` (7,) in theta's dtype: lr, momentum, weight_decay (unused: see ``decay``), beta1, beta2,
  eps, keep (1 - dropout).
- ``losses`` (n_steps,) float64 out: each step's mean cross-entropy.
"""
from __future__ import annotations

import os

import numpy as np
from threadpoolctl import ThreadpoolController

from .optim import SGD, Adam

__all__ = ["FusedTrainer", "fused_unsupported_reason", "images_to_csr", "has_fused_path"]


def has_fused_path(backend) -> bool:
    """True when the backend module runs whole training steps in compiled code."""
    return hasattr(backend, "fused_steps")


def fused_unsupported_reason(model, optimizer) -> str | None:
    """Why this model/optimizer cannot take the fused path (None when it can)."""
    codes = getattr(model.backend, "ACT_CODES", {})
    if not has_fused_path(model.backend):
        return f"backend {model.backend_name!r} has no fused path"
    if model.activation not in codes:
        return f"activation {model.activation!r} is not in the fused kernels ({', '.join(codes)})"
    if type(optimizer) not in (SGD, Adam):
        return f"optimizer {type(optimizer).__name__} is not in the fused kernels (SGD, momentum, Adam)"
    return None


def images_to_csr(images: np.ndarray, dtype=np.float32):
    """uint8 images (n, ...) -> CSR (indptr (n+1,) int64, indices (nnz,) int32, values (nnz,) dtype).

    ``values`` are pixel * dtype(1/255): bit-identical to ``fastnn.data.to_float`` at the nonzeros.
    """
    dtype = np.dtype(dtype)
    flat = images.reshape(images.shape[0], -1)                      # (n, D)
    nonzero = flat != 0                                             # (n, D)
    indptr = np.zeros(flat.shape[0] + 1, dtype=np.int64)
    np.cumsum(nonzero.sum(axis=1), out=indptr[1:])
    indices = np.nonzero(nonzero)[1].astype(np.int32)               # row-major: row by row
    values = flat[nonzero].astype(dtype) * dtype.type(1.0 / 255.0)  # (nnz,)
    return indptr, indices, values


def _num_threads(backend) -> int:
    if hasattr(backend, "num_threads"):
        return max(1, int(backend.num_threads()))
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))


class FusedTrainer:
    """Trains ``model`` with ``optimizer`` on ``dataset`` through the backend's ``fused_steps``.

    Args:
        model: a ``NeuralNetwork`` whose backend has a fused path (see ``fused_unsupported_reason``).
        optimizer: an ``SGD`` (plain or momentum) or ``Adam`` from ``fastnn.optim`` over ``model``.
        dataset: the training ``Dataset`` (uint8 images, int labels).
    Raises:
        ValueError: the model/optimizer combination is unsupported, or the dataset does not fit the model.
    """

    def __init__(self, model, optimizer, dataset):
        reason = fused_unsupported_reason(model, optimizer)
        if reason:
            raise ValueError(f"no fused path: {reason}")
        if dataset.num_features != model.layer_sizes[0]:
            raise ValueError(f"dataset has {dataset.num_features} features, the model's input layer "
                             f"{model.layer_sizes[0]}")
        self.model, self.optimizer, self.dataset = model, optimizer, dataset
        backend = model.backend
        self._kernel = backend.fused_steps
        self._act = backend.ACT_CODES[model.activation]
        dtype = model.dtype
        self.indptr, self.indices, self.values = images_to_csr(dataset.images, dtype)
        self.labels = np.ascontiguousarray(dataset.labels, dtype=np.int64)
        if self.labels.size and not (0 <= self.labels.min() and self.labels.max() < model.layer_sizes[-1]):
            raise ValueError(f"labels must be in [0, {model.layer_sizes[-1]}), got {self.labels.min()}"
                             f"..{self.labels.max()}")
        self.sizes = np.array(model.layer_sizes, dtype=np.int64)
        self._pack_parameters()
        import scipy.linalg.cython_blas  # noqa: F401 - the BLAS the fused kernels call, loaded before we look

        self._blas = ThreadpoolController()             # finds the loaded BLAS libraries once (~1 ms)
        self.n_threads = _num_threads(backend)
        self.grads = np.zeros((self.n_threads, self.theta.size), dtype=dtype)     # (T, P)
        self.work = np.zeros((self.n_threads, 0), dtype=dtype)                    # sized per batch size

    def _pack_parameters(self) -> None:
        """Copy weights/biases (and optimizer state) into flat vectors; leave views behind."""
        m, opt = self.model, self.optimizer
        shapes = [w.shape for w in m.weights] + [b.shape for b in m.biases]
        sizes = [int(np.prod(s)) for s in shapes]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n_layers = m.num_layers
        self.w_off, self.b_off = starts[:n_layers].copy(), starts[n_layers:-1].copy()
        self._weight_ranges = [(int(starts[i]), int(starts[i + 1])) for i in range(n_layers)]
        self._decay_for = None

        def flat_views(arrays, fill_zeros=False):
            flat = np.zeros(starts[-1], dtype=m.dtype)
            views = [flat[a:b].reshape(s) for a, b, s in zip(starts[:-1], starts[1:], shapes)]
            if arrays is not None:
                for v, arr in zip(views, arrays):
                    v[...] = arr
            return flat, views

        self.theta, views = flat_views(m.weights + m.biases)
        m.weights, m.biases = views[:n_layers], views[n_layers:]
        m.grad_weights = m.grad_biases = None          # the fused path does not keep them
        if isinstance(opt, SGD):
            self._opt = 1 if opt.momentum else 0
            self.state1, velocity = flat_views(opt.velocity)
            if opt.momentum:
                opt.velocity = velocity
            self.state2 = np.zeros(1, dtype=m.dtype)
        else:
            self._opt = 2
            self.state1, opt.m = flat_views(opt.m)
            self.state2, opt.v = flat_views(opt.v)

    def _decay(self) -> np.ndarray:
        """(P,) weight_decay on every weight, 0 on biases (rebuilt if the optimizer's changes)."""
        wd = self.optimizer.weight_decay
        if self._decay_for != wd:
            self.decay = np.zeros(self.theta.size, dtype=self.model.dtype)
            for a, b in self._weight_ranges:
                self.decay[a:b] = wd
            self._decay_for = wd
        return self.decay

    def _hyper(self) -> np.ndarray:
        opt, dt = self.optimizer, self.model.dtype
        momentum = getattr(opt, "momentum", 0.0)
        beta1, beta2, eps = (opt.beta1, opt.beta2, opt.eps) if self._opt == 2 else (0.0, 0.0, 0.0)
        keep = 1.0 - self.model.dropout
        return np.array([opt.lr, momentum, opt.weight_decay, beta1, beta2, eps, keep], dtype=dt)

    def num_steps(self, batch_size: int) -> int:
        return -(-len(self.labels) // batch_size)

    def run_steps(self, order: np.ndarray, first_step: int, n_steps: int, batch_size: int) -> np.ndarray:
        """Run steps ``first_step`` .. ``first_step + n_steps - 1`` of the epoch ordered by ``order``.

        Args:
            order: (n,) permutation of the training samples for this epoch.
        Returns:
            (n_steps,) float64: each step's mean cross-entropy (before that step's update).
        """
        m = self.model
        n = len(self.labels)
        n_steps = min(n_steps, self.num_steps(batch_size) - first_step)
        if n_steps <= 0:
            return np.empty(0)
        if m.dropout:                                  # the kernel path's masks, drawn in its order
            hidden = [int(h) for h in self.sizes[1:-1]]
            keep = 1.0 - m.dropout
            scale = m.dtype.type(1) / m.dtype.type(keep)
            drop_mask = np.zeros((n_steps, batch_size * sum(hidden)), dtype=m.dtype)
            for s in range(n_steps):
                lo = (first_step + s) * batch_size
                nb = min(lo + batch_size, n) - lo
                draws = [(m.rng.random((nb, h)) < keep).ravel() for h in hidden]
                drop_mask[s, :nb * sum(hidden)] = np.concatenate(draws).astype(m.dtype) * scale
        else:
            drop_mask = np.ones((1, 1), dtype=m.dtype)
        rows = -(-batch_size // self.n_threads)
        sizes = [int(x) for x in self.sizes]
        scratch = max([a * b for a, b in zip(sizes[1:-1], sizes[2:])], default=0)
        width = 3 * rows * sum(sizes[1:]) + scratch
        if self.work.shape[1] != width:
            self.work = np.zeros((self.n_threads, width), dtype=m.dtype)
        losses = np.empty(n_steps)
        with self._blas.limit(limits=1, user_api="blas"):   # one BLAS thread inside each kernel thread
                self._kernel(self.indptr, self.indices, self.values, self.labels, order, first_step, n_steps,
                         batch_size, self.sizes, self.w_off, self.b_off, self.theta, self.grads, self.work,
                         self.state1, self.state2, self._decay(), self._act, drop_mask, self._opt, self._hyper(),
                         self.optimizer.t, losses)
        self.optimizer.t += n_steps
        return losses
