"""Two checkouts of fastnn side by side: ``python benchmarks/ab_trees.py OLD NEW [--rounds 3]``.

OLD and NEW are source trees (a ``git worktree`` of another commit, and this one), each with its
Cython extensions built in place (``python setup.py build_ext --inplace``). For each backend
(cython, numba) and round, each tree runs in a fresh process, alternating (A B A B), and
measures on real MNIST (``FASTNN_DATA_DIR``):

- one epoch of the fused path: 60,000 samples, batch 64, SGD with momentum, no augmentation
  (a warm-up epoch, then the median of 5);
- the shipped pretrained MNIST model's ``predict``: batch-1 p50 over 20,000 calls, and the
  throughput on the 10,000 test images (median of 30 passes);
- with ``--augment SPEC`` (e.g. ``shift=2``), also the fused epoch with that augmentation
  (``aug_epoch_ms``, the same warm-up and median of 5).

It prints every run and then the medians over the rounds with NEW / OLD ratios. Not a pytest
file: it compares commits, which one benchmark session cannot.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r'''
import json, sys, time
root, backend, augment = sys.argv[1], sys.argv[2], sys.argv[3]
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]   # not the installed tree
sys.path.insert(0, root)
import numpy as np
import fastnn
from fastnn import NeuralNetwork
try:                                     # the layout since issue 22, then the flat one before it
    from fastnn.data.datasets import load_dataset
    from fastnn.training.factory import make_trainer
    from fastnn.training.optim import make_optimizer
except ImportError:
    from fastnn.data import load_dataset
    from fastnn.trainers import make_trainer
    from fastnn.optim import make_optimizer
assert fastnn.__file__.startswith(root), fastnn.__file__
train = load_dataset("mnist", "train")
X = load_dataset("mnist", "test").features()
model = NeuralNetwork([784, 128, 64, 10], backend=backend, seed=0)
trainer = make_trainer(model, make_optimizer("momentum", model, 0.05, 1e-4, 0.9), train, log=lambda *a: None)
rng = np.random.default_rng(0)
trainer.run_epoch(rng.permutation(len(train.labels)), 64)
epochs = []
for _ in range(5):
    t0 = time.perf_counter()
    trainer.run_epoch(rng.permutation(len(train.labels)), 64)
    epochs.append(time.perf_counter() - t0)
aug_epochs = []
if augment:
    from fastnn.data.augment import Augmenter, parse_augment
    model = NeuralNetwork([784, 128, 64, 10], backend=backend, seed=0)
    augmenter = Augmenter(parse_augment(augment), train.images.shape[1:], 0)
    trainer = make_trainer(model, make_optimizer("momentum", model, 0.05, 1e-4, 0.9), train, log=lambda *a: None,
                           augmenter=augmenter)
    trainer.run_epoch(rng.permutation(len(train.labels)), 64)
    for _ in range(5):
        t0 = time.perf_counter()
        trainer.run_epoch(rng.permutation(len(train.labels)), 64)
        aug_epochs.append(time.perf_counter() - t0)
m = NeuralNetwork.pretrained("mnist", backend=backend)
x = X[:1].copy()
assert (m.predict(X) == m.predict(X)).all() and m.predict(x).shape == (1,)
latency = []
for _ in range(20000):
    t0 = time.perf_counter_ns()
    m.predict(x)
    latency.append(time.perf_counter_ns() - t0)
passes = []
for _ in range(30):
    t0 = time.perf_counter()
    m.predict(X)
    passes.append(time.perf_counter() - t0)
result = {"epoch_ms": 1e3 * float(np.median(epochs)), "p50_us": float(np.median(latency)) / 1e3,
          "kimg_per_s": len(X) / float(np.median(passes)) / 1e3}
if aug_epochs:
    result["aug_epoch_ms"] = 1e3 * float(np.median(aug_epochs))
print(json.dumps(result))
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("old", help="the source tree to compare against")
    p.add_argument("new", help="the source tree to measure")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per backend")
    p.add_argument("--backends", nargs="+", default=["cython", "numba"], help="backends to measure")
    p.add_argument("--augment", default="", metavar="SPEC",
                   help="also time the fused epoch with this augmentation, e.g. shift=2 (default: not)")
    args = p.parse_args(argv)
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    runs: dict = {}
    for r in range(args.rounds):
        for backend in args.backends:
            for which, root in trees.items():
                done = subprocess.run([sys.executable, "-c", WORKER, root, backend, args.augment], capture_output=True,
                                      text=True)
                if done.returncode:
                    print(f"{which} {backend}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    return 1
                result = json.loads(done.stdout.splitlines()[-1])
                runs.setdefault((backend, which), []).append(result)
                print(f"round {r + 1} {backend:>6s} {which}: " + "  ".join(f"{k} {v:.3f}" for k, v in result.items()),
                      flush=True)
    print(f"\nmedians over {args.rounds} rounds (new / old):")
    for backend in args.backends:
        for key in runs[backend, "new"][0]:
            old, new = (statistics.median(x[key] for x in runs[backend, w]) for w in ("old", "new"))
            print(f"  {backend:>6s} {key:>10s}  old {old:9.3f}  new {new:9.3f}  ratio {new / old:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
