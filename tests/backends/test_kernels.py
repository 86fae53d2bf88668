"""Every available backend against the float64 NumPy oracle, against each other, and against torch.

Shapes and dtypes are checked first, then values. Tolerances:
float64: rtol = atol = 1e-10; float32: rtol = atol = 1e-4 (matmul atol scales with sqrt(k)).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn.backends import KERNELS, BackendUnavailable, available_backends, backend_names, get_backend
from tests import oracle

BACKENDS = available_backends()
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-4, np.float64: 1e-10}
# the reference backend loops in Python: keep its shapes small
MAX_DIM = 24


def tol(dtype, k=1):
    return dict(rtol=TOL[dtype], atol=TOL[dtype] * max(1.0, np.sqrt(k)))


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def noncontig(x, how):
    """The same values as ``x``, laid out contiguous, transposed or strided."""
    if how == "contiguous":
        return np.ascontiguousarray(x)
    if how == "transposed":
        return np.ascontiguousarray(x.T).T          # F-ordered view, same values
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=x.dtype)
    wide[:, ::2] = x
    return wide[:, ::2]                               # strided view


dims = st.integers(1, MAX_DIM)
layouts = st.sampled_from(["contiguous", "transposed", "strided"])


def test_registry_lists_reference_and_numpy():
    assert {"reference", "numpy"} <= set(BACKENDS)
    assert set(BACKENDS) <= set(backend_names())
    for name in BACKENDS:
        backend = get_backend(name)
        assert all(callable(getattr(backend, k)) for k in KERNELS)
        assert backend.NAME == name


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="unknown backend 'nope'.*numpy"):
        get_backend("nope")


def test_unavailable_backends_say_how_to_get_them():
    for name in set(backend_names()) - set(BACKENDS):
        with pytest.raises(BackendUnavailable, match=name):
            get_backend(name)


# ---------------------------------------------------------------- matmul
@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(m=dims, k=dims, n=dims, dtype=st.sampled_from(DTYPES), la=layouts, lb=layouts, seed=st.integers(0, 2**31))
def test_matmul_matches_oracle(name, m, k, n, dtype, la, lb, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
    out = get_backend(name).matmul(noncontig(a, la), noncontig(b, lb))
    assert out.shape == (m, n) and out.dtype == dtype
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), **tol(dtype, k))


@pytest.mark.parametrize("name", BACKENDS)
def test_matmul_rejects_bad_input(name):
    mm = get_backend(name).matmul
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        mm(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        mm(a, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="float32.*float64|dtype"):
        mm(a, np.ones((4, 2), np.float64))
    with pytest.raises(TypeError, match="int"):
        mm(a.astype(np.int64), np.ones((4, 2), np.int64))


# ---------------------------------------------------------------- activations
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"], ids=lambda act: f"{act}-{act}_backward")
@settings(max_examples=20, deadline=None)
@given(n=dims, h=dims, dtype=st.sampled_from(DTYPES), layout=layouts, scale=st.sampled_from([1.0, 30.0, 1e4]),
       seed=st.integers(0, 2**31))
def test_activation_forward_backward_match_oracle(name, act, n, h, dtype, layout, scale, seed):
    backend = get_backend(name)
    rng = np.random.default_rng(seed)
    z = rand(rng, (n, h), dtype, scale)
    z[0, 0] = 0.0                                    # relu's kink: derivative defined as 0 there
    grad_out = rand(rng, (n, h), dtype)
    fwd, deriv = oracle.ACTIVATIONS[act]
    out = getattr(backend, act)(noncontig(z, layout))
    assert out.shape == z.shape and out.dtype == dtype
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, fwd(z), **tol(dtype))
    saved = z if act == "relu" else out
    grad = getattr(backend, f"{act}_backward")(noncontig(grad_out, layout), noncontig(saved, layout))
    assert grad.shape == z.shape and grad.dtype == dtype
    expected = grad_out * deriv(z.astype(np.float64), out.astype(np.float64))
    np.testing.assert_allclose(grad, expected, **tol(dtype))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"], ids=lambda act: f"{act}_backward")
def test_activation_backward_rejects_mismatched_shapes(name, act):
    fn = getattr(get_backend(name), f"{act}_backward")
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        fn(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))


# ---------------------------------------------------------------- softmax cross-entropy
@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(n=dims, c=st.integers(1, 12), dtype=st.sampled_from(DTYPES), layout=layouts,
       scale=st.sampled_from([1.0, 50.0, 1e4]), seed=st.integers(0, 2**31))
def test_softmax_cross_entropy_and_softmax_cross_entropy_backward_match_oracle(name, n, c, dtype, layout, scale, seed):
    backend = get_backend(name)
    rng = np.random.default_rng(seed)
    logits = rand(rng, (n, c), dtype, scale)
    labels = rng.integers(0, c, size=n)
    loss, probs = backend.softmax_cross_entropy(noncontig(logits, layout), labels)
    assert isinstance(loss, float)
    assert probs.shape == (n, c) and probs.dtype == dtype
    assert np.isfinite(loss) and np.all(np.isfinite(probs))
    # the loss of float32 logits of size 1e4 carries float32 rounding of the logits themselves
    np.testing.assert_allclose(loss, oracle.cross_entropy(logits, labels), rtol=TOL[dtype],
                               atol=TOL[dtype] * max(1.0, scale))
    np.testing.assert_allclose(probs, oracle.softmax(logits), **tol(dtype))
    np.testing.assert_allclose(backend.softmax(noncontig(logits, layout)), oracle.softmax(logits), **tol(dtype))
    grad = backend.softmax_cross_entropy_backward(noncontig(probs, layout), labels)
    assert grad.shape == (n, c) and grad.dtype == dtype
    np.testing.assert_allclose(grad, oracle.cross_entropy_grad(logits, labels), **tol(dtype))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_extreme_logits(name, dtype):
    backend = get_backend(name)
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]], dtype=dtype)
    labels = np.array([1, 2, 0])
    loss, probs = backend.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(loss, (2e4 + np.log(3) + np.log(3)) / 3, rtol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", BACKENDS)
def test_softmax_cross_entropy_and_softmax_cross_entropy_backward_check_labels(name):
    backend = get_backend(name)
    logits = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"labels shape \(3,\).*4"):
        backend.softmax_cross_entropy(logits, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        backend.softmax_cross_entropy(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        backend.softmax_cross_entropy_backward(logits, np.array([0, -1, 2, 1]))
    with pytest.raises(TypeError, match="integer"):
        backend.softmax_cross_entropy(logits, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        backend.softmax_cross_entropy(np.zeros(4, np.float32), np.zeros(4, np.int64))


# ---------------------------------------------------------------- backends against each other
@settings(max_examples=15, deadline=None)
@given(n=dims, d=dims, c=st.integers(1, 10), seed=st.integers(0, 2**31))
def test_reference_equals_numpy(n, d, c, seed):
    ref, fast = get_backend("reference"), get_backend("numpy")
    rng = np.random.default_rng(seed)
    x, w = rand(rng, (n, d), np.float64), rand(rng, (d, c), np.float64)
    labels = rng.integers(0, c, n)
    np.testing.assert_allclose(ref.matmul(x, w), fast.matmul(x, w), rtol=1e-12, atol=1e-12)
    z = ref.matmul(x, w)
    for act in ("relu", "sigmoid", "tanh"):
        np.testing.assert_allclose(getattr(ref, act)(z), getattr(fast, act)(z), rtol=1e-12, atol=1e-15)
    (l1, p1), (l2, p2) = ref.softmax_cross_entropy(z, labels), fast.softmax_cross_entropy(z, labels)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    np.testing.assert_allclose(p1, p2, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", BACKENDS)
def test_softmax_cross_entropy_matches_torch(name, torch):
    rng = np.random.default_rng(0)
    logits = rand(rng, (7, 5), np.float64, 10.0)
    labels = rng.integers(0, 5, 7)
    t = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    t_loss.backward()
    backend = get_backend(name)
    loss, probs = backend.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(backend.softmax_cross_entropy_backward(probs, labels), t.grad.numpy(),
                               rtol=1e-10, atol=1e-14)
