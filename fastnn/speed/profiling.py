"""Where one epoch of training spends its time: ``profile`` behind ``python -m fastnn.profile``.

Writes ``<backend>.txt`` (a readable report) and ``<backend>.prof`` (cProfile stats:
``python -m pstats`` or ``snakeviz`` open it) into ``--out-dir``, and ``profile_<backend>.png``
(the phase breakdown) into ``--plots-dir``; both default to a new folder under ``runs/`` (the
committed ones: ``--out-dir profiles --plots-dir plots``). Three passes over the same data, each from the same initial
weights:

1. timed: the trainer the main job uses (fused path for numba/cython, ``nn.Module`` for torch,
   kernel by kernel otherwise) with its phase timers on. The fused kernels time themselves
   from the inside (``FusedTrainer.profile``): layer-0 sparse forward, each dense layer's
   forward and backward, softmax cross-entropy, each layer's weight gradient with its
   optimizer update, the wait at the end of each phase (for the other threads), the Python between calls;
2. for torch, fastnn's kernel-by-kernel path on the torch kernels, timed by phase and by
   kernel, since autograd hides its kernels from the timers;
3. under cProfile (which slows Python-heavy code; its times are for ranking functions only).

The report names the machine (CPU, ISA, BLAS kernels, versions) and the peak resident memory.
"""
from __future__ import annotations

import cProfile
import io
import marshal
import pstats
import sys
import time
from pathlib import Path

import numpy as np

from fastnn.backends import get_backend
from fastnn.backends.timing import PhaseTimer, TimedBackend
from fastnn.common.io import atomic_write
from fastnn.data.datasets import load_dataset
from fastnn.model.network import NeuralNetwork
from fastnn.speed import machine
from fastnn.training.config import TrainConfig
from fastnn.training.factory import make_trainer
from fastnn.training.fused import FusedTrainer
from fastnn.training.optim import make_optimizer
from fastnn.training.trainers import KernelTrainer, warm_up

PHASES = ("data", "forward", "loss", "backward", "optimizer")
REFERENCE_DEFAULT_LIMIT = 1000   # a full epoch of Python loops would take about 15 minutes


def run_epochs(trainer, n: int, epochs: int, batch_size: int, seed: int) -> float:
    """Train ``epochs`` epochs with ``trainer.run_epoch``, as the training command does; return seconds."""
    rng = np.random.default_rng([seed, 1])
    t0 = time.perf_counter()
    for _ in range(epochs):
        trainer.run_epoch(rng.permutation(n), batch_size)
    return time.perf_counter() - t0


