"""The fused kernels' interface, defined once for every backend that implements it (numba,
cython) and for the code that calls it (``fastnn.training.fused``, ``fastnn.inference.forward``).

A backend's optional fused paths:

- ``fused_steps(batch, params, work, hyper, first_step, n_steps, batch_size, losses, prof)``:
  whole SGD steps (forward, softmax cross-entropy, backward, optimizer update), in place; the
  algorithm is in ``fastnn.training.fused``. ``losses`` (n_steps,) float64 out: each step's mean
  cross-entropy (against the smoothed target); ``prof`` (T+1, 2 + 3L) int64 clock ticks added to
  (columns: ``fastnn.training.fused.profile_phases``; row T: the two phases' wall
  time, each to the end of its wait for the other threads), or (0, 0): no timers. On x86 its
  threads compute with subnormal numbers flushed to zero (MXCSR's FTZ and DAZ, as JAX's
  compiled CPU code does) and put their floating-point mode back before the call returns:
  momentum's velocity of a pixel no sample has decays 0.9x a step into the subnormals, and an
  Intel core takes a microcode assist for each operation on one.
- ``augment_csr(indptr, indices, pixels, boxes, order, lo, moves, col_of, height, width,
  n_threads, out_indptr, out_indices, out_pixels) -> int``: the call's rows moved by the
  augmentation into a batch-ordered CSR (``fastnn.data.augment``); ``check_augment`` checks its
  arguments, and the kernel each row (``raise_bad_image``).
- ``fused_forward(params, work, options, X, out_f, out_i) -> int``: every layer of X (N, D) in
  one call (``fastnn.inference.forward``); logits or probs into ``out_f`` (N, C), or labels into
  ``out_i`` (N,) int64. Returns -1, or the first row of X that is not finite or (``unit_range``)
  outside [0, 1]; the outputs are then incomplete.

Their arguments come in the named groups below, in the manner of llm.c's ``ParameterTensors``
and ``ActivationTensors``: each field is documented once, here, with its shape and dtype. B is
the batch size, T the kernel's threads, L the layers (weight matrices), D the inputs, H0 the
first hidden layer's width, S = sum(sizes[1:]), P the parameter count, "float" the model's dtype
(float32 or float64). The compiled kernels check the sizes they rely on, once per call.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

ACT_CODES = {"relu": 0, "sigmoid": 1, "tanh": 2}      # Hyperparameters.act, ForwardOptions.act
OPT_CODES = {"sgd": 0, "momentum": 1, "adam": 2}      # Hyperparameters.opt
FORWARD_MODES = {"logits": 0, "probs": 1, "labels": 2}   # ForwardOptions.mode
FORWARD_BLOCK_ROWS = 32   # rows a fused forward may run through layer 0 together (ForwardWork's size)


# ---------------------------------------------------------------- fused_steps
class CsrBatch(NamedTuple):
    """The training images as a CSR matrix, zeros omitted (``fastnn.data.csr.images_to_csr``), and the
    epoch's order; x = float(pixel) * float(1/255)."""
    indptr: np.ndarray    # (n+1,) int64: row i's non-zeros are indptr[i]:indptr[i+1]
    indices: np.ndarray   # (nnz,) uint16: each non-zero's pixel, ascending within a row
    pixels: np.ndarray    # (nnz,) uint8: each non-zero's value
    labels: np.ndarray    # (n,) int64: class of each row, in [0, C)
    order: np.ndarray     # (n,) int64: the epoch's permutation; step s takes rows order[s*B:(s+1)*B]


class Parameters(NamedTuple):
    """Every weight and bias in one flat vector, with the optimizer's state beside it."""
    sizes: np.ndarray     # (L+1,) int64: layer sizes, D first, C last
    w_off: np.ndarray     # (L,) int64: W_l starts at theta[w_off[l]], row-major (sizes[l], sizes[l+1])
    b_off: np.ndarray     # (L,) int64: b_l starts at theta[b_off[l]], (sizes[l+1],)
    theta: np.ndarray     # (P,) float: the parameters, updated in place
    state1: np.ndarray    # (P,) float: momentum's velocity or Adam's m; (1,) when unused
    state2: np.ndarray    # (P,) float: Adam's v; (1,) when unused


