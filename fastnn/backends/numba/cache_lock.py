"""Numba's on-disk cache, safe when several processes fill it at once.

Contract: once this module is imported (the numba backend's ``__init__`` imports it before any
kernel), every read and every write of an entry of Numba's on-disk cache
holds an inter-process lock (``filelock``) on that function's index file, so a signature never
loads machine code compiled for another. It changes nothing else; where the lock cannot be
taken (a read-only cache folder), Numba runs as it always does.

Why: ``numba.core.caching.IndexDataCacheFile.save`` reads the function's index, takes the first
data file name the index does not use (``f-12.py311.1.nbc``, then ``.2.nbc``, ...), writes the index, then the
data. Two processes saving different signatures of one function at once (a sweep's workers on
float32 and float64, or on different depths; two test workers) pick the same name; the index
one leaves can then point a signature at the other's machine code, and calling it runs the
wrong code: a segmentation fault (seen here under pytest-xdist) or a wrong result. This is
numba issues #4807 and #10128; its developers proposed a file lock. Loads take the lock too,
so no process reads an index entry whose data file is still being written.
"""
from __future__ import annotations

import functools

from filelock import FileLock, Timeout
from numba.core import caching

__all__ = ["LOCK_TIMEOUT_S", "install", "installed"]

LOCK_TIMEOUT_S = 120.0   # a save takes milliseconds; the OS drops the lock of a process that died


def _locked(method):
    """``method`` of an ``IndexDataCacheFile``, run while holding ``<index file>.lock``."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        lock = FileLock(self._index_path + ".lock", timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except (OSError, Timeout):          # no lock here (read-only folder): Numba's own behaviour
            return method(self, *args, **kwargs)
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()
    locked.fastnn_locked = True
    return locked


def install() -> None:
    """Wrap ``IndexDataCacheFile.save`` and ``.load`` in the lock (once; later calls do nothing).

    Raises nothing: a Numba without these methods keeps its own behaviour (``installed()`` says).
    """
    cls = getattr(caching, "IndexDataCacheFile", None)
    if cls is None or not hasattr(cls, "__init__"):
        return
    for name in ("save", "load"):
        method = getattr(cls, name, None)
        if method is not None and not getattr(method, "fastnn_locked", False):
            setattr(cls, name, _locked(method))


def installed() -> bool:
    """Whether Numba's cache saves and loads hold the lock."""
    cls = getattr(caching, "IndexDataCacheFile", None)
    return cls is not None and all(getattr(getattr(cls, name, None), "fastnn_locked", False)
                                   for name in ("save", "load"))


install()
