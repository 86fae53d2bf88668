"""One kernel interface, many implementations, registered in one place.

Every backend is a module exposing the functions in ``KERNELS`` with
identical signatures and semantics (see ``reference`` for the specification):

- ``matmul(a, b)``: (m, k) @ (k, n) -> (m, n)
- ``relu(z)``, ``relu_backward(grad_out, z)``
- ``sigmoid(z)``, ``sigmoid_backward(grad_out, out)``; ``tanh(z)``, ``tanh_backward(grad_out, out)``
  (these two take the forward *output*, since their derivatives are cheapest in it)
- ``softmax(logits)``: (N, C) -> probs (N, C)
- ``softmax_cross_entropy(logits, labels)`` -> (mean loss as float, probs (N, C))
- ``softmax_cross_entropy_backward(probs, labels)`` -> (probs - one_hot(labels)) / N

Use ``get_backend(name)`` and ``available_backends()``; the model and the
trainer only ever see the returned module. The compiled backends (``numba/``, ``cython/``, the
same files under the same names) also run whole training steps and whole forward passes: their
``fused_steps`` and ``fused_forward`` take the named groups of ``fused_interface``.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

from fastnn.common.errors import UserError

KERNELS = (
    "matmul",
    "relu", "relu_backward",
    "sigmoid", "sigmoid_backward",
    "tanh", "tanh_backward",
    "softmax",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
)

# name -> (module path, hint shown when it cannot be imported)
_REGISTRY: dict[str, tuple[str, str]] = {
    "reference": ("fastnn.backends.reference", ""),
    "numpy": ("fastnn.backends.numpy_backend", ""),
    "numba": ("fastnn.backends.numba", "Install it with: pip install numba"),
    "cython": ("fastnn.backends.cython", ""),
    "torch": ("fastnn.backends.torch_backend",
              "Install it with: pip install torch==2.13.0 (a local CPU build on this project's machines), "
              "then pip install -e '.[torch]' in the project folder"),
}

_cache: dict[str, ModuleType] = {}


class BackendUnavailable(UserError, ImportError):
    """The named backend exists but cannot run here (a missing optional dependency or build)."""


def omp_threads() -> int:
    """The thread count every parallel part of fastnn uses by default: ``OMP_NUM_THREADS``, else
    every core (the one definition: the fused paths, ONNX Runtime's session, the ceilings)."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))


def backend_names() -> list[str]:
    """Every registered backend name, available here or not."""
    return list(_REGISTRY)


def get_backend(name: str) -> ModuleType:
    """Return the backend module called ``name``.

    Raises:
        ValueError: no backend of that name (the message lists the known ones).
        BackendUnavailable: the backend needs something not installed or built here;
            the message says how to get it.
    """
    if isinstance(name, ModuleType):
        return name
    if name in _cache:
        return _cache[name]
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}")
    module_path, hint = _REGISTRY[name]
    try:
        module = importlib.import_module(module_path)
    except BackendUnavailable:
        raise
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {exc}. {hint}".strip()) from exc
    missing = [k for k in KERNELS if not hasattr(module, k)]
    if missing:  # a programming error in the backend, not a user error
        raise RuntimeError(f"backend {name!r} lacks kernels: {', '.join(missing)}")
    _cache[name] = module
    return module


def available_backends() -> list[str]:
    """Names of the backends that import and run on this machine."""
    names = []
    for name in _REGISTRY:
        try:
            get_backend(name)
        except BackendUnavailable:
            continue
        names.append(name)
    return names
