"""``fastnn COMMAND ...`` (the console script) and ``python -m fastnn COMMAND ...``: every command of
the package, each the same as ``python -m fastnn.<command> ...``; without a command, the list."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "train the MLP on MNIST or Fashion-MNIST with any backend",
    "evaluate": "test-set metrics and figures of a trained model (default: the pretrained one)",
    "predict": "classify your own images (files or folders; default model: the pretrained one)",
    "pretrained": "list the models that ship with fastnn, or package a training run as one",
    "demo": "draw a digit with the mouse and watch the network read it (a window, or --web: a page)",
    "export": "write a trained model as an ONNX file",
    "experiments": "grids of training runs over several seeds, with tables and figures",
    "profile": "where one training epoch spends its time, per backend",
    "scaling": "epoch time against batch size and hidden width",
    "benchmarks_report": "figures and ceilings from a pytest-benchmark JSON",
    "autograd.train": "train an MLP of scalar autograd Values (backprop one number at a time)",
}


def usage() -> str:
    lines = ["usage: fastnn COMMAND [OPTIONS]   (or python -m fastnn COMMAND, or python -m fastnn.COMMAND)",
             "       fastnn COMMAND --help       the command's options", "", "commands:"]
    lines += [f"  {name:<18s} {what}" for name, what in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run ``argv[0]``'s ``main(argv[1:])``; print the list for no command or -h/--help. An unknown
    command is one line on stderr with status 2."""
    from fastnn.common.cli import run_main

    return run_main(_main, sys.argv[1:] if argv is None else list(argv))


def _main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; the commands: {', '.join(COMMANDS)} (fastnn --help)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"fastnn.{name}")
    if not hasattr(module, "main"):                  # a package: its __main__ is the command
        module = importlib.import_module(f"fastnn.{name}.__main__")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
