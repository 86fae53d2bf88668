"""Augmentation (fastnn.data.augment): the dense moves against a pixel-by-pixel reference, the fused
path's ``augment_csr`` kernels against the dense moves, and one trajectory for both paths.

Oracles: ``reference_move`` (a loop over output pixels, the definition) for ``move_images``;
``move_images`` for every backend's ``augment_csr`` (exact: both only move uint8 values); the
kernel path for the fused path's losses with augmentation (1e-5 over 150 float64 steps).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn import NeuralNetwork
from fastnn.backends import available_backends, get_backend
from fastnn.data.augment import Augmentation, Augmenter, bounding_boxes, move_images, parse_augment
from fastnn.data.csr import images_to_csr
from fastnn.data.datasets import Dataset
from fastnn.training.factory import make_trainer
from fastnn.training.fused import FusedTrainer
from fastnn.training.optim import make_optimizer
from fastnn.training.trainers import KernelTrainer
from tests.conftest import TORCH_MISSING

FUSED = [b for b in ("numba", "cython") if b in available_backends()]


def reference_move(image: np.ndarray, dx: int, dy: int, flip: int) -> np.ndarray:
    """The definition: mirror left-right if flip, then content moves dx right and dy down."""
    H, W = image.shape
    src = image[:, ::-1] if flip else image
    out = np.zeros_like(image)
    for r in range(H):
        for c in range(W):
            if 0 <= r - dy < H and 0 <= c - dx < W:
                out[r, c] = src[r - dy, c - dx]
    return out


def sparse_images(n, h, w, density, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((n, h, w)) < density) * rng.integers(1, 256, (n, h, w))).astype(np.uint8)


def random_moves(n, max_shift, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    moves = np.zeros((n, 3), dtype=np.int32)
    moves[:, :2] = rng.integers(-max_shift, max_shift + 1, (n, 2))
    moves[:, 2] = rng.integers(0, 2, n)
    return moves


@pytest.mark.parametrize("shape", [(28, 28), (5, 9), (9, 4), (1, 6)])
def test_move_images_matches_the_definition(shape):
    images = sparse_images(40, *shape, 0.5)
    moves = random_moves(40, max(shape) + 1)               # includes moves off the canvas entirely
    got = move_images(images, moves)
    assert got.dtype == np.uint8 and got.shape == images.shape
    for img, mv, out in zip(images, moves, got):
        np.testing.assert_array_equal(out, reference_move(img, *mv))


def test_zero_move_is_the_identity_and_flip_twice_too():
    images = sparse_images(10, 6, 7, 0.4)
    np.testing.assert_array_equal(move_images(images, np.zeros((10, 3), np.int32)), images)
    flip = np.tile(np.array([0, 0, 1], np.int32), (10, 1))
    np.testing.assert_array_equal(move_images(move_images(images, flip), flip), images)


def csr_to_dense(indptr, indices, pixels, shape) -> np.ndarray:
    out = np.zeros((len(indptr) - 1, shape[0] * shape[1]), dtype=np.uint8)
    for j in range(len(indptr) - 1):
        seg = slice(indptr[j], indptr[j + 1])
        assert np.all(np.diff(indices[seg].astype(np.int64)) > 0), "indices must ascend within a row"
        out[j, indices[seg]] = pixels[seg]
    return out.reshape(-1, *shape)


def run_augment_csr(backend, images, order, lo, moves, n_threads):
    h, w = images.shape[1:]
    indptr, indices, pixels = images_to_csr(images)
    aug = Augmenter(Augmentation(1), (h, w))
    out_indptr = np.full(len(moves) + 1, -1, dtype=np.int64)
    out_indices = np.zeros(max(1, indptr[-1]), dtype=np.uint16)
    out_pixels = np.zeros(max(1, indptr[-1]), dtype=np.uint8)
    boxes = bounding_boxes(indptr, indices, w)
    k = get_backend(backend).augment_csr(indptr, indices, pixels, boxes, order, lo, moves, aug.col_of, h, w,
                                         n_threads, out_indptr, out_indices, out_pixels)
    assert k == out_indptr[-1] and out_indptr[0] == 0
    return csr_to_dense(out_indptr, out_indices, out_pixels, (h, w))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shape,density", [((28, 28), 0.2), ((5, 9), 0.6), ((9, 4), 1.0), ((7, 7), 0.0)])
def test_augment_csr_matches_move_images(backend, n_threads, shape, density):
    images = sparse_images(60, *shape, density)
    images[3] = 0                                               # an empty image among them
    order = np.random.default_rng(2).permutation(60).astype(np.int64)
    moves = random_moves(45, max(shape) // 2 + 1)
    got = run_augment_csr(backend, images, order, 10, moves, n_threads)     # rows order[10:55]
    np.testing.assert_array_equal(got, move_images(images[order[10:55]], moves))


@pytest.mark.parametrize("backend", FUSED)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 12), h=st.integers(1, 10), w=st.integers(1, 10), density=st.floats(0, 1),
       max_shift=st.integers(0, 11), seed=st.integers(0, 2**16), n_threads=st.integers(1, 4))
def test_augment_csr_matches_move_images_on_random_shapes(backend, n, h, w, density, max_shift, seed, n_threads):
    images = sparse_images(n + 2, h, w, density, seed)
    order = np.random.default_rng(seed).permutation(n + 2).astype(np.int64)
    moves = random_moves(n, max_shift, seed + 1)
    got = run_augment_csr(backend, images, order, 1, moves, n_threads)
    np.testing.assert_array_equal(got, move_images(images[order[1:1 + n]], moves))


def _augment_args(images, n_threads=2):
    """augment_csr's arguments for every image of ``images`` (N, H, W), unmoved: a dict to spoil."""
    h, w = images.shape[1:]
    indptr, indices, pixels = images_to_csr(images)
    return dict(indptr=indptr, indices=indices.copy(), pixels=pixels, boxes=bounding_boxes(indptr, indices, w),
                order=np.arange(len(images), dtype=np.int64), lo=0, moves=np.zeros((len(images), 3), np.int32),
                col_of=Augmenter(Augmentation(1), (h, w)).col_of.copy(), height=h, width=w, n_threads=n_threads,
                out_indptr=np.zeros(len(images) + 1, np.int64), out_indices=np.zeros(indptr[-1], np.uint16),
                out_pixels=np.zeros(indptr[-1], np.uint8))


