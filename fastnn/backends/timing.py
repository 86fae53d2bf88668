"""Wall-clock timers for the training phases and kernels, used by ``python -m fastnn.profile``.

Nothing is timed unless a ``PhaseTimer`` is attached: ``phase(None, name)`` returns one shared
no-op context manager, so the trainers pay one attribute check and an empty ``with`` per phase.

    timer = PhaseTimer()
    with timer.phase("forward"):
        ...
    timer.seconds["forward"], timer.calls["forward"]

Phases may nest (kernels run inside forward and backward); ``TimedBackend`` wraps a backend
module so that each kernel call is timed as ``kernel <name>``.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from time import perf_counter

from fastnn.backends import KERNELS

NO_PHASE = contextlib.nullcontext()


class PhaseTimer:
    """Accumulates seconds and call counts per phase name."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def phase(self, name: str) -> "_Phase":
        return _Phase(self, name)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1


class _Phase:
    __slots__ = ("timer", "name", "t0")

    def __init__(self, timer: PhaseTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.t0 = perf_counter()
        return self

    def __exit__(self, *exc):
        self.timer.add(self.name, perf_counter() - self.t0)
        return False


def phase(timer: PhaseTimer | None, name: str):
    """``timer.phase(name)``, or a shared no-op context when ``timer`` is None."""
    return NO_PHASE if timer is None else timer.phase(name)


class TimedBackend:
    """A backend module whose kernels (``fastnn.backends.KERNELS``) are timed as ``kernel <name>``.

    Everything else (``NAME``, ``fused_steps``, ...) passes through unchanged.
    """

    def __init__(self, backend, timer: PhaseTimer):
        self._backend, self._timer = backend, timer
        for name in KERNELS:
            setattr(self, name, self._wrap(name, getattr(backend, name)))

    def _wrap(self, name, fn):
        timer, label = self._timer, f"kernel {name}"

        def timed(*args, **kwargs):
            t0 = perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timer.add(label, perf_counter() - t0)

        timed.__name__ = name
        timed.__doc__ = fn.__doc__
        return timed

    def __getattr__(self, name):
        return getattr(self._backend, name)
