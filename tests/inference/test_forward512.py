"""The Cython forward's AVX-512 float32 path (``fastnn/backends/cython/forward512.h``) gives the
portable path's results.

Oracle: the same compiled forward on the same rows through its portable kernels (``sparse_row.h``):
rows with a column stride (a view of every other column of a wider array) never take the AVX-512
path, which reads contiguous rows only. Both sum each output in the order of the non-zero inputs.
Where the portable path works in 64-byte vectors too (blocks of 64 or 128 float columns) both
compute each term with one FMA, so the logits are equal bit for bit; in its narrower vectors and
scalar columns the portable path rounds x w before adding it, so there they agree to float32
rounding (1e-5 relative, 1e-6 absolute after four layers). Within the AVX-512 path a row's
logits are the same bits alone, in a block of 32 rows, or on either thread. Sizes chosen to
reach every part of the AVX-512 kernels: inputs not a multiple of 16, outputs of 8, 4, 2 and 1
vectors and a masked tail, batches on the row path (under 16 rows), split between threads, and
in blocks of 32 rows. Skipped where the build has no AVX-512 (the portable path is then all
there is).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends

if "cython" not in available_backends():
    pytest.skip("the cython backend is not built here (pip install -e .)", allow_module_level=True)

import importlib  # noqa: E402

_forward = importlib.import_module("fastnn.backends.cython.fused_forward")
pytestmark = pytest.mark.skipif(not _forward.FORWARD512, reason="this build of the cython backend has no AVX-512")


def strided(X):
    """X's values in a view with a column stride of 2: the portable path."""
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
    wide[:, ::2] = X
    return wide[:, ::2]


def images(n, d, density, seed):
    rng = np.random.default_rng(seed)
    return ((rng.random((n, d)) < density) * rng.random((n, d))).astype(np.float32)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("n", [1, 7, 15, 16, 40, 203])
def test_matches_the_portable_path(activation, n):
    model = NeuralNetwork([50, 130, 37, 17, 3], activation=activation, backend="cython", seed=3)
    for b in model.biases:
        b[:] = np.random.default_rng(4).normal(0, 0.1, b.shape)
    for density in (0.0, 0.05, 0.3, 1.0):
        X = images(n, 50, density, seed=n)
        np.testing.assert_allclose(model.logits(X), model.logits(strided(X)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.forward(X), model.forward(strided(X)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 40, 203])
def test_same_bits_in_64_byte_columns(n):
    """Layers of 128 and 64 outputs: the portable path's 64-byte blocks, the same FMAs."""
    model = NeuralNetwork([784, 128, 64], backend="cython", seed=0)
    X = images(n, 784, 0.19, seed=n)
    np.testing.assert_array_equal(model.logits(X), model.logits(strided(X)))


def test_blocks_rows_and_threads_agree():
    """Each row's logits do not depend on the rows beside it: alone, in a block, on a thread."""
    model = NeuralNetwork([784, 128, 64, 10], backend="cython", seed=0)
    X = images(100, 784, 0.19, seed=1)
    together = model.logits(X)
    alone = np.concatenate([model.logits(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(together, alone)


def test_inputs_at_the_edges_of_the_chunks():
    """A non-zero only in the first, the last, or one input of each chunk of 16; every input; none."""
    model = NeuralNetwork([784, 128, 64, 10], backend="cython", seed=0)
    X = np.zeros((40, 784), dtype=np.float32)
    X[0, 0] = X[1, 783] = 1
    X[2, ::16] = 0.5
    X[3, 15::16] = 0.25
    X[4] = 1
    X[5, 700:] = -0.0                                   # negative zeros are zeros
    np.testing.assert_allclose(model.logits(X), model.logits(strided(X)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X), model.predict(strided(X)))


@pytest.mark.parametrize("n", [1, 40, 100])
def test_a_bad_row_inside_a_block_is_named(n):
    from fastnn.inference.forward import InputRangeError

    model = NeuralNetwork.pretrained("mnist", backend="cython")
    X = images(n, 784, 0.19, seed=0)
    X[n // 2, 783] = 1.5                                 # past 1, in the last chunk of 16
    with pytest.raises(InputRangeError, match=f"X row {n // 2} holds values up to 1.5"):
        model.predict(X)
    X[n // 2, 783] = np.nan
    with pytest.raises(InputRangeError, match=f"X row {n // 2} holds NaN"):
        model.predict(X)
