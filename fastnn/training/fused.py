"""The fused training path: whole SGD steps in compiled code, no Python round trip per kernel.

At batch 64 a kernel-by-kernel step makes ~20 calls from Python, each costing more than its
arithmetic. A backend that defines ``fused_steps`` (``numba``, ``cython``) instead runs many
whole steps per call: forward, softmax cross-entropy, backward and the optimizer update. It
follows the same trajectory as the kernel path: same initial weights, same data order (the
same ``rng.permutation``), the same dropout draws (``model.rng.random((B, H))`` per step and
hidden layer, drawn here in that order) and the same optimizer formulas (``fastnn.training.optim``).
Only the order of floating-point sums differs, so float64 losses agree to ~1e-12 relative
(tested to 1e-5 over 200 steps).

**How a step is split between the T threads** (the same in both backends, function for
function: ``_finish_step``, ``_layer0_forward``, ``_thread_step``):

1. *by parameters*: thread t owns rows ``row_bounds[t]:row_bounds[t+1]`` of W0 (a range of
   pixels, chosen so that each thread's rows see the same share of the training set's
   non-zeros) and columns ``col_bounds[l, t]:col_bounds[l, t+1]`` of every bias and dense W_l
   (multiples of 16 floats, so that two threads never write one cache line; a W_l narrower than
   ``fused_interface.NARROW`` outputs, such as the output layer's 10, by rows instead). It finishes the
   previous step for what it owns: each weight gradient is computed and the optimizer update
   applied in the same pass, row by row. W0's gradient row ``grad W0[p] = sum_i x[i, p] G0[i]``
   is gathered through the CSC index of its pixels (which batch rows have pixel p non-zero),
   and with SGD or momentum the row's update reads the sums from the registers they are in
   (the gradient row is never stored; Adam's goes through memory);
   the dense layers' from fastnn's packed GEMM (``gemm.h`` / ``gemm.py``, no BLAS). Nothing is
   reduced across threads and no per-thread gradient copy exists: W0 and its optimizer state
   stay in the owning core's cache. Then it runs this step's layer 0 over its pixels, reading
   the sparse (CSR) input rows: its share ``z0_parts[t]`` of z0 = x W0 for every batch row, and
   the CSC index of its pixels.
2. *by samples*: thread t takes batch rows i0:i1: z0 = b0 + the threads' shares, the dense
   layers' forward (packed GEMM), the softmax cross-entropy and the backward products down to
   G0 = dL/dz of layer 0.

The threads are started once per call, not per phase: Cython's as one OpenMP team with a
barrier after each phase, Numba's as one ``prange`` whose threads claim each phase's parts and
wait until all are done (a fork and a join per phase cost the epoch 4-5%; REPORT).

``fused_steps(batch, params, work, hyper, first_step, n_steps, batch_size, losses, prof)`` takes
the named groups of ``fastnn.backends.fused_interface`` (each field's shape and dtype is there);
``FusedTrainer`` builds them: the CSR rows once, the flat parameters once (the model's arrays
become views of them), the work buffers per batch size, the hyperparameters per call.

A backend's optional fused interface: ``fused_steps``, ``ACT_CODES`` (activation name
-> code, from ``fastnn.backends.fused_interface``), ``num_threads()`` (the T it runs), and, for the
profile, ``read_cycles()`` and ``cycles_per_second()`` (its cycle counter's rate).
"""
from __future__ import annotations

import numpy as np

from fastnn.backends import omp_threads
from fastnn.backends.fused_interface import (
    OPT_CODES,
    CsrBatch,
    Hyperparameters,
    Parameters,
    WorkBuffers,
    scratch_width,
)
from fastnn.backends.memory import aligned_zeros
from fastnn.data.csr import MAX_FEATURES, images_to_csr
from fastnn.training.optim import SGD, Adam
from fastnn.training.trainers import TrainerBase, checked_order

__all__ = ["FusedTrainer", "fused_unsupported_reason", "has_fused_path"]


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
    if model.layer_sizes[0] > MAX_FEATURES:
        return f"{model.layer_sizes[0]} input features (the fused path takes at most {MAX_FEATURES})"
    if type(optimizer) not in (SGD, Adam):
        return f"optimizer {type(optimizer).__name__} is not in the fused kernels (SGD, momentum, Adam)"
    return None


