"""The packed GEMMs (``fastnn/backends/cython/gemm.h``, ``fastnn/backends/numba/gemm.py``) against
a float64 NumPy oracle: edge sizes around the micro-tile and cache blocks, both dtypes, alpha and
beta, transposed views, one and two threads, and every micro-kernel of the Cython build
(``FASTNN_GEMM_ISA`` picks a narrower one in a fresh process)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn.backends import available_backends

# around MR (4, 6, 8), NR (8-32), MC (144 on AVX2, 128 on AVX-512), KC (512/1024) and NC (2048), plus the network's;
# n <= NR reads A in place (the backward pass's W G^T), m <= MC reads B in place; n <= 16 (float32)
# (8 float64) runs the narrow one-vector micro-kernel, full tiles of it at n = 16 (8)
SHAPES = [(1, 1, 1), (1, 5, 1), (7, 3, 9), (37, 71, 53), (32, 128, 64), (64, 64, 10), (32, 64, 16), (24, 40, 8),
          (129, 33, 65), (144, 20, 17), (150, 33, 40), (9, 1100, 33), (32, 1024, 512), (3, 20, 2100),
          (1030, 70, 30), (1024, 512, 32)]


def _inputs(m, k, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)


def _tol(dtype, k):
    return (1e-5 if dtype == np.float32 else 1e-12) * max(1.0, np.sqrt(k)) * 4


numba_only = pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed: pip install -e .")
cython_only = pytest.mark.skipif("cython" not in available_backends(),
                                 reason="the Cython kernels are not built: pip install -e .")


def _numba_gemm(a, b, c, alpha, beta, trans_a=False, trans_b=False, c_transposed=False, threads=1):
    """numba's gemm on 2-D arrays: a (m, k) or its transpose stored (k, m) when trans_a, likewise b;
    c (m, n), or stored (n, m) when c_transposed (gemm.h's column stride)."""
    from fastnn.backends.numba.gemm import gemm, gemm_parallel

    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    ldc, cs = (1, m) if c_transposed else (n, 1)
    args = (trans_a, trans_b, m, n, k, alpha, a.reshape(-1), a.shape[1], b.reshape(-1), b.shape[1], beta,
            c.reshape(-1), ldc, cs)
    if threads > 1:
        gemm_parallel(*args, threads)
    else:
        gemm(*args)


@numba_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_numba_gemm_matches_float64(shape, dtype):
    m, k, n = shape
    a, b = _inputs(m, k, n, dtype)
    ref = a.astype(np.float64) @ b                                                       # (m, n)
    one, zero = dtype(1), dtype(0)
    tol = _tol(dtype, k) * np.abs(ref).max(initial=1)
    for kwargs in ({}, {"threads": 2}):
        c = np.full((m, n), np.nan, dtype)                       # beta == 0 never reads c
        _numba_gemm(a, b, c, one, zero, **kwargs)
        np.testing.assert_allclose(c, ref, rtol=0, atol=tol)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)                      # stored transposed
    c = np.full((m, n), np.nan, dtype)
    _numba_gemm(at, bt, c, one, zero, trans_a=True, trans_b=True)
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol)
    ct = np.full((n, m), np.nan, dtype)                                                 # C^T, the backward's
    _numba_gemm(a, bt, ct, one, zero, trans_b=True, c_transposed=True)
    np.testing.assert_allclose(ct, ref.T, rtol=0, atol=tol)
    c = np.ones((m, n), dtype)
    _numba_gemm(a, b, c, dtype(2), dtype(0.5))                   # c = 2 a b + 0.5 c
    np.testing.assert_allclose(c, 2 * ref + 0.5, rtol=0, atol=2 * tol)


@numba_only
def test_numba_gemm_writes_into_its_columns_only():
    """c a block of columns of a wider array (ldc > n, as the fused step's buffers): nothing else moves."""
    from fastnn.backends.numba.gemm import gemm

    a, b = _inputs(20, 30, 40, np.float32)
    big = np.full((20, 50), 7.0, np.float32)
    gemm(False, False, 20, 40, 30, np.float32(1), a.reshape(-1), 30, b.reshape(-1), 40, np.float32(0),
         big.reshape(-1)[5:], 50, 1)
    np.testing.assert_allclose(big[:, 5:45], a.astype(np.float64) @ b, atol=1e-4)
    assert (big[:, :5] == 7).all() and (big[:, 45:] == 7).all()


@cython_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("threads", [1, 2])
def test_cython_gemm_matches_float64(shape, dtype, threads):
    from fastnn.backends.cython import kernels

    m, k, n = shape
    a, b = _inputs(m, k, n, dtype)
    c = np.full((m, n), np.nan, dtype)                       # beta == 0 never reads c
    kernels.gemm(a, b, c, threads)
    ref = a.astype(np.float64) @ b
    tol = _tol(dtype, k) * np.abs(ref).max(initial=1)
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)                      # stored transposed
    c = np.full((m, n), np.nan, dtype)
    kernels.gemm(at, bt, c, threads, trans_a=True, trans_b=True)                       # A read in place, transposed
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol)
    ct = np.full((n, m), np.nan, dtype)                      # C^T, the backward's (a full 8 x 32 tile: permuted)
    kernels.gemm(a, bt, ct, threads, trans_b=True, out_transposed=True)
    np.testing.assert_allclose(ct, ref.T, rtol=0, atol=tol)


