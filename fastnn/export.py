"""``python -m fastnn.export MODEL --onnx OUT``: a trained model as a standard ONNX file.

Arguments for one library call, ``fastnn.model.onnx.export_onnx``: the module ``fastnn.model.onnx`` says what
it does and writes; ``python -m fastnn.export --help`` lists the options.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastnn.common.cli import HelpFormatter, regular_file, run_main
from fastnn.common.errors import UserError
from fastnn.model.onnx import export_onnx


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.export",
        description="Export a trained fastnn model (.npz from python -m fastnn.train) as an ONNX file: "
                    "input 'pixels' (N, 784) in [0, 1], outputs 'logits' and 'probs' (N, classes) and 'labels' (N,). "
                    "Needs the "
                    "onnx package.",
        formatter_class=HelpFormatter)
    p.add_argument("model", help="the model file, e.g. runs/<run>/best_model.npz")
    p.add_argument("--onnx", required=True, metavar="OUT", default=argparse.SUPPRESS,
                   help="the ONNX file to write (e.g. model.onnx); written atomically")
    return p


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    from fastnn.model.network import NeuralNetwork

    args = build_parser().parse_args(argv)
    out = Path(args.onnx)
    if out.is_dir():
        raise UserError(f"--onnx {out} is a folder; give a file name such as {out / 'model.onnx'}")
    try:
        model = NeuralNetwork.load(regular_file(args.model, "model file"))
    except UserError as exc:
        raise UserError(f"{exc}; train one with python -m fastnn.train") from None
    try:
        path = export_onnx(model, out)
    except (ValueError, ImportError) as exc:            # an activation or dtype ONNX lacks; onnx missing
        raise UserError(str(exc)) from None
    print(f"wrote {path} ({path.stat().st_size:,} bytes): {'-'.join(map(str, model.layer_sizes))} "
          f"{model.activation}, inputs 'pixels' (N, {model.layer_sizes[0]}) in [0, 1], "
          f"outputs 'logits', 'probs', 'labels'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