def fused_phase_rows(trainer, total: float) -> list[tuple[str, float]]:
    """(phase, seconds) from the fused kernels' own timers (mean over threads), plus the time the
    threads wait at the end of each phase (for the other threads) and the Python between calls."""
    seconds = trainer.phase_seconds()
    walls = {k: v for k, v in seconds.items() if k.startswith("wall: ")}
    rows = [(k, v) for k, v in seconds.items() if not k.startswith("wall: ")]
    busy = sum(v for _, v in rows)
    wall = sum(walls.values())
    rows.append(("waiting at the end of a phase (imbalance, barriers)", max(0.0, wall - busy)))
    rows.append(("python between the compiled calls (dropout masks, bookkeeping)", max(0.0, total - wall)))
    return rows


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (``getrusage``; Linux reports KiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2 ** 20


def _fresh(cfg: TrainConfig, layer_sizes, train_set, fused: bool | None = None):
    model = NeuralNetwork(layer_sizes, backend=cfg.backend, seed=cfg.seed, dtype=np.dtype(cfg.dtype))
    optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    if fused is False:
        return model, KernelTrainer(model, optimizer, train_set)
    return model, make_trainer(model, optimizer, train_set, seed=cfg.seed, log=lambda *a: None)


def timed_kernel_path(cfg, layer_sizes, train_set, epochs) -> tuple[float, PhaseTimer]:
    """One kernel-by-kernel pass with phase and kernel timers on: (seconds, timer)."""
    model, trainer = _fresh(cfg, layer_sizes, train_set, fused=False)
    timer = PhaseTimer()
    model.timer = trainer.timer = timer
    model.backend = TimedBackend(model.backend, timer)
    seconds = run_epochs(trainer, len(train_set), epochs, cfg.batch_size, cfg.seed)
    return seconds, timer


def _phase_rows(timer: PhaseTimer, total: float) -> list[tuple[str, float]]:
    """(phase, seconds) for the top-level phases plus Python overhead (the rest of the total)."""
    rows = [(p, timer.seconds[p]) for p in PHASES if p in timer.seconds]
    rows.append(("python overhead (loop outside the phases)", max(0.0, total - sum(s for _, s in rows))))
    return rows


def _kernel_rows(timer: PhaseTimer) -> list[tuple[str, float]]:
    """(kernel, seconds), largest first, plus the rest of forward/loss/backward: the Python between kernels."""
    rows = sorted(((k, s) for k, s in timer.seconds.items() if k.startswith("kernel ")), key=lambda r: -r[1])
    inside = sum(timer.seconds.get(p, 0.0) for p in ("forward", "loss", "backward"))
    if rows and inside:
        rows.append(("python between kernels (checks, bias adds, sums)", max(0.0, inside - sum(s for _, s in rows))))
    return rows


def _table(rows, total: float, calls: dict | None = None) -> str:
    lines = []
    for name, sec in rows:
        extra = ""
        if calls and calls.get(name):
            extra = f"  {calls[name]:8d} calls  {1e6 * sec / calls[name]:10.1f} us/call"
        lines.append(f"  {name:<66s} {sec:9.3f} s  {100 * sec / total:6.1f} %{extra}")
    return "\n".join(lines)


def _pstats_text(profiler: cProfile.Profile, sort: str, limit: int = 20) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.strip_dirs().sort_stats(sort).print_stats(limit)
    text = buf.getvalue()
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.rstrip()


def plot_phases(rows: list[tuple[str, float]], total: float, path, title: str) -> None:
    from fastnn.common.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    names = [n for n, _ in rows][::-1]
    secs = [s for _, s in rows][::-1]
    bars = ax.barh(names, secs, color="tab:blue")
    for bar, sec in zip(bars, secs):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {sec:.3f} s ({100 * sec / total:.0f}%)",
                va="center", fontsize=9)
    ax.set_xlabel("seconds per epoch")
    ax.set_xlim(0, max(secs) * 1.35 if secs else 1)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def profile(backend: str, dataset: str = "mnist", epochs: int = 1, limit: int | None = None, batch_size: int = 64,
            data_dir=None, out_dir="profiles", plots_dir="plots", seed: int = 0, command: str | None = None,
            log=print, hidden=(128, 64)) -> Path:
    """Profile ``epochs`` epochs of training with ``backend`` on a network with ``hidden`` layers; write
    the report files; return the .txt path."""
    get_backend(backend)
    if limit is None and backend == "reference":
        limit = REFERENCE_DEFAULT_LIMIT
    cfg = TrainConfig(backend=backend, dataset=dataset, batch_size=batch_size, seed=seed, data_dir=data_dir,
                      hidden=list(hidden))
    train_set = load_dataset(dataset, "train", data_dir)
    if limit:
        train_set = train_set.subset(slice(0, limit))
    layer_sizes = [train_set.num_features, *cfg.hidden, train_set.num_classes]
    n = len(train_set)
    out_dir, plots_dir = Path(out_dir), Path(plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 1. the main path, timed by the trainer's own phases (the fused kernels: their own timers)
    model, trainer = _fresh(cfg, layer_sizes, train_set)
    path_name = trainer.description
    fused = isinstance(trainer, FusedTrainer)
    if fused:                                        # compile / load the kernels outside the timing
        warm_up(model, trainer, batch_size)
        trainer.profile = True
    log(f"profiling {backend} ({path_name}) on {n} {dataset} samples, {epochs} epoch(s)")
    timer = PhaseTimer()
    if isinstance(trainer, KernelTrainer):
        model.timer = trainer.timer = timer
        model.backend = TimedBackend(model.backend, timer)
    else:                                            # torch times its phases; the fused kernels ignore it
        trainer.timer = timer
    main_total = run_epochs(trainer, n, epochs, batch_size, seed)
    main_rows = fused_phase_rows(trainer, main_total) if fused else _phase_rows(timer, main_total)
    kernel_rows = _kernel_rows(timer)

    # 2. torch's autograd hides its kernels: time fastnn's kernel path on the torch kernels too
    split = None
    if backend == "torch":
        log("timing the kernel-by-kernel path for the phase and kernel split")
        split_total, split_timer = timed_kernel_path(cfg, layer_sizes, train_set, epochs)
        split = (split_total, split_timer)

    # 3. cProfile of the main path
    log("running under cProfile")
    _, prof_trainer = _fresh(cfg, layer_sizes, train_set)
    profiler = cProfile.Profile()
    profiler.enable()
    run_epochs(prof_trainer, n, epochs, batch_size, seed)
    profiler.disable()
    prof_path = out_dir / f"{backend}.prof"
    profiler.create_stats()
    with atomic_write(prof_path) as f:                   # the format of Profile.dump_stats, written atomically
        f.write(marshal.dumps(profiler.stats))

    # the report
    steps = epochs * -(-n // batch_size)
    lines = [
        f"fastnn profile: backend {backend}, {path_name}",
        "",
        f"command: {command or f'python -m fastnn.profile --backend {backend}'}",
        f"run:     {dataset} train, {n} samples{' (--limit)' if limit else ''}, {epochs} epoch(s), batch {batch_size}, "
        f"{steps} steps, layers {'-'.join(map(str, layer_sizes))}, {cfg.optimizer} lr {cfg.lr} "
        f"weight decay {cfg.weight_decay}, float32, seed {seed}",
        *machine.summary_lines(),
        "",
        f"total: {main_total:.3f} s for {epochs} epoch(s): {1e6 * main_total / (n * epochs):.1f} us per sample, "
        f"{1e3 * main_total / steps:.3f} ms per step; peak resident memory {peak_rss_mb():.0f} MB",
        "",
        (f"time by phase ({path_name}; the fused kernels' own timers, mean of the threads, read only when "
         f"profiling):" if fused else f"time by phase ({path_name}; the trainer's own timers):"),
        _table(main_rows, main_total, timer.calls),
    ]
    if kernel_rows:
        lines += ["", "time by kernel (inside the phases above):", _table(kernel_rows, main_total, timer.calls)]
    if split is not None:
        split_total, split_timer = split
        split_kernels = _kernel_rows(split_timer)
        what = ("fastnn's NeuralNetwork on the torch kernels, kernel by kernel" if backend == "torch" else
                f"kernel by kernel on the {backend} kernels (the --no-fused path)")
        lines += ["", f"the same epoch, {what}: {split_total:.3f} s, {split_total / main_total:.2f} x the main "
                      f"path's time",
                  _table(_phase_rows(split_timer, split_total), split_total, split_timer.calls),
                  "", "  by kernel:", _table(split_kernels, split_total, split_timer.calls)]
    lines += ["", "cProfile of the main path (times inflated by profiling; for ranking only), "
                  "top 20 by cumulative time:",
              _pstats_text(profiler, "cumulative"), "", "top 20 by own time:", _pstats_text(profiler, "tottime"), ""]
    txt_path = out_dir / f"{backend}.txt"
    with atomic_write(txt_path, "w") as f:
        f.write("\n".join(lines))
    plot_phases(main_rows, main_total, plots_dir / f"profile_{backend}.png",
                f"{backend}: one epoch by phase ({path_name}), {n} samples, batch {batch_size}")
    log(f"wrote {txt_path}, {prof_path}, {plots_dir / f'profile_{backend}.png'}")
    return txt_path
