"""The compiled fused kernels called directly, through their named groups
(``fastnn.backends.fused_interface``): one SGD step of ``fused_steps`` against a float64 NumPy
oracle of the same step, and the boundary checks of ``fused_steps`` and ``fused_forward`` (a
size or index the kernel cannot rely on is a ValueError naming it, never a wild read)."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends, get_backend
from fastnn.backends.fused_interface import CsrBatch, ForwardOptions, ForwardParameters, ForwardWork
from fastnn.data.datasets import Dataset
from fastnn.training.fused import FusedTrainer
from fastnn.training.optim import make_optimizer

FUSED = [name for name in ("numba", "cython") if name in available_backends()]
B = 8                                        # batch rows


def toy(n=40, d=50, c=5, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = ((rng.random((n, d)) < 0.3) * rng.integers(1, 256, (n, d))).astype(np.uint8)
    return Dataset(images, rng.integers(0, c, n), [str(i) for i in range(c)], "toy")


def made_trainer(name, dtype=np.float64, lr=0.1, momentum=0.9, weight_decay=0.01):
    data = toy()
    model = NeuralNetwork([50, 16, 12, 5], backend=name, dtype=dtype, seed=1)
    trainer = FusedTrainer(model, make_optimizer("momentum", model, lr, weight_decay, momentum), data)
    trainer._allocate(B)
    return model, trainer, data


def groups(trainer, order, n_steps=1):
    batch = CsrBatch(trainer.indptr, trainer.indices, trainer.pixels, trainer.labels, order)
    return (batch, trainer.parameters(), trainer.work_buffers(np.ones((1, 1), dtype=trainer.model.dtype)),
            trainer.hyperparameters(), 0, n_steps, B, np.empty(n_steps), np.zeros((0, 0), dtype=np.int64))


def one_step_oracle(weights, biases, X, y, lr, momentum, weight_decay):
    """(loss, weights, biases) after one momentum-SGD step from zero velocity, in float64:
    forward (ReLU), mean softmax cross-entropy, backward, v = g (+ wd W for weights), W -= lr v."""
    acts, z = [X], X
    for l, (W, b) in enumerate(zip(weights, biases)):
        z = acts[-1] @ W + b                                              # (B, n_out)
        if l < len(weights) - 1:
            acts.append(np.maximum(z, 0))
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)               # (B, C)
    loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
    G = probs.copy()
    G[np.arange(len(y)), y] -= 1
    G /= len(y)                                                           # dL/dlogits (B, C)
    new_w, new_b = [None] * len(weights), [None] * len(weights)
    for l in reversed(range(len(weights))):
        gW, gb = acts[l].T @ G, G.sum(axis=0)
        if l:
            G = (G @ weights[l].T) * (acts[l] > 0)
        new_w[l] = weights[l] - lr * (gW + weight_decay * weights[l])    # biases: no weight decay
        new_b[l] = biases[l] - lr * gb
    return loss, new_w, new_b


@pytest.mark.parametrize("name", FUSED)
def test_fused_steps_one_step_matches_float64_oracle(name):
    model, trainer, data = made_trainer(name)
    order = np.random.default_rng(2).permutation(len(data.labels)).astype(np.int64)
    rows = order[:B]
    X = data.images[rows].astype(np.float64) / 255                       # (B, D)
    loss, want_w, want_b = one_step_oracle([w.copy() for w in model.weights], [b.copy() for b in model.biases], X,
                                           data.labels[rows].astype(np.int64), 0.1, 0.9, 0.01)
    args = groups(trainer, order)
    get_backend(name).fused_steps(*args)
    np.testing.assert_allclose(args[7][0], loss, rtol=1e-12)
    for got, want in zip(model.weights + model.biases, want_w + want_b):  # the model's arrays are views of theta
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def _swap(args, group: int, **fields):
    args = list(args)
    args[group] = args[group]._replace(**fields)
    return args


def _unsorted(batch):
    """The first row's pixel indices reversed, one of them far past D but not the last: the last
    pixel of every row stays below D, so only the kernel's own pass over the row can tell."""
    indices = batch.indices.copy()
    a, b = batch.indptr[0], batch.indptr[1]
    assert b - a >= 3
    indices[a:b] = indices[a:b][::-1]
    indices[a + 1] = 60000
    return indices


