"""What machine a speed figure was measured on: CPU model, cores, ISA level, the kernels the
BLAS libraries chose, library versions and thread settings; and its ceilings, measured:
fastnn's FMA loop, the best sgemm of every BLAS at hand, copy bandwidth.

Every benchmark summary, profile report and README/REPORT speed table names these, because the
project's machines change between sessions (an AVX2 Zen 3 one time, an AVX-512 EPYC the next)
and a figure is only comparable with others measured side by side on the same one.

OpenBLAS picks its kernels by recognising the CPU at load time; on a CPU it does not know it
falls back to an older kernel family, e.g. Haswell (AVX2) kernels on an AVX-512 EPYC, at about
half the machine's sgemm peak. ``blas_kernel_mismatch()`` says when that has happened;
``OPENBLAS_CORETYPE=SkylakeX`` (set before Python starts) makes OpenBLAS use its AVX-512 kernels.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from fastnn.backends import omp_threads

# OpenBLAS core types by the widest vector ISA their kernels use
_AVX512_CORES = {"skylakex", "cooperlake", "sapphirerapids", "zen4", "zen5"}
_AVX2_CORES = {"haswell", "zen", "skylake", "zen2", "zen3"} | _AVX512_CORES


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """{"cpu": model name, "cores": logical CPUs, "flags": set of /proc/cpuinfo flags}."""
    fields, flags = {}, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:               # a VM may show a generic name ("AMD EPYC"): family/model tell more
        cpu += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return {"cpu": cpu, "cores": os.cpu_count(), "flags": flags}


def isa_level() -> str:
    """The widest x86 vector ISA the CPU reports: "AVX-512", "AVX2", "AVX", "SSE" (or the arch name)."""
    flags = cpu_info()["flags"]
    if not flags:
        return platform.machine()
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return "SSE"


def blas_libraries() -> list[dict]:
    """The BLAS libraries loaded in this process (threadpoolctl): library, version, architecture
    (the kernel family OpenBLAS chose), threads. numpy's and scipy's are loaded first."""
    import scipy.linalg  # noqa: F401 - load scipy's BLAS too
    from threadpoolctl import threadpool_info

    return [{"library": Path(i.get("filepath", "")).name.split("-")[0] or i.get("prefix"),
             "api": i.get("internal_api"), "version": i.get("version"), "architecture": i.get("architecture"),
             "threads": i.get("num_threads")}
            for i in threadpool_info() if i.get("user_api") == "blas"]


def blas_kernel_mismatch() -> str | None:
    """A sentence when OpenBLAS runs kernels below the CPU's ISA (e.g. Haswell on AVX-512), else None."""
    isa = isa_level()
    for lib in blas_libraries():
        arch = (lib.get("architecture") or "").lower()
        if lib.get("api") != "openblas" or not arch:
            continue
        if isa == "AVX-512" and arch not in _AVX512_CORES:
            return (f"OpenBLAS ({lib['library']}) runs its {lib['architecture']} kernels on this AVX-512 CPU: "
                    f"set OPENBLAS_CORETYPE=SkylakeX before starting Python for its AVX-512 kernels")
        if isa == "AVX2" and arch not in _AVX2_CORES:
            return (f"OpenBLAS ({lib['library']}) runs its {lib['architecture']} kernels on this AVX2 CPU: "
                    f"set OPENBLAS_CORETYPE=Haswell before starting Python for its AVX2 kernels")
    return None


