"""``python -m fastnn.profile`` on a small slice of real MNIST: the report's sections and files."""
from __future__ import annotations

import pstats

import pytest

from fastnn import profile as profile_mod
from fastnn.backends import available_backends
from fastnn.backends.timing import PhaseTimer, TimedBackend, phase

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", [b for b in ("numpy", "numba") if b in available_backends()])
def test_profile_writes_report_stats_and_plot(tmp_path, mnist_dir, backend):
    code = profile_mod.main(["--backend", backend, "--limit", "640", "--data-dir", str(mnist_dir),
                             "--out-dir", str(tmp_path / "profiles"), "--plots-dir", str(tmp_path / "plots")])
    assert code == 0
    text = (tmp_path / "profiles" / f"{backend}.txt").read_text()
    assert f"--backend {backend}" in text.splitlines()[2]                      # the command that made it
    for section in ("machine:", "AVX", "peak resident memory", "total:", "time by phase", "cProfile", "by own time"):
        assert section in text, section
    if backend == "numba":                       # the fused kernels' own timers, phase by phase
        for section in ("layer 0 forward (sparse input", "layer 1 forward (GEMM)", "softmax cross-entropy",
                        "layer 2 backward to layer 1", "layer 0 weight gradient (CSC gather) + update",
                        "waiting at the end of a phase", "python between the compiled calls"):
            assert section in text, section
        rows = [line for line in text.split("time by phase")[1].split("cProfile")[0].splitlines() if " s " in line]
        shares = [float(line.rsplit("%", 1)[0].split()[-1]) for line in rows]
        assert 99 <= sum(shares) <= 101.5                                         # the phases add up to the total
    else:
        for section in ("forward", "backward", "optimizer", "kernel matmul"):
            assert section in text, section
    stats = pstats.Stats(str(tmp_path / "profiles" / f"{backend}.prof"))
    assert stats.total_calls > 0
    assert (tmp_path / "plots" / f"profile_{backend}.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_takes_the_hidden_layers(tmp_path, mnist_dir):
    """--hidden sets the network, as in train (the wide network's profile in REPORT.md)."""
    backend = "cython" if "cython" in available_backends() else "numpy"
    code = profile_mod.main(["--backend", backend, "--hidden", "32", "16", "8", "--limit", "256", "--data-dir",
                             str(mnist_dir), "--out-dir", str(tmp_path / "p"), "--plots-dir", str(tmp_path / "p")])
    assert code == 0
    assert "layers 784-32-16-8-10" in (tmp_path / "p" / f"{backend}.txt").read_text()


@pytest.mark.parametrize("backend", [b for b in ("numba", "cython") if b in available_backends()])
def test_profile_of_fewer_samples_than_a_warm_up_batch(tmp_path, mnist_dir, backend):
    """--limit below 256 once made the warm-up read past the training set in compiled code."""
    code = profile_mod.main(["--backend", backend, "--limit", "100", "--data-dir", str(mnist_dir),
                             "--out-dir", str(tmp_path / "profiles"), "--plots-dir", str(tmp_path / "plots")])
    assert code == 0 and (tmp_path / "profiles" / f"{backend}.txt").exists()


def test_phase_timer_and_timed_backend():
    import numpy as np

    from fastnn.backends import get_backend

    timer = PhaseTimer()
    with timer.phase("forward"):
        kernels = TimedBackend(get_backend("numpy"), timer)
        out = kernels.matmul(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    assert out.shape == (2, 4) and kernels.NAME == "numpy"
    assert timer.calls["forward"] == 1 and timer.calls["kernel matmul"] == 1
    assert timer.seconds["forward"] >= timer.seconds["kernel matmul"] > 0
    with phase(None, "nothing"):                       # no timer: a no-op
        pass


def test_profile_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        profile_mod.main(["--backend", "numpy", "--epochs", "0"])
    assert "--epochs" in capsys.readouterr().err
