"""``python -m fastnn.export MODEL --onnx OUT``: a trained model as a standard ONNX file.

The graph is the network's forward pass in inference mode, written with the ``onnx`` package
(an optional extra: ``pip install -e ".[onnx]"`` in the project folder):

    input  "pixels"  float (N, D), values in [0, 1] as fastnn.data.datasets.to_float makes them
    for each layer l:  MatMul(W_l (n_in, n_out)) -> Add(b_l) -> Relu | Sigmoid | Tanh (hidden layers)
    output "logits"  float (N, C)
    output "probs"   float (N, C) = Softmax(logits, axis=1)
    output "labels"  int64 (N,)   = ArgMax(logits, axis=1): the first maximum, as predict

``to_onnx_bytes(model, outputs=...)`` writes a subset: ``("labels",)`` is the graph of
``predict`` alone (MatMul/Add/activation/ArgMax, no Softmax), the benchmarks' comparator.

Weights are stored as initializers in the model's dtype (float32 or float64); dropout is
absent (inference). Class names, the architecture and the activation go into the model's
metadata (the class names as a JSON list of strings). IR version 8 and opset 17: ONNX Runtime 1.10 and later read them.
ONNX's Sigmoid and
Tanh are the standard functions, as fastnn's; its Softmax subtracts the row maximum, as
fastnn's does, so the outputs agree to float rounding (tests/model/test_onnx.py runs the file in
ONNX Runtime on real test images).
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