class WorkBuffers(NamedTuple):
    """Where a step keeps its activations, its CSC index and the threads' split (``FusedTrainer._allocate``)."""
    act_off: np.ndarray     # (L,) int64: layer l's (B, sizes[l+1]) block starts at acts[act_off[l]]
    mask_off: np.ndarray    # (L,) int64: hidden layer l's mask starts at column nb * mask_off[l] of drop_mask
    row_bounds: np.ndarray  # (T+1,) int64: thread t owns W0 rows (pixels) row_bounds[t]:row_bounds[t+1]
    col_bounds: np.ndarray  # (L, T+1) int64: thread t owns columns col_bounds[l, t]:col_bounds[l, t+1] of W_l, b_l
    z0_parts: np.ndarray    # (T, >= B*H0) float: thread t's share of z0 = x W0, (nb, H0) row-major
    acts: np.ndarray        # (B*S,) float: each layer's output (after activation and dropout; logits last)
    outs: np.ndarray        # (B*S,) float: each hidden layer's activation before dropout; (0,) without dropout
    grads_act: np.ndarray   # (B*S,) float: dL/dz of each layer, same blocks as acts
    csc_ptr: np.ndarray     # (T, D+1) int32: thread t's CSC index of its pixels for the batch
    csc_sample: np.ndarray  # (T, E) int32: the batch row of each entry, E = B * (most non-zeros in one row)
    csc_value: np.ndarray   # (T, >= E) float: the input value of each entry
    csc_span: np.ndarray    # (T, >= 2B) int64: batch row i's non-zeros in thread t's pixels are indices[2i]:[2i+1]
    scratch: np.ndarray     # (T, W) float: a thread's widest weight gradient (``scratch_width``)
    drop_mask: np.ndarray   # (n_steps, B * sum(hidden)) float: inverted-dropout masks (0 or 1/keep); (1, 1) if none


class Hyperparameters(NamedTuple):
    """The step's settings by name; the floats in theta's dtype (so float32 training computes in float32)."""
    lr: np.floating             # learning rate
    momentum: np.floating       # SGD's momentum mu (opt 1)
    weight_decay: np.floating   # L2 coefficient, weights only
    beta1: np.floating          # Adam's first-moment decay (opt 2)
    beta2: np.floating          # Adam's second-moment decay
    eps: np.floating            # Adam's epsilon
    keep: np.floating           # 1 - dropout (1: no dropout)
    label_smoothing: np.floating  # eps of the target (1 - eps) one_hot + eps / C (0: plain)
    act: int                    # hidden activation, ACT_CODES
    opt: int                    # optimizer, OPT_CODES
    t0: int                     # Adam steps taken before this call (its bias correction)


# ---------------------------------------------------------------- fused_forward
class ForwardParameters(NamedTuple):
    """A model's arrays as the fused forward reads them (the model's own arrays, not copies)."""
    weights: tuple   # L arrays (sizes[l], sizes[l+1]), C-contiguous float
    biases: tuple    # L arrays (sizes[l+1],) float


class ForwardWork(NamedTuple):
    """Per-thread room of the fused forward (``fastnn.inference.forward.ForwardPlan`` sizes it)."""
    work_f: np.ndarray   # (T, >= (S + Dmax) (R + 1)) float, R = FORWARD_BLOCK_ROWS, Dmax = max(sizes[:-1]);
    #                      cython's AVX-512 blocks need (S16 + D16) (R + 1) + 16 (S, Dmax rounded up to 16)
    work_i: np.ndarray   # (T, Dmax (R + 1) + R (Dmax // 16 + 2)) int32: the non-zeros' indices and
    #                      the block bounds of cython's AVX-512 path (a narrower buffer: no blocks there)


class ForwardOptions(NamedTuple):
    """What the fused forward computes."""
    act: int          # hidden activation, ACT_CODES
    mode: int         # FORWARD_MODES: logits (0) or probs (1) into out_f, labels (2) into out_i
    unit_range: bool  # also refuse inputs outside [0, 1] (a model of pixels)


