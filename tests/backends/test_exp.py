"""The Cython fused step's float32 exponential (``fastnn/backends/cython/exp_vector.h``, the
softmax's e^(z - max z)) against float64 ``np.exp``: within 2 units in the last place on its
domain x <= 0, 0 below -87.33654 (where e^x < 2^-126), NaN for NaN, every row length around its
16 lanes."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn.backends import available_backends

pytestmark = pytest.mark.skipif("cython" not in available_backends(),
                                reason="the Cython kernels are not built: pip install -e .")


def _exp(z, mx=0.0):
    from fastnn.backends.cython import kernels

    z = np.ascontiguousarray(z, dtype=np.float32)
    out = np.full_like(z, 7.0)
    kernels.exp_shifted(z, np.float32(mx), out)
    return out


def _ulps(got, x):
    ref = np.exp(x.astype(np.float64))
    return np.abs(got.astype(np.float64) - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)


def test_within_two_ulps_of_float64_on_its_domain():
    rng = np.random.default_rng(0)
    x = np.concatenate([-np.logspace(-9, np.log10(87.33), 100_000), rng.uniform(-87.33, 0, 100_000),
                        [0.0, -1e-30, -0.5 * np.log(2), -np.log(2), -87.33]]).astype(np.float32)
    assert _ulps(_exp(x), x).max() <= 2


def test_the_shift_is_subtracted_first():
    z = np.float32([3.0, 1.5, -2.0, 3.0])
    got = _exp(z, mx=3.0)
    x = z - np.float32(3.0)
    assert _ulps(got, x).max() <= 2 and got[0] == got[3] == 1.0


def test_edges_underflow_and_nan():
    x = np.float32([-87.33654, -87.34, -90.0, -104.0, -np.inf, np.nan, 0.0, -0.0])
    got = _exp(x)
    assert got[0] > 0 and (got[1:5] == 0).all() and np.isnan(got[5]) and got[6] == got[7] == 1.0


@pytest.mark.parametrize("n", [1, 9, 10, 15, 16, 17, 31, 33])
def test_every_length_around_the_lanes(n):
    x = -np.linspace(0, 20, n, dtype=np.float32)
    got = _exp(x)
    assert got.shape == (n,) and _ulps(got, x).max() <= 2


def test_a_mismatched_output_is_refused():
    from fastnn.backends.cython import kernels

    with pytest.raises(ValueError, match="size"):
        kernels.exp_shifted(np.zeros(3, np.float32), np.float32(0), np.zeros(2, np.float32))