@cython_only
def test_cython_gemm_extreme_values_propagate():
    """inf and NaN in the inputs reach the outputs they touch, as in a plain loop (no fast-math)."""
    from fastnn.backends.cython import kernels

    a, b = _inputs(9, 40, 33, np.float32)
    a[2, 3] = np.inf
    b[5, 7] = np.nan
    c = np.zeros((9, 33), np.float32)
    kernels.gemm(a, b, c, 1)
    with np.errstate(invalid="ignore"):
        ref = a.astype(np.float64) @ b
    np.testing.assert_array_equal(np.isnan(c), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(ref))


ISA_SCRIPT = """
import numpy as np
from fastnn.backends.cython import kernels
print(kernels.gemm_isa())
rng = np.random.default_rng(1)
for m, k, n in [(37, 71, 53), (130, 1030, 70), (1, 3, 1)]:
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((m, k)).astype(dtype); b = rng.standard_normal((k, n)).astype(dtype)
        ref = a.astype(np.float64) @ b
        at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
        for flags in ({}, {"trans_a": True, "trans_b": True}, {"trans_b": True, "out_transposed": True}):
            c = np.full((n, m) if flags.get("out_transposed") else (m, n), np.nan, dtype)
            kernels.gemm(at if flags.get("trans_a") else a, bt if flags.get("trans_b") else b, c, 2, **flags)
            got = c.T if flags.get("out_transposed") else c
            assert np.abs(got - ref).max() <= (1e-4 if dtype == np.float32 else 1e-11) * np.abs(ref).max(), flags
print("ok")
"""