# (what is wrong, how to make it wrong, the message's words)
BAD_STEPS = [
    ("order outside the rows", lambda a, t: _swap(a, 0, order=np.full(40, 40, dtype=np.int64)), "order holds a row"),
    ("order as int32", lambda a, t: _swap(a, 0, order=a[0].order.astype(np.int32)), "order must be int64"),
    ("a pixel index past D", lambda a, t: _swap(a, 0, indices=np.full_like(a[0].indices, 60)), "pixel index"),
    ("pixels not ascending", lambda a, t: _swap(a, 0, indices=_unsorted(a[0])), "rise strictly below D"),
    ("a label past C", lambda a, t: _swap(a, 0, labels=np.full_like(a[0].labels, 7)), "label is outside"),
    ("indptr past indices", lambda a, t: _swap(a, 0, indices=a[0].indices[:5], pixels=a[0].pixels[:5]), "indptr"),
    ("theta as float32", lambda a, t: _swap(a, 1, theta=a[1].theta.astype(np.float32)), "must be float32"),
    ("no momentum state", lambda a, t: _swap(a, 1, state1=np.zeros(1)), "optimizer's state"),
    ("w_off past theta", lambda a, t: _swap(a, 1, w_off=a[1].w_off + 10**6), "outside theta"),
    ("acts too small", lambda a, t: _swap(a, 2, acts=a[2].acts[:10]), "acts/grads_act"),
    ("z0_parts too small", lambda a, t: _swap(a, 2, z0_parts=a[2].z0_parts[:, :3].copy()), "z0_parts"),
    ("csc_sample too small", lambda a, t: _swap(a, 2, csc_sample=a[2].csc_sample[:, :1].copy()), "csc_sample"),
    ("csc_span too small", lambda a, t: _swap(a, 2, csc_span=a[2].csc_span[:, :3].copy()), "csc_span"),
    ("row_bounds off D", lambda a, t: _swap(a, 2, row_bounds=a[2].row_bounds - 1), "row_bounds"),
    ("col_bounds past a layer", lambda a, t: _swap(a, 2, col_bounds=a[2].col_bounds * 2), "col_bounds"),
    ("an unknown optimizer", lambda a, t: _swap(a, 3, opt=7), "act or opt"),
    ("scratch too narrow", lambda a, t: _swap(a, 2, scratch=a[2].scratch[:, :3].copy()), "scratch"),
    ("losses too short", lambda a, t: [*a[:7], np.empty(0), a[8]], "losses"),
    ("non-contiguous acts", lambda a, t: _swap(a, 2, acts=np.repeat(a[2].acts, 2)[::2]), "C-contiguous"),
]


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("what,spoil,words", BAD_STEPS, ids=[b[0] for b in BAD_STEPS])
def test_fused_steps_refuses_what_it_cannot_rely_on(name, what, spoil, words):
    model, trainer, data = made_trainer(name)
    args = groups(trainer, np.arange(len(data.labels), dtype=np.int64))
    theta = trainer.theta.copy()
    with pytest.raises(ValueError, match=words):
        get_backend(name).fused_steps(*spoil(args, trainer))
    np.testing.assert_array_equal(trainer.theta, theta)                   # refused before anything ran


@pytest.mark.parametrize("name", FUSED)
def test_fused_forward_refuses_what_it_cannot_rely_on(name):
    model = NeuralNetwork([50, 16, 5], backend=name, seed=0)
    X = np.zeros((3, 50), np.float32)
    params = ForwardParameters(tuple(model.weights), tuple(model.biases))
    work = ForwardWork(np.zeros((1, 200), np.float32), np.zeros((1, 100), np.int32))
    logits = ForwardOptions(act=0, mode=0, unit_range=True)
    run = get_backend(name).fused_forward
    no_labels = np.zeros(0, np.int64)
    assert run(params, work, logits, X, np.empty((3, 5), np.float32), no_labels) == -1
    with pytest.raises(ValueError, match="out_f"):
        run(params, work, logits, X, np.empty((2, 5), np.float32), no_labels)
    with pytest.raises(ValueError, match="out_i"):
        run(params, work, logits._replace(mode=2), X, np.empty((3, 5), np.float32), np.empty(2, np.int64))
    with pytest.raises(ValueError, match="weights"):
        run(params, work, logits, np.zeros((3, 49), np.float32), np.empty((3, 5), np.float32), no_labels)
    with pytest.raises(ValueError, match="work"):
        run(params, ForwardWork(work.work_f[:, :20].copy(), work.work_i), logits, X, np.empty((3, 5), np.float32),
            no_labels)
    with pytest.raises(ValueError, match="act and mode"):
        run(params, work, logits._replace(act=9), X, np.empty((3, 5), np.float32), no_labels)


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_steps_flush_subnormals_and_leave_the_callers_mode(name, dtype):
    """Momentum's velocity of a pixel no sample has decays 0.9x a step into the subnormals, where
    Intel cores take a microcode assist per operation: the step runs with subnormals as zero
    (MXCSR's FTZ and DAZ bits on x86, as XLA's CPU threads) and puts every thread's mode back."""
    import platform

    model, trainer, data = made_trainer(name, dtype, weight_decay=0.0)
    order = np.arange(len(data.labels), dtype=np.int64)
    args = groups(trainer, order)
    params = args[1]
    tiny = np.finfo(dtype).smallest_subnormal * 4                         # 0.9 * tiny rounds to a subnormal
    params.state1[:] = tiny
    absent = np.flatnonzero(data.images[order[:B]].max(axis=0) == 0)     # pixels no sample of the batch has
    assert absent.size > 0
    W0 = model.weights[0].copy()
    get_backend(name).fused_steps(*args)
    velocity0 = params.state1[params.w_off[0]:params.w_off[0] + W0.size].reshape(W0.shape)   # (D, H0)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert (velocity0[absent] == 0).all()                              # flushed, not 0.9 * tiny
    np.testing.assert_array_equal(model.weights[0][absent], W0[absent])
    A = np.full((512, 512), tiny, dtype=dtype)                             # subnormal * 1 stays subnormal ...
    assert (A * dtype(1) == A).all()                                       # ... on this thread
    out = get_backend(name).matmul(A, np.eye(512, dtype=dtype))           # ... and on the kernels' threads
    assert (out == A).all()
