"""Time ``read_number`` per number: MNIST's number reader against the digit model, interleaved.

Contract: reads the first N numbers of ``python -m fastnn.evaluate --numbers``' mnist-composed set
(seed 0) with each model, checks both read most of them right (validate, then time), then times
R rounds in the order A B A B and prints the median milliseconds per number and the machine.

    python benchmarks/read_numbers.py [--numbers 200] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--numbers", type=int, default=200, help="numbers of the mnist-composed set to read (>= 10)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per model, interleaved (>= 1)")
    args = p.parse_args(argv)
    if args.numbers < 10 or args.rounds < 1:
        p.error("--numbers must be >= 10 and --rounds >= 1")

    from fastnn import NeuralNetwork
    from fastnn.data.datasets import load_dataset
    from fastnn.evaluation.numbers import number_sets
    from fastnn.model.numbers import read_number
    from fastnn.speed.machine import summary_lines

    items = number_sets(load_dataset("mnist", "test"), args.numbers, 0)["mnist-composed"]
    models = {"digit model (mnist.npz)": NeuralNetwork.pretrained("mnist"),
              "number reader (mnist-numbers.npz)": NeuralNetwork.pretrained("mnist", variant="numbers")}
    for name, model in models.items():                          # validate (and warm up) before timing
        right = sum(read_number(model, gray).text == truth for gray, truth, _ in items)
        if right < 0.8 * len(items):
            raise SystemExit(f"{name} read only {right} of {len(items)} numbers right: not timing a broken reader")
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for gray, _, _ in items:
                read_number(model, gray)
            times[name].append((time.perf_counter() - start) / len(items) * 1e3)
    print("\n".join(summary_lines()))
    for name, values in times.items():
        print(f"{name}: median {np.median(values):.2f} ms per number ({len(items)} numbers of mnist-composed, "
              f"{args.rounds} rounds interleaved)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
