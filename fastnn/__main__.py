"""``python -m fastnn``: the commands, each run as ``python -m fastnn.<command> --help`` for its options."""
from __future__ import annotations

import sys

COMMANDS = {
    "train": "train the MLP on MNIST or Fashion-MNIST with any backend",
    "evaluate": "test-set metrics and figures of a trained model",
    "predict": "classify your own images (files or folders)",
    "export": "write a trained model as an ONNX file",
    "experiments": "grids of training runs over several seeds, with tables and figures",
    "profile": "where one training epoch spends its time, per backend",
    "scaling": "epoch time against batch size and hidden width",
    "benchmarks_report": "figures and ceilings from a pytest-benchmark JSON",
    "autograd.train": "train an MLP of scalar autograd Values (backprop one number at a time)",
}


def main() -> int:
    print("fastnn commands (python -m fastnn.<command> --help for the options):")
    for name, what in COMMANDS.items():
        print(f"  python -m fastnn.{name:<18s} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