def _unsorted_image(a):
    """Image 5's pixel indices reversed, one past H W in the middle: its last pixel stays in."""
    s, e = a["indptr"][5], a["indptr"][6]
    a["indices"][s:e] = a["indices"][s:e][::-1].copy()
    a["indices"][s + 1] = 60000


def _unsorted_image_moved_off(a):
    """The same, moved 20 columns right: its box leaves the canvas, so the first pass counts its
    pixels one by one (and refuses it there); unmoved, the second pass refuses it."""
    _unsorted_image(a)
    a["moves"][5] = (20, 0, 0)


def _box_too_small(a):
    a["boxes"][7, 3] -= 1                                       # its last column now outside its box


# (what is wrong, how to make it wrong, the message's words)
BAD_AUGMENT = [
    ("pixels not ascending", _unsorted_image, "image 5's pixel indices"),
    ("pixels not ascending, counted one by one", _unsorted_image_moved_off, "image 5's pixel indices"),
    ("a box that leaves pixels out", _box_too_small, "image 7's"),
    ("order past the images", lambda a: a["order"].__setitem__(3, 10**9), "order holds a row outside"),
    ("a wrong column table", lambda a: a["col_of"].__setitem__(30, 1), "col_of"),
    ("out_indptr too short", lambda a: a.update(out_indptr=a["out_indptr"][:3]), "out_indptr"),
    ("moves of int64", lambda a: a.update(moves=a["moves"].astype(np.int64)), "moves"),
    ("out_indices too short", lambda a: a.update(out_indices=a["out_indices"][:10]), "no room"),
]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("what,spoil,words", BAD_AUGMENT, ids=[b[0] for b in BAD_AUGMENT])
def test_augment_csr_refuses_what_it_cannot_rely_on(backend, what, spoil, words):
    images = sparse_images(20, 28, 28, 0.3)
    args = _augment_args(images)
    spoil(args)
    with pytest.raises(ValueError, match=words):
        get_backend(backend).augment_csr(**args)


@pytest.mark.parametrize("backend", FUSED)
def test_augment_csr_finds_a_repeated_pixel_anywhere_in_a_long_row(backend):
    """The row check compares 16 pairs at a time and then the last 16, overlapping: a pixel
    repeated at any position (first pair, inside a block, at a block's edge, in the tail) is
    refused, and the untouched rows pass."""
    images = np.full((2, 28, 28), 7, dtype=np.uint8)           # 784 non-zeros a row
    for k in (1, 2, 15, 16, 17, 31, 32, 33, 400, 766, 767, 768, 782, 783):
        args = _augment_args(images)
        start = args["indptr"][1]
        args["indices"][start + k] = args["indices"][start + k - 1]
        with pytest.raises(ValueError, match="image 1's pixel indices"):
            get_backend(backend).augment_csr(**args)
    assert get_backend(backend).augment_csr(**_augment_args(images)) == 2 * 784