# ---------------------------------------------------------------- the boundary check
# A dense layer with fewer outputs than NARROW (a vector of float32) splits its weights between the T
# threads by rows, thread t taking rows n_in t // T .. n_in (t + 1) // T with all their columns (its
# bias still by col_bounds): a column share of 5 of 10 outputs ran a (n_in, 5) product padded to
# the micro-kernel's 32 columns and n_in updates of 5 parameters each (REPORT).
NARROW = 16


def scratch_width(sizes: np.ndarray, col_bounds: np.ndarray) -> int:
    """Floats of per-thread scratch the fused step writes: a dense layer's (n_in, w) weight
    gradient for the widest column share w a thread owns (a narrow layer's: its widest row share,
    (ceil(n_in / T), n_out)), or one row of W0's gradient (H0,)."""
    widths = np.diff(col_bounds, axis=1).max(axis=1)                   # (L,) widest share per layer
    T = col_bounds.shape[1] - 1
    dense = [int(n_in) * int(w) if n_out >= NARROW else -(-int(n_in) // T) * int(n_out)   # by columns or rows
             for n_in, n_out, w in zip(sizes[1:-1], sizes[2:], widths[1:])]
    return max([int(sizes[1]), *dense])


def _require(ok: bool, what: str, kernel: str = "fused_steps") -> None:
    if not ok:
        raise ValueError(f"{kernel}: {what} (fastnn.backends.fused_interface)")


def raise_unsorted_row(row: int, D: int) -> None:
    """The fused kernels' refusal of a training row whose pixel indices they cannot search (met
    in the compiled loop, where each row is checked before its indices are used): ValueError."""
    raise ValueError(f"fused_steps: training row {row}'s pixel indices do not rise strictly below D = {D} "
                     "(fastnn.data.csr.images_to_csr writes them so); the steps before its batch ran")


def check_augment(indptr: np.ndarray, indices: np.ndarray, pixels: np.ndarray, boxes: np.ndarray,
                  order: np.ndarray, lo: int, moves: np.ndarray, col_of: np.ndarray, height: int, width: int,
                  n_threads: int, out_indptr: np.ndarray, out_indices: np.ndarray, out_pixels: np.ndarray) -> None:
    """What ``augment_csr`` relies on for the call's k = len(moves) rows, checked once per call
    (O(k + H W)): dtypes and contiguity, ``order[lo:lo + k]`` in [0, n), those rows' non-zeros
    inside ``indices`` and ``pixels``, ``col_of`` the column of every pixel (p mod W), room in
    ``out_indptr``. That each row's pixels rise strictly below H W and lie in its box of
    ``boxes`` is checked by the kernel as it reaches the row, before using its indices
    (``raise_bad_image``); the out arrays' room for the kept non-zeros, once they are counted.
    Raises ValueError naming the field."""
    fields = {"indptr": (indptr, np.int64, 1), "indices": (indices, np.uint16, 1), "pixels": (pixels, np.uint8, 1),
              "boxes": (boxes, np.int16, 2), "order": (order, np.int64, 1), "moves": (moves, np.int32, 2),
              "col_of": (col_of, np.uint16, 1), "out_indptr": (out_indptr, np.int64, 1),
              "out_indices": (out_indices, np.uint16, 1), "out_pixels": (out_pixels, np.uint8, 1)}
    for name, (arr, dtype, ndim) in fields.items():
        if not (isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.ndim == ndim and arr.flags.c_contiguous):
            _require(False, f"{name} must be a C-contiguous {ndim}-D {np.dtype(dtype)} array", "augment_csr")
    size = int(height) * int(width)
    n, k = indptr.size - 1, moves.shape[0]

    def require(ok, what):
        _require(ok, what, "augment_csr")

    require(height >= 1 and width >= 1 and size <= 2 ** 16, "height and width must be >= 1, H W at most 65536")
    require(n >= 0 and boxes.shape == (n, 4) and moves.shape[1:] == (3,) and n_threads >= 1,
            "boxes must be (n, 4), moves (k, 3), n_threads >= 1")
    require(indices.size == pixels.size and n >= 0 and indptr[0] == 0 and indptr[-1] <= indices.size,
            "indptr must start at 0 and end within indices and pixels (of one size)")
    require(col_of.size >= size and np.array_equal(col_of[:size], np.arange(size, dtype=np.uint16) % width),
            "col_of must hold each pixel's column, p mod W")
    require(lo >= 0 and order.size >= lo + k and out_indptr.size >= k + 1,
            "order must hold lo + k rows and out_indptr k + 1 (k = len(moves))")
    rows = order[lo:lo + k]                                                      # (k,) the call's rows
    if k:
        require(rows.min() >= 0 and rows.max() < n, f"order holds a row outside [0, {n})")
        starts, ends = indptr.take(rows), indptr.take(rows + 1)
        require(starts.min() >= 0 and (ends >= starts).all() and ends.max() <= indices.size,
                "indptr is not ascending for the rows this call moves")


def raise_bad_image(row: int) -> None:
    """``augment_csr``'s refusal of an image whose indices it cannot rely on: ValueError."""
    raise ValueError(f"augment_csr: image {row}'s pixel indices do not rise strictly below H W, or leave its "
                     "bounding box (fastnn.data.augment.bounding_boxes makes them)")


def check_steps(batch: CsrBatch, params: Parameters, work: WorkBuffers, hyper: Hyperparameters,
                first_step: int, n_steps: int, batch_size: int, losses: np.ndarray, prof: np.ndarray) -> None:
    """Every size and index ``fused_steps`` will rely on for these steps, checked once per call
    (the compiled kernels run without bounds checks): dtypes and contiguity of every field, the
    offsets against the buffers' lengths, the threads' bounds, the rows the steps take
    (``order`` in [0, n), each row's non-zeros inside ``indices``, its last pixel below D) and
    the CSC room for their non-zeros. O(L T + n_steps B); raises ValueError naming the field.
    That each row's pixels rise strictly (the kernels binary-search them) is checked in the
    compiled loop, row by row before its indices are used (``raise_unsorted_row``).
    """
    theta = params.theta
    _require(theta.dtype in (np.float32, np.float64) and theta.ndim == 1, "theta must be 1-D float32 or float64")
    fields = {**batch._asdict(), **params._asdict(), **work._asdict(), "losses": losses, "prof": prof}
    kinds = {"indptr": np.int64, "indices": np.uint16, "pixels": np.uint8, "labels": np.int64, "order": np.int64,
             "sizes": np.int64, "w_off": np.int64, "b_off": np.int64, "act_off": np.int64, "mask_off": np.int64,
             "row_bounds": np.int64, "col_bounds": np.int64, "csc_ptr": np.int32, "csc_sample": np.int32,
             "csc_span": np.int64,
             "losses": np.float64, "prof": np.int64}
    for name, arr in fields.items():                 # the messages are only made for a failure
        if not (isinstance(arr, np.ndarray) and arr.flags.c_contiguous):
            _require(False, f"{name} must be a C-contiguous array")
        want = kinds.get(name, theta.dtype)
        if arr.dtype != want:
            _require(False, f"{name} must be {np.dtype(want)}, got {arr.dtype}")
    sizes = params.sizes
    L = sizes.size - 1
    _require(L >= 1 and sizes.min() >= 1, "sizes must hold 2 or more positive layer sizes")
    D, H0, C = int(sizes[0]), int(sizes[1]), int(sizes[-1])
    T = work.col_bounds.shape[1] - 1 if work.col_bounds.ndim == 2 else 0
    _require(T >= 1 and work.col_bounds.shape[0] == L, "col_bounds must be (L, T+1)")
    for name in ("w_off", "b_off", "act_off", "mask_off"):
        _require(fields[name].shape == (L,), f"{name} must be (L,) = ({L},)")
    n_in, n_out = sizes[:-1], sizes[1:]
    _require(params.w_off.min() >= 0 and params.b_off.min() >= 0
             and (params.w_off + n_in * n_out).max() <= theta.size and (params.b_off + n_out).max() <= theta.size,
             "w_off/b_off point outside theta")
    for name in ("state1", "state2"):
        _require(fields[name].size in (1, theta.size), f"{name} must be (P,) or (1,) when unused")
    _require((hyper.opt == 0 or params.state1.size == theta.size)
             and (hyper.opt != 2 or params.state2.size == theta.size),
             "the optimizer's state is missing (state1/state2 of theta's size)")
    _require(hyper.opt in OPT_CODES.values() and hyper.act in ACT_CODES.values(), "unknown act or opt code")
    rb, cb = work.row_bounds, work.col_bounds
    _require(rb.shape == (T + 1,) and rb[0] == 0 and rb[-1] == D and (np.diff(rb) >= 0).all(),
             "row_bounds must rise from 0 to D over T+1 entries")
    _require((cb[:, 0] == 0).all() and (cb[:, -1] == n_out).all() and (np.diff(cb, axis=1) >= 0).all(),
             "col_bounds[l] must rise from 0 to sizes[l+1]")
    B = int(batch_size)
    _require(B >= 1 and first_step >= 0 and n_steps >= 0, "batch_size >= 1, first_step >= 0, n_steps >= 0")
    need = int((work.act_off + B * n_out).max())
    _require(work.act_off.min() >= 0 and work.acts.size >= need and work.grads_act.size >= need,
             f"acts/grads_act hold fewer than the {need} values batch size {B} needs")
    dropout = hyper.keep < 1
    _require(not dropout or work.outs.size >= need, "outs must hold as much as acts with dropout")
    _require(work.z0_parts.ndim == 2 and work.z0_parts.shape[0] == T and work.z0_parts.shape[1] >= B * H0,
             f"z0_parts must be (T, >= B*H0) = ({T}, >= {B * H0})")
    _require(work.csc_ptr.shape == (T, D + 1), f"csc_ptr must be (T, D+1) = ({T}, {D + 1})")
    _require(work.csc_sample.ndim == 2 and work.csc_sample.shape[0] == T and work.csc_value.ndim == 2
             and work.csc_value.shape[0] == T and work.csc_value.shape[1] >= work.csc_sample.shape[1],
             "csc_sample must be (T, E) and csc_value (T, >= E)")
    _require(work.csc_span.ndim == 2 and work.csc_span.shape[0] == T and work.csc_span.shape[1] >= 2 * B,
             f"csc_span must be (T, >= 2B) = ({T}, >= {2 * B})")
    width = scratch_width(sizes, cb)
    _require(work.scratch.ndim == 2 and work.scratch.shape[0] == T and work.scratch.shape[1] >= width,
             f"scratch must be (T, >= {width}): a thread's widest weight gradient")
    hidden = int(n_out[:-1].sum())
    _require(not dropout or n_steps == 0
             or (work.drop_mask.shape[0] >= n_steps and work.drop_mask.shape[1] >= B * hidden),
             f"drop_mask must be (n_steps, >= B * sum(hidden)) = ({n_steps}, >= {B * hidden})")
    _require(losses.shape[0] >= n_steps, "losses must hold n_steps values")
    _require(prof.size == 0 or prof.shape == (T + 1, 2 + 3 * L),
             f"prof must be (0, 0) or (T+1, 2+3L) = ({T + 1}, {2 + 3 * L})")
    indptr, order = batch.indptr, batch.order
    n = order.size
    _require(batch.labels.size >= indptr.size - 1 and indptr.size >= 1 and indptr[0] == 0
             and indptr[-1] <= batch.indices.size == batch.pixels.size,
             "indptr must start at 0 and end within indices and pixels (of one size)")
    rows = order[first_step * B:min((first_step + n_steps) * B, n)]                  # the rows these steps take
    _require(n_steps == 0 or rows.size > (n_steps - 1) * B, "order holds fewer rows than the steps take")
    if rows.size:
        _require(rows.min() >= 0 and rows.max() < indptr.size - 1,
                 f"order holds a row outside [0, {indptr.size - 1})")
        starts, ends = indptr.take(rows), indptr.take(rows + 1)                       # (rows,) each
        counts = ends - starts                                                        # non-zeros per row
        _require(counts.min() >= 0 and starts.min() >= 0 and ends.max() <= batch.indices.size,
                 "indptr is not ascending for the rows these steps take")
        if batch.indices.size:                                                        # each row's last pixel
            _require(batch.indices.take(np.maximum(ends - 1, 0)).max() < D, f"a pixel index is not below D = {D}")
        labels = batch.labels.take(rows)
        _require(labels.min() >= 0 and labels.max() < C, f"a label is outside [0, {C})")
        _require(work.csc_sample.shape[1] >= B * int(counts.max()),
                 f"csc_sample holds fewer than B * {int(counts.max())} entries (the most non-zeros in one row)")