def _num_threads(backend) -> int:
    if hasattr(backend, "num_threads"):
        return max(1, int(backend.num_threads()))
    return omp_threads()


ALIGN = 16   # column splits at multiples of 16 floats (64-byte cache lines are never shared)


def column_bounds(n_out: int, n_threads: int) -> np.ndarray:
    """(T+1,) int64: thread t owns columns [b[t], b[t+1]) of a layer with ``n_out`` outputs.

    Even shares rounded up to multiples of ``ALIGN`` where the layer is wide enough (so that two
    threads never write one cache line of a row-major weight matrix), else plain even shares."""
    t = np.arange(n_threads + 1)
    if n_out >= ALIGN * n_threads:
        return np.minimum(n_out, -(-(n_out * t // n_threads) // ALIGN) * ALIGN).astype(np.int64)
    return (n_out * t // n_threads).astype(np.int64)


# Phase names of the fused kernels' timers (``prof`` columns), for a network of L layers.
def profile_phases(n_layers: int) -> list[str]:
    return (["softmax cross-entropy", "(unused)"]
            + ["layer 0 forward (sparse input, CSC index) + activation"]
            + [f"layer {l} forward (GEMM)" for l in range(1, n_layers)]
            + ["(unused)"] + [f"layer {l} backward to layer {l - 1} (GEMM)" for l in range(1, n_layers)]
            + ["layer 0 weight gradient (CSC gather) + update"]
            + [f"layer {l} weight gradient (GEMM) + update" for l in range(1, n_layers)])


REGIONS = ("region 1 (by parameters: gradients + update, layer-0 forward)",
           "region 2 (by samples: dense layers, softmax, backward)")


def row_bounds_by_nonzeros(indices: np.ndarray, n_rows: int, n_threads: int) -> np.ndarray:
    """(T+1,) int64: thread t owns rows [b[t], b[t+1]) of W0 (pixels), chosen so that each
    thread's pixels hold about the same share of the training set's non-zeros (its work)."""
    counts = np.zeros(n_rows, dtype=np.int64)                        # non-zeros per row, in pieces:
    for start in range(0, indices.size, 1 << 20):                    # bincount copies to int64 first
        counts += np.bincount(indices[start:start + (1 << 20)], minlength=n_rows)
    cum = np.concatenate([[0], np.cumsum(counts)])                   # (D+1,) non-zeros in rows < b
    if cum[-1] == 0:
        return (np.arange(n_threads + 1) * n_rows // n_threads).astype(np.int64)
    targets = cum[-1] * np.arange(1, n_threads) / n_threads
    above = np.minimum(np.searchsorted(cum, targets), n_rows)        # first b with cum[b] >= target
    below = np.maximum(above - 1, 0)
    bounds = np.where(np.abs(cum[below] - targets) <= np.abs(cum[above] - targets), below, above)
    return np.concatenate([[0], bounds, [n_rows]]).astype(np.int64)


class FusedTrainer(TrainerBase):
    """Trains ``model`` with ``optimizer`` on ``dataset`` through the backend's ``fused_steps``.

    Args:
        model: a ``NeuralNetwork`` whose backend has a fused path (see ``fused_unsupported_reason``).
        optimizer: an ``SGD`` (plain or momentum) or ``Adam`` from ``fastnn.training.optim`` over ``model``.
        dataset: the training ``Dataset`` (uint8 images, int labels).
        augmenter: a ``fastnn.data.augment.Augmenter`` or None: each call's rows are moved by the
            backend's ``augment_csr`` into a batch-ordered CSR that the kernel then reads.
        label_smoothing: eps in [0, 1) (``NeuralNetwork.backward``).
    Raises:
        ValueError: the model/optimizer combination is unsupported, or the dataset does not fit the model.

    ``profile = True`` turns the kernels' phase timers on; ``phase_seconds()`` reads them.
    """

    # 128 steps (~30 ms) per call: against 32, 4-10 % off the epoch (the Python and the thread
    # wake-ups between calls; REPORT.md), and a progress bar or Ctrl-C still gets a turn often.
    steps_per_call = 128

    def __init__(self, model, optimizer, dataset, augmenter=None, label_smoothing: float = 0.0):
        reason = fused_unsupported_reason(model, optimizer)
        if reason:
            raise ValueError(f"no fused path: {reason}")
        if dataset.num_features != model.layer_sizes[0]:
            raise ValueError(f"dataset has {dataset.num_features} features, the model's input layer "
                             f"{model.layer_sizes[0]}")
        self.model, self.optimizer, self.dataset = model, optimizer, dataset
        backend = model.backend
        self._kernel = backend.fused_steps
        self.augmenter = augmenter
        self.label_smoothing = float(label_smoothing)
        if augmenter is not None and not hasattr(backend, "augment_csr"):
            raise ValueError(f"backend {backend.NAME!r} has no augment_csr kernel for the fused path")
        self._act = backend.ACT_CODES[model.activation]
        self.description = f"fused path ({backend.NAME}, {_num_threads(backend)} threads)" + (
            f", augmentation {augmenter}" if augmenter is not None else "")
        self._aug_indptr = np.zeros(1, dtype=np.int64)             # the call's moved rows, batch-ordered CSR
        self._aug_indices = np.zeros(0, dtype=np.uint16)
        self._aug_pixels = np.zeros(0, dtype=np.uint8)
        self._aug_order = np.zeros(0, dtype=np.int64)
        self.indptr, self.indices, self.pixels = images_to_csr(dataset.images)
        self.labels = np.ascontiguousarray(dataset.labels, dtype=np.int64)
        if augmenter is not None:                      # (n, 4) int16: which images a move leaves whole
            from fastnn.data.augment import bounding_boxes
            self._boxes = bounding_boxes(self.indptr, self.indices, augmenter.width)
        if self.labels.size and not (0 <= self.labels.min() and self.labels.max() < model.layer_sizes[-1]):
            raise ValueError(f"labels must be in [0, {model.layer_sizes[-1]}), got {self.labels.min()}"
                             f"..{self.labels.max()}")
        self.max_row_nnz = int(np.diff(self.indptr).max()) if len(self.labels) else 0
        self.sizes = np.array(model.layer_sizes, dtype=np.int64)
        self._pack_parameters()
        self.n_threads = _num_threads(backend)
        self.col_bounds = np.stack([column_bounds(int(n), self.n_threads) for n in self.sizes[1:]])  # (L, T+1)
        self.row_bounds = row_bounds_by_nonzeros(self.indices, int(self.sizes[0]), self.n_threads)    # (T+1,)
        hidden = [int(h) for h in self.sizes[1:-1]]
        self.mask_off = np.concatenate([[0], np.cumsum(hidden)]).astype(np.int64)                 # (L,)
        self.act_off = np.zeros(0, dtype=np.int64)
        self._batch_size = 0
        self.profile = False
        self.prof = np.zeros((0, 0), dtype=np.int64)

    def _pack_parameters(self) -> None:
        """Copy weights/biases (and optimizer state) into flat vectors; leave views behind."""
        m, opt = self.model, self.optimizer
        shapes = [w.shape for w in m.weights] + [b.shape for b in m.biases]
        sizes = [int(np.prod(s)) for s in shapes]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n_layers = m.num_layers
        self.w_off, self.b_off = starts[:n_layers].copy(), starts[n_layers:-1].copy()

        def flat_views(arrays):
            flat = aligned_zeros(starts[-1], m.dtype)
            views = [flat[a:b].reshape(s) for a, b, s in zip(starts[:-1], starts[1:], shapes)]
            if arrays is not None:
                for v, arr in zip(views, arrays):
                    v[...] = arr
            return flat, views

        self.theta, views = flat_views(m.weights + m.biases)
        m.weights, m.biases = views[:n_layers], views[n_layers:]
        m.grad_weights = m.grad_biases = None          # the fused path does not keep them
        unused = np.zeros(1, dtype=m.dtype)
        if isinstance(opt, SGD):
            self._opt = OPT_CODES["momentum" if opt.momentum else "sgd"]
            if opt.momentum:
                self.state1, opt.velocity = flat_views(opt.velocity)
            else:
                self.state1 = unused
            self.state2 = unused
        else:
            self._opt = OPT_CODES["adam"]
            self.state1, opt.m = flat_views(opt.m)
            self.state2, opt.v = flat_views(opt.v)

    def hyperparameters(self) -> Hyperparameters:
        """This call's ``Hyperparameters``: the optimizer's settings now (its learning rate may
        have been scheduled), the floats in the model's dtype."""
        opt, dt = self.optimizer, self.model.dtype.type
        momentum = getattr(opt, "momentum", 0.0)
        beta1, beta2, eps = (opt.beta1, opt.beta2, opt.eps) if self._opt == OPT_CODES["adam"] else (0.0, 0.0, 0.0)
        return Hyperparameters(lr=dt(opt.lr), momentum=dt(momentum), weight_decay=dt(opt.weight_decay),
                               beta1=dt(beta1), beta2=dt(beta2), eps=dt(eps), keep=dt(1.0 - self.model.dropout),
                               label_smoothing=dt(self.label_smoothing), act=int(self._act), opt=int(self._opt),
                               t0=int(self.optimizer.t))

    def parameters(self) -> Parameters:
        """The flat parameters and optimizer state (``_pack_parameters``) as ``Parameters``."""
        return Parameters(self.sizes, self.w_off, self.b_off, self.theta, self.state1, self.state2)

    def work_buffers(self, drop_mask: np.ndarray) -> WorkBuffers:
        """The buffers ``_allocate`` sized, with this call's dropout masks, as ``WorkBuffers``."""
        return WorkBuffers(act_off=self.act_off, mask_off=self.mask_off, row_bounds=self.row_bounds,
                           col_bounds=self.col_bounds, z0_parts=self.z0_parts, acts=self.acts, outs=self.outs,
                           grads_act=self.grads_act, csc_ptr=self.csc_ptr, csc_sample=self.csc_sample,
                           csc_value=self.csc_value, csc_span=self.csc_span, scratch=self.scratch,
                           drop_mask=drop_mask)

    def _allocate(self, batch_size: int) -> None:
        """(Re)size the activation, CSC and scratch buffers for ``batch_size``."""
        if batch_size == self._batch_size:
            return
        dt, T = self.model.dtype, self.n_threads
        widths = self.sizes[1:]
        self.act_off = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64) * batch_size   # (L,)
        total = batch_size * int(widths.sum())
        self.acts = aligned_zeros(total, dt)                           # (B * S,) layer outputs
        self.outs = aligned_zeros(total, dt) if self.model.dropout else self.acts[:0]
        self.grads_act = aligned_zeros(total, dt)                      # (B * S,) dL/dz per layer
        self.z0_parts = aligned_zeros((T, batch_size * int(widths[0]) + ALIGN), dt)  # (T, B * H0)
        entries = batch_size * self.max_row_nnz
        self.csc_ptr = np.zeros((T, self.sizes[0] + 1), dtype=np.int32)             # (T, D+1)
        self.csc_sample = np.zeros((T, entries), dtype=np.int32)                    # (T, E)
        self.csc_value = aligned_zeros((T, entries + ALIGN), dt)                    # (T, E)
        self.csc_span = np.zeros((T, 2 * batch_size), dtype=np.int64)               # (T, 2B)
        self.scratch = aligned_zeros((T, scratch_width(self.sizes, self.col_bounds) + ALIGN), dt)
        self._batch_size = batch_size

    def run_steps(self, order: np.ndarray, first_step: int, n_steps: int, batch_size: int) -> np.ndarray:
        """Run steps ``first_step`` .. ``first_step + n_steps - 1`` of the epoch ordered by ``order``.

        Args:
            order: (n,) integer indices of the training samples in this epoch's order (a permutation,
                or n of a larger set's rows: the robust recipe's pool of clean and corrupted images).
        Returns:
            (n_steps,) float64: each step's mean cross-entropy (before that step's update).
        Raises:
            ValueError: ``order`` is not (n,) integers, or ``batch_size`` < 1, ``first_step`` < 0.
            IndexError: an index this call would use is outside [0, n).
        """
        m = self.model
        order = np.ascontiguousarray(checked_order(order, len(self.labels), first_step, n_steps, batch_size),
                                     dtype=np.int64)
        n = len(order)                                 # the epoch's samples (the set may hold more: a pool)
        n_steps = min(n_steps, -(-n // batch_size) - first_step)
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
        self._allocate(batch_size)
        n_layers = len(self.sizes) - 1
        if self.profile and self.prof.shape != (self.n_threads + 1, 2 + 3 * n_layers):
            self.prof = np.zeros((self.n_threads + 1, 2 + 3 * n_layers), dtype=np.int64)
        prof = self.prof if self.profile else np.zeros((0, 0), dtype=np.int64)
        batch, first = CsrBatch(self.indptr, self.indices, self.pixels, self.labels, order), first_step
        if self.augmenter is not None:
            batch, first = self._moved_rows(order, first_step, n_steps, batch_size), 0
        losses = np.empty(n_steps)
        self._kernel(batch, self.parameters(), self.work_buffers(drop_mask), self.hyperparameters(), first, n_steps,
                     batch_size, losses, prof)
        self.optimizer.t += n_steps
        return losses

    def warm_up(self, batch_size: int) -> None:
        """Call every kernel this trainer will call, on no rows: Numba compiles them now (or loads
        them from its cache), so that the first epoch times training alone. Changes nothing."""
        self._allocate(batch_size)
        m = self.model
        if self.augmenter is not None:
            a = self.augmenter
            m.backend.augment_csr(self.indptr, self.indices, self.pixels, self._boxes, self._aug_order[:0], 0,
                                  np.zeros((0, 3), dtype=np.int32), a.col_of, a.height, a.width, self.n_threads,
                                  self._aug_indptr, self._aug_indices, self._aug_pixels)
        no_rows = CsrBatch(self.indptr, self.indices, self.pixels, self.labels, self._aug_order[:0])
        self._kernel(no_rows, self.parameters(), self.work_buffers(np.ones((1, 1), dtype=m.dtype)),
                     self.hyperparameters(), 0, 0, batch_size, np.empty(0), np.zeros((0, 0), dtype=np.int64))

    def _moved_rows(self, order, first_step: int, n_steps: int, batch_size: int):
        """The call's rows, moved by this call's augmentation draws, as a batch-ordered
        ``CsrBatch`` (k rows, order = arange(k)) for the kernel."""
        moves = self.augmenter.moves(len(order), first_step, n_steps, batch_size)        # (k, 3)
        lo, k = first_step * batch_size, len(moves)
        rows = order[lo:lo + k]                                                          # (k,)
        nnz = int((self.indptr[rows + 1] - self.indptr[rows]).sum())                     # an upper bound
        if self._aug_indices.size < nnz:
            self._aug_indices = np.empty(nnz, dtype=np.uint16)
            self._aug_pixels = np.empty(nnz, dtype=np.uint8)
        if self._aug_indptr.size < k + 1:
            self._aug_indptr = np.empty(k + 1, dtype=np.int64)
            self._aug_order = np.arange(k, dtype=np.int64)
        a = self.augmenter
        self.model.backend.augment_csr(self.indptr, self.indices, self.pixels, self._boxes, order, lo, moves, a.col_of,
                                       a.height, a.width, self.n_threads, self._aug_indptr, self._aug_indices,
                                       self._aug_pixels)
        return CsrBatch(self._aug_indptr[:k + 1], self._aug_indices, self._aug_pixels, self.labels[rows],
                        self._aug_order[:k])

    def phase_seconds(self) -> dict[str, float]:
        """Seconds per phase from the kernels' timers (``profile = True``), averaged over threads,
        plus each phase's wall time (to the end of its wait); cycle counts converted with the backend's rate."""
        if not self.prof.size:
            return {}
        rate = self.model.backend.cycles_per_second()
        n_layers = len(self.sizes) - 1
        per_thread = self.prof[:self.n_threads].mean(axis=0) / rate
        out = {name: float(sec) for name, sec in zip(profile_phases(n_layers), per_thread) if name != "(unused)"}
        walls = {f"wall: {name}": float(sec) for name, sec in zip(REGIONS, self.prof[self.n_threads, :2] / rate)}
        return {**out, **walls}
