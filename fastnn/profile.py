"""``python -m fastnn.profile --backend NAME``: where one epoch of training spends its time.

Writes ``<backend>.txt`` (a readable report) and ``<backend>.prof`` (cProfile stats:
``python -m pstats`` or ``snakeviz`` open it) into ``--out-dir``, and ``profile_<backend>.png``
(the phase breakdown) into ``--plots-dir``; both default to a new folder under ``runs/`` (the
committed ones: ``--out-dir profiles --plots-dir plots``). Three passes over the same data, each from the same initial
weights:

1. timed: the trainer the main job uses (fused path for numba/cython, ``nn.Module`` for torch,
   kernel by kernel otherwise) with its phase timers on. The fused kernels time themselves
   from the inside (``FusedTrainer.profile``): layer-0 sparse forward, each dense layer's
   forward and backward, softmax cross-entropy, each layer's weight gradient with its
   optimizer update, the wait at the end of the parallel regions, the Python between calls;
2. for torch, fastnn's kernel-by-kernel path on the torch kernels, timed by phase and by
   kernel, since autograd hides its kernels from the timers;
3. under cProfile (which slows Python-heavy code; its times are for ranking functions only).

The report names the machine (CPU, ISA, BLAS kernels, versions) and the peak resident memory.
"""
from __future__ import annotations

import argparse
import os
import sys

from fastnn.backends import backend_names, get_backend
from fastnn.common.cli import (
    HelpFormatter,
    add_backend_option,
    add_data_dir_option,
    int_at_least,
    new_run_folder,
    run_main,
)
from fastnn.data.datasets import DATASETS
from fastnn.speed.profiling import REFERENCE_DEFAULT_LIMIT, profile


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.profile",
        description="Profile one epoch of training with a backend: time by phase (data, forward, loss, backward, "
                    "optimizer, Python overhead) and by kernel, plus cProfile's top functions. Writes "
                    "<backend>.txt, <backend>.prof and profile_<backend>.png into a new folder under runs/ "
                    "(the committed ones: --out-dir profiles --plots-dir plots).",
        formatter_class=HelpFormatter)
    add_backend_option(p, "the backend to profile", backend_names())
    p.add_argument("--dataset", default="mnist", choices=list(DATASETS), help="the training set")
    p.add_argument("--epochs", type=int_at_least(1), default=1, help="epochs to time")
    p.add_argument("--limit", type=int_at_least(1), default=None, metavar="N",
                   help=f"first N training samples (default all; {REFERENCE_DEFAULT_LIMIT} for reference)")
    p.add_argument("--batch-size", type=int_at_least(1), default=64, help="samples per step")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seeds the weights and the batch order")
    add_data_dir_option(p)
    p.add_argument("--out-dir", default=None,
                   help="where the .txt and .prof files go (default: a new folder runs/<time>-profile-<backend>)")
    p.add_argument("--plots-dir", default=None, help="where the phase chart goes (default: --out-dir)")
    return p


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    from fastnn.inference.forward import inference_backend

    args.backend = inference_backend(args.backend)
    get_backend(args.backend)
    args.out_dir = args.out_dir or str(new_run_folder(f"profile-{args.backend}"))
    args.plots_dir = args.plots_dir or args.out_dir
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "FASTNN_DATA_DIR")
                   if k in os.environ)
    args_text = " ".join(sys.argv[1:] if argv is None else argv)
    command = (env + " " if env else "") + "python -m fastnn.profile " + args_text
    profile(args.backend, args.dataset, args.epochs, args.limit, args.batch_size, args.data_dir, args.out_dir,
            args.plots_dir, args.seed, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
