"""A trained model as a standard ONNX file: ``export_onnx`` behind ``python -m fastnn.export``.

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

import json
from pathlib import Path

import numpy as np

from fastnn.common.io import atomic_write
from fastnn.model.file_format import class_name

__all__ = ["to_onnx_bytes", "export_onnx"]

ONNX_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
OPSET, IR_VERSION = 17, 8


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx package: in the project folder, "
                          "pip install -e \".[onnx]\" (or pip install onnx)") from exc
    return onnx, helper, numpy_helper


OUTPUTS = ("logits", "probs", "labels")


def to_onnx_bytes(model, outputs=OUTPUTS) -> bytes:
    """The serialized ONNX model of ``model`` (a ``NeuralNetwork``) with the graph outputs
    ``outputs`` (a non-empty subset of ``OUTPUTS``); see the module docstring.

    Raises:
        ImportError: the onnx package is not installed (the message says how to get it).
        ValueError: an activation ONNX has no operator for here, a dtype other than float32/64,
            a model with ``input_norm``, or an unknown or empty ``outputs``.
    """
    outputs = tuple(outputs)
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown or not outputs:
        raise ValueError(f"outputs must be a non-empty subset of {', '.join(OUTPUTS)}; got {outputs}")
    onnx, helper, numpy_helper = _onnx()
    if model.activation not in ONNX_OPS:
        raise ValueError(f"activation {model.activation!r} has no ONNX export; one of {', '.join(ONNX_OPS)}")
    if getattr(model, "input_norm", "none") != "none":
        raise ValueError(f"the model normalizes its inputs first (input_norm {model.input_norm!r}), which the ONNX "
                         f"export does not include; export a model trained without --input-norm")
    elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}.get(
        np.dtype(model.dtype))
    if elem is None:
        raise ValueError(f"dtype {model.dtype} has no ONNX export (float32 or float64)")
    nodes, inits = [], []
    x = "pixels"
    for l, (W, b) in enumerate(zip(model.weights, model.biases)):
        inits += [numpy_helper.from_array(np.ascontiguousarray(W, dtype=model.dtype), f"W{l}"),
                  numpy_helper.from_array(np.ascontiguousarray(b, dtype=model.dtype), f"b{l}")]
        nodes += [helper.make_node("MatMul", [x, f"W{l}"], [f"xW{l}"], name=f"matmul{l}"),
                  helper.make_node("Add", [f"xW{l}", f"b{l}"], [f"z{l}" if l < model.num_layers - 1 else "logits"],
                                   name=f"bias{l}")]
        if l < model.num_layers - 1:
            nodes.append(helper.make_node(ONNX_OPS[model.activation], [f"z{l}"], [f"a{l}"], name=f"act{l}"))
            x = f"a{l}"
    if "probs" in outputs:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
    if "labels" in outputs:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0,
                                      select_last_index=0, name="argmax"))
    D, C = model.layer_sizes[0], model.layer_sizes[-1]
    infos = {"logits": helper.make_tensor_value_info("logits", elem, ["N", C]),
             "probs": helper.make_tensor_value_info("probs", elem, ["N", C]),
             "labels": helper.make_tensor_value_info("labels", onnx.TensorProto.INT64, ["N"])}
    graph = helper.make_graph(
        nodes, "fastnn_mlp",
        [helper.make_tensor_value_info("pixels", elem, ["N", D])],
        [infos[o] for o in OUTPUTS if o in outputs],
        initializer=inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="fastnn")
    onnx_model.ir_version = IR_VERSION
    meta = {"layer_sizes": "-".join(map(str, model.layer_sizes)), "activation": model.activation,
            "input": "pixels in [0, 1] (uint8 / 255), flattened row-major"}
    if model.class_names:     # a JSON list: a name holding a newline or a comma stays one name
        meta["class_names"] = json.dumps([class_name(n) for n in model.class_names], ensure_ascii=False)
    helper.set_model_props(onnx_model, meta)
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def export_onnx(model, path) -> Path:
    """Write ``model`` as ONNX to ``path`` atomically; return the path. Raises as ``to_onnx_bytes``."""
    data = to_onnx_bytes(model)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(data)
    return path