@cython_only
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_cython_gemm_narrower_microkernels(isa):
    """FASTNN_GEMM_ISA=avx2|generic runs the narrower micro-kernels, which must agree too (on a
    CPU without AVX2 the avx2 request falls back to generic)."""
    env = {**os.environ, "FASTNN_GEMM_ISA": isa}
    out = subprocess.run([sys.executable, "-c", ISA_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    chosen, status = out.stdout.split()
    assert status == "ok" and chosen in (isa, "generic")


@pytest.mark.parametrize("backend", [b for b in ("numba", "cython") if b in available_backends()])
def test_matmul_on_dense_inputs_matches_torch(backend):
    """The interface's matmul on a dense input goes to the packed GEMM; torch as a second oracle."""
    torch = pytest.importorskip("torch", reason="torch not installed: pip install -e '.[torch]'")
    from fastnn.backends import get_backend

    a, b = _inputs(70, 300, 90, np.float32, seed=3)
    out = get_backend(backend).matmul(a, b)
    expected = (torch.from_numpy(a).double() @ torch.from_numpy(b).double()).numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", [b for b in ("numba", "cython") if b in available_backends()])
def test_gemm_refuses_shapes_that_do_not_fit(backend):
    """The compiled entry points check the sizes their loops rely on, once per call."""
    a, b = _inputs(4, 5, 6, np.float32)
    if backend == "numba":
        from fastnn.backends.numba.gemm import gemm, gemm_parallel

        one, zero = np.float32(1), np.float32(0)
        for run in (gemm, lambda *args: gemm_parallel(*args, 2)):
            with pytest.raises(ValueError, match="smaller"):           # c holds 4 x 5, not 4 x 6
                run(False, False, 4, 6, 5, one, a.reshape(-1), 5, b.reshape(-1), 6, zero, np.zeros(20, np.float32),
                    6, 1)
            with pytest.raises(ValueError, match="smaller"):           # b read with a stride past its end
                run(False, False, 4, 6, 5, one, a.reshape(-1), 5, b.reshape(-1), 7, zero, np.zeros(24, np.float32),
                    6, 1)
            with pytest.raises(ValueError, match="negative"):
                run(False, False, 4, -6, 5, one, a.reshape(-1), 5, b.reshape(-1), 6, zero, np.zeros(24, np.float32),
                    6, 1)
        return
    from fastnn.backends.cython import kernels

    with pytest.raises(ValueError, match="shapes"):
        kernels.gemm(a, b, np.zeros((4, 7), np.float32), 1)
    with pytest.raises(ValueError, match="shapes"):
        kernels.gemm(a, np.zeros((4, 6), np.float32), np.zeros((4, 6), np.float32), 1)
    with pytest.raises(ValueError, match="shapes"):                    # out stored (n, m) = (6, 4), not (4, 6)
        kernels.gemm(a, b, np.zeros((4, 6), np.float32), 1, out_transposed=True)
    with pytest.raises(ValueError, match="shapes"):                    # a stored (k, m) = (5, 4) when transposed
        kernels.gemm(a, b, np.zeros((4, 6), np.float32), 1, trans_a=True)


class _Subclass(np.ndarray):
    """An ndarray subclass: the compiled dense entry leaves it to the checked path."""


@pytest.mark.parametrize("backend", [b for b in ("numba", "cython") if b in available_backends()])
def test_compiled_dense_entry_takes_only_what_it_can(backend):
    """matmul's compiled entry (``dense_matmul``: no Python checks) runs the usual call, dense
    C-contiguous native arrays of one dtype, and leaves every other to the checked path: the same
    products as the packed GEMM called directly, the same errors as before it."""
    from fastnn.backends import get_backend

    mm = get_backend(backend).matmul
    a, b = _inputs(37, 71, 53, np.float32, seed=5)
    expected = a.astype(np.float64) @ b
    direct = np.zeros((37, 53), np.float32)
    if backend == "cython":
        from fastnn.backends.cython import kernels

        kernels.gemm(a, b, direct, 1)
        assert kernels.dense_matmul(a, b, 32, 1 << 40, lambda: 1) is not None
        assert kernels.dense_matmul(a, b, 72, 1 << 40, lambda: 1) is None         # k < min_k: the row kernel's
        assert kernels.dense_matmul(np.zeros_like(a), b, 32, 1 << 40, lambda: 1) is None     # mostly zeros
        assert kernels.dense_matmul(a, b[:70], 32, 1 << 40, lambda: 1) is None    # shapes disagree
        assert kernels.dense_matmul(a, b.astype(np.float64), 32, 1 << 40, lambda: 1) is None
        assert kernels.dense_matmul(a.view(_Subclass), b, 32, 1 << 40, lambda: 1) is None
    else:
        from fastnn.backends.numba.gemm import gemm
        from fastnn.backends.numba.kernels import dense_matmul

        gemm(False, False, 37, 53, 71, np.float32(1), a.reshape(-1), 71, b.reshape(-1), 53, np.float32(0),
             direct.reshape(-1), 53, 1)
        out = np.zeros((37, 53), np.float32)
        assert dense_matmul(a, b, out, 32, 1 << 40)
        np.testing.assert_array_equal(out, direct)
        assert not dense_matmul(a, b, out, 72, 1 << 40)
        assert not dense_matmul(a, b, out, 32, 100)                               # big: gemm_parallel's
        assert not dense_matmul(a, b[:70], out, 32, 1 << 40)
        assert not dense_matmul(a, b, np.zeros((37, 52), np.float32), 32, 1 << 40)   # out not (m, n)
    np.testing.assert_array_equal(mm(a, b), direct)                               # the same bits
    others = [(np.asfortranarray(a), b), (a, b.copy(order="F")), (a.view(_Subclass), b),
              (np.ascontiguousarray(a[::-1])[::-1], b), (a.tolist(), b.astype(np.float64))]   # a list
    for x, y in others:
        np.testing.assert_allclose(mm(x, y), expected, rtol=0, atol=_tol(np.float32, 71))
    with pytest.raises(ValueError, match="shape mismatch"):
        mm(a, b[:70])
    with pytest.raises(TypeError, match="share a dtype"):
        mm(a, b.astype(np.float64))
    with pytest.raises(ValueError, match="2-D"):
        mm(a[0], b)
    with pytest.raises(TypeError, match="float32 or float64"):                  # byte-swapped: as before
        mm(a.astype(">f4"), b)
    assert mm(a[:0], b).shape == (0, 53) and mm(a[:, :0], b[:0]).sum() == 0


@numba_only
def test_numba_gemm_refuses_strided_arrays():
    """The C-callable GEMM reads a, b and c as contiguous memory: a strided 1-D view fails typing."""
    from numba.core.errors import TypingError

    from fastnn.backends.numba.gemm import gemm

    a, b = _inputs(4, 5, 6, np.float32)
    one, zero = np.float32(1), np.float32(0)
    with pytest.raises(TypingError):
        gemm(False, False, 4, 6, 5, one, np.repeat(a.reshape(-1), 2)[::2], 5, b.reshape(-1), 6, zero,
             np.zeros(24, np.float32), 6, 1)


_CACHED_GEMM = r"""
import sys
import numpy as np
import fastnn.backends.numba.gemm
module = sys.modules["fastnn.backends.numba.gemm"]
print("registered", sorted(module._C_GEMMS))
module.use_dtype("float32")
a = np.arange(6, dtype=np.float32)
c = np.zeros(4, np.float32)
module.gemm(False, False, 2, 2, 3, np.float32(1), a, 3, a, 2, np.float32(0), c, 2, 1)
print("c", c.tolist())
"""


@numba_only
def test_numba_gemm_symbol_comes_from_the_cache(tmp_path):
    """A second process registers the GEMM it finds in Numba's cache at import, compiling nothing,
    so the cached callers that name its symbol link (a first process compiled it)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _CACHED_GEMM], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        assert "c [10.0, 13.0, 28.0, 40.0]" in run.stdout         # [[0 1 2] [3 4 5]] @ [[0 1] [2 3] [4 5]]
    assert "registered []" in runs[0].stdout
    assert "registered ['float32']" in runs[1].stdout