def test_bounding_boxes():
    images = np.zeros((3, 5, 6), dtype=np.uint8)
    images[0, 1, 2] = images[0, 3, 4] = images[0, 2, 1] = 9          # rows 1-3, columns 1-4
    images[2, 4, 5] = 1
    boxes = bounding_boxes(*images_to_csr(images)[:2], 6)
    np.testing.assert_array_equal(boxes, [[1, 3, 1, 4], [0, 0, 0, 0], [4, 4, 5, 5]])


@pytest.mark.parametrize("spec,expected", [("none", Augmentation()), ("", Augmentation()),
                                           ("shift=2", Augmentation(2)), ("flip", Augmentation(0, True)),
                                           (" Shift=1 , flip", Augmentation(1, True))])
def test_parse_augment(spec, expected):
    assert parse_augment(spec) == expected
    assert parse_augment(str(expected)) == expected


@pytest.mark.parametrize("spec", ["shift", "shift=-1", "shift=99", "rotate=5", "shift=2;flip", "flip,,"])
def test_parse_augment_refuses_what_it_cannot_read(spec):
    with pytest.raises(ValueError, match="shift"):
        parse_augment(spec)


def test_moves_are_drawn_per_epoch_whatever_the_calls():
    a, b = (Augmenter(Augmentation(2, True), (28, 28), seed=4) for _ in range(2))
    for epoch in range(2):
        whole = a.moves(100, 0, 10, 16)                           # 7 steps of 16 (last one 4)
        pieces = np.concatenate([b.moves(100, first, 3, 16) for first in range(0, 7, 3)])
        np.testing.assert_array_equal(whole, pieces)
        assert whole.shape == (100, 3) and set(np.unique(whole[:, 2])) <= {0, 1}
        assert np.abs(whole[:, :2]).max() <= 2


def test_augmenter_needs_2d_images():
    with pytest.raises(ValueError, match="2-D"):
        Augmenter(Augmentation(1), (784,))


def image_dataset(n=500, h=7, w=8, c=5, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(sparse_images(n, h, w, 0.35, seed), rng.integers(0, c, n), [str(i) for i in range(c)], "toy")


def augmented_trajectory(trainer_cls, backend, augmentation, n_steps=150, batch=32, per_call=5):
    ds = image_dataset()
    model = NeuralNetwork([56, 16, 12, 5], backend=backend, dtype=np.float64, seed=3, dropout=0.1)
    opt = make_optimizer("momentum", model, 0.05, 1e-3)
    trainer = trainer_cls(model, opt, ds, Augmenter(augmentation, (7, 8), seed=9))
    rng = np.random.default_rng(7)
    losses = []
    steps_per_epoch = -(-len(ds) // batch)
    while len(losses) < n_steps:
        order = rng.permutation(len(ds))
        for first in range(0, steps_per_epoch, per_call):
            losses.extend(trainer.run_steps(order, first, per_call, batch))
    return np.array(losses[:n_steps]), model


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("augmentation", [Augmentation(2), Augmentation(1, True)])
def test_fused_trajectory_with_augmentation_matches_kernel_path(backend, augmentation):
    ref, ref_model = augmented_trajectory(KernelTrainer, "numpy", augmentation, per_call=3)
    got, model = augmented_trajectory(FusedTrainer, backend, augmentation, per_call=7)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for W, W_ref in zip(model.weights, ref_model.weights):
        np.testing.assert_allclose(W, W_ref, rtol=1e-6, atol=1e-9)
    plain, _ = augmented_trajectory(KernelTrainer, "numpy", Augmentation(), per_call=3)
    assert not np.allclose(plain, ref)                             # the augmentation did something


def test_torch_trainer_applies_the_same_moves():
    pytest.importorskip("torch", reason=TORCH_MISSING)
    ds = image_dataset(n=64)
    seen = []
    for backend in ("numpy", "torch"):
        model = NeuralNetwork([56, 16, 12, 5], backend=backend, dtype=np.float64, seed=3)
        opt = make_optimizer("sgd", model, 0.05, 0.0)
        trainer = make_trainer(model, opt, ds, augmenter=Augmenter(Augmentation(2, True), (7, 8), seed=1))
        seen.append(trainer.run_steps(np.arange(64), 0, 1, 64))   # one full-batch step: the same loss
    np.testing.assert_allclose(seen[0], seen[1], rtol=1e-10)
