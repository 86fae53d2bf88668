"""Numba's on-disk cache filled by several processes at once (``fastnn.backends.numba.cache_lock``).

Each worker's reads of the cache index are slowed by 0.2 s (a slow filesystem): without the lock
the four saves then overlap every time, and at least two signatures share a data file.

Oracle: the function's own definition (each signature's result), and Numba's cache statistics in
a fresh process: every signature the workers saved is loaded from the cache, none compiled again.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from fastnn.backends import available_backends

pytestmark = pytest.mark.skipif("numba" not in available_backends(), reason="numba unavailable")

MODULE = """
from numba import njit


@njit(cache=True)
def scaled_sum(x, scale):
    total = x[0] * scale
    for i in range(1, x.shape[0]):
        total += x[i] * scale
    return total
"""
# one signature per worker: the array's dtype and the scalar's type
KINDS = {"int64": ("np.arange(5, dtype=np.int64)", "3"), "float64": ("np.arange(5.0)", "0.5"),
         "float32": ("np.arange(5, dtype=np.float32)", "np.float32(2)"),
         "complex128": ("np.arange(5) * 1j", "2.0")}
EXPECTED = {"int64": "30", "float64": "5.0", "float32": "20.0", "complex128": "20j"}

WORKER = """
import os, sys, time
sys.path.insert(0, {workdir!r})
import fastnn.backends.numba        # installs the lock
import numpy as np
import racy
from numba.core import caching

load_index = caching.IndexDataCacheFile._load_index


def slow_load_index(self):           # a slow filesystem: the race's window, 0.2 s wide
    index = load_index(self)
    time.sleep(0.2)
    return index


caching.IndexDataCacheFile._load_index = slow_load_index
x, scale = {x}, {scale}
open({ready!r}, "w").close()
while not os.path.exists({go!r}):
    time.sleep(0.0005)
print(racy.scaled_sum(x, scale))
"""


def test_the_lock_is_installed():
    from fastnn.backends.numba import cache_lock

    assert cache_lock.installed()
    cache_lock.install()                 # a second call wraps nothing twice
    from numba.core.caching import IndexDataCacheFile

    assert not getattr(IndexDataCacheFile.save.__wrapped__, "fastnn_locked", False)


def test_workers_saving_different_signatures_at_once_each_keep_their_own(tmp_path):
    (tmp_path / "racy.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    workers = {}
    for kind, (x, scale) in KINDS.items():
        code = WORKER.format(workdir=str(tmp_path), x=x, scale=scale, ready=str(tmp_path / f"{kind}.ready"),
                             go=str(tmp_path / "go"))
        workers[kind] = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"{kind}.ready").exists() for kind in KINDS):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers.values()), \
            {k: w.communicate()[1][-2000:] for k, w in workers.items() if w.poll() is not None}
        time.sleep(0.01)
    (tmp_path / "go").touch()                                        # all compile and save at once
    for kind, worker in workers.items():
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0 and out.strip() == EXPECTED[kind], (kind, out, err[-2000:])
    saved = sorted(p.name for p in (tmp_path / "__pycache__").glob("racy.scaled_sum-*.nbc"))
    assert len(saved) == len(KINDS), saved

    # a fresh process loads every signature from the cache, and each runs its own code
    calls = "".join(f"print({kind!r}, racy.scaled_sum({x}, {scale}))\n" for kind, (x, scale) in KINDS.items())
    check = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import fastnn.backends.numba
        import numpy as np
        import racy
    """) + calls + "print('compiled', sum(racy.scaled_sum.stats.cache_misses.values()))\n"
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert {kind: lines[kind] for kind in KINDS} == EXPECTED and lines["compiled"] == "0", done.stdout