def library_versions() -> dict:
    """Versions of the libraries whose speed is compared (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from fastnn import __version__

    versions = {"fastnn": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "scipy", "torch", "jax", "jaxlib", "onnxruntime"):
        try:
            versions[name] = version(name)            # read from the metadata: nothing is imported
        except PackageNotFoundError:
            pass
    return versions


def describe() -> dict:
    """Everything above as one dict (JSON-ready)."""
    info = cpu_info()
    return {"cpu": info["cpu"], "cores": info["cores"], "isa": isa_level(),
            "blas": [f"{b['library']} {b['version']} {b['architecture'] or ''}".strip() for b in blas_libraries()],
            "blas_mismatch": blas_kernel_mismatch(), "versions": library_versions(),
            "threads": {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                                                 "OPENBLAS_CORETYPE")}}


def summary_lines() -> list[str]:
    """Two or three lines naming the machine, for reports and benchmark summaries."""
    d = describe()
    lines = [f"machine: {d['cpu']}, {d['cores']} cores, {d['isa']}; BLAS: {'; '.join(d['blas']) or 'none found'}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in d["versions"].items())
             + "; " + ", ".join(f"{k}={v}" for k, v in d["threads"].items())]
    if d["blas_mismatch"]:
        lines.append(f"note: {d['blas_mismatch']}")
    return lines


# ---------------------------------------------------------------- this machine's ceilings
def _best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_fma_peak(threads: int | None = None, seconds: float = 0.3, attempts: int = 5) -> float | None:
    """GFLOP/s of fastnn's FMA-throughput loop on ``threads`` threads at once, the best of
    ``attempts`` runs of ~``seconds`` each (a ceiling: on a shared machine a run that loses a
    core for a moment measures less, never more), or None without the compiled Cython kernels."""
    try:
        from fastnn.backends.cython import kernels as ck
    except ImportError:
        return None
    threads = threads or omp_threads()
    sec, flops, _ = ck.fma_peak(1_000_000, threads)
    iterations = max(1_000_000, int(1_000_000 * seconds / max(sec, 1e-6)))
    return max(flops / sec / 1e9 for sec, flops, _ in (ck.fma_peak(iterations, threads) for _ in range(attempts)))


def measure_sgemm_peaks(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """{library: GFLOP/s} of a float32 n x n x n GEMM (best of ``repeats``) for each BLAS at hand
    (``fastnn.comparators.matmul``)."""
    from fastnn.comparators.matmul import matmul_comparators

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flop = 2 * n ** 3
    labels = {"numpy": "numpy (OpenBLAS)", "torch": "torch {}", "jax": "JAX {} (XLA)",
              "onnxruntime": "ONNX Runtime {} (MLAS)"}
    peaks = {}
    for name, matmul in matmul_comparators(omp_threads()).items():
        version = "" if name == "numpy" else __import__(name).__version__.split("+")[0]
        matmul(a, b)                                                   # warm-up: JIT, sessions
        peaks[labels[name].format(version)] = flop / _best_time(lambda: matmul(a, b), repeats) / 1e9
    return peaks


CORETYPE_SCRIPT = """
import sys, time, numpy as np
from threadpoolctl import threadpool_info
arch = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"][0]
out = [arch]
for n in (2048, 64):
    a = np.ones((n, 128 if n == 64 else n), np.float32); b = np.ones((a.shape[1], n), np.float32)
    reps = 5 if n > 64 else 20000
    a @ b
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps if n == 64 else 1):
            a @ b
        best = min(best, (time.perf_counter() - t0) / (reps if n == 64 else 1))
    out.append(2 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9)
print(*out)
"""


def coretype_candidates() -> list[str]:
    """OPENBLAS_CORETYPE values worth timing on this CPU (by its ISA)."""
    isa = isa_level()
    if isa == "AVX-512":
        return ["", "Haswell", "SkylakeX", "Zen"]
    if isa == "AVX2":
        return ["", "Haswell", "Zen", "Sandybridge"]
    return [""]


def measure_coretypes() -> list[tuple[str, str, float, float]]:
    """(OPENBLAS_CORETYPE or "(default)", kernels OpenBLAS chose, sgemm 2048^3 GFLOP/s, sgemm
    64x128 @ 128x64 GFLOP/s) for each candidate, each in a fresh process (the variable is read
    when OpenBLAS loads)."""
    rows = []
    for coretype in coretype_candidates():
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
        done = subprocess.run([sys.executable, "-c", CORETYPE_SCRIPT], env=env, capture_output=True, text=True)
        if done.returncode != 0 or not done.stdout.split():
            continue
        arch, big, small = done.stdout.split()
        rows.append((coretype or "(default)", arch, float(big), float(small)))
    return rows


def measure_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best copy bandwidth (bytes read + written) of a large float32 array, GB/s."""
    src = np.ones(megabytes * 2 ** 20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return 2 * src.nbytes / _best_time(lambda: np.copyto(dst, src), repeats) / 1e9


