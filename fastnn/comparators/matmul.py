"""The BLAS libraries fastnn's GEMM is measured against, each as a float32 ``(a, b) -> a @ b``:
numpy (its OpenBLAS), torch, JAX (XLA, ``jit``) and ONNX Runtime (MLAS, a one-node MatMul model).

``matmul_comparators(threads)`` returns those installed here; ``benchmarks/test_gemm.py`` times
them beside fastnn's kernels and ``fastnn.speed.machine.measure_sgemm_peaks`` takes their peaks.
Each returns a NumPy array (JAX's result is waited for), so a caller can validate before timing.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _onnxruntime(threads: int) -> Callable:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    sessions = {}

    def session_for(k: int):
        if k not in sessions:
            graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm",
                                      [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k]),
                                       helper.make_tensor_value_info("B", TensorProto.FLOAT, [k, "n"])],
                                      [helper.make_tensor_value_info("C", TensorProto.FLOAT, ["m", "n"])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = 8                 # what every onnxruntime since 1.10 reads (onnx may write newer)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            sessions[k] = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return sessions[k]

    def matmul(a, b):
        return session_for(a.shape[1]).run(None, {"A": a, "B": b})[0]
    return matmul


def _torch(threads: int) -> Callable:
    import torch

    torch.set_num_threads(threads)

    def matmul(a, b):
        return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()
    return matmul


def _jax(threads: int) -> Callable:
    import jax
    import jax.numpy as jnp

    jitted = jax.jit(lambda x, y: x @ y)

    def matmul(a, b):
        return np.asarray(jitted(jnp.asarray(a), jnp.asarray(b)).block_until_ready())
    return matmul


def matmul_comparators(threads: int) -> dict[str, Callable]:
    """{name: float32 matmul} for numpy and each of torch, jax, onnxruntime that imports here."""
    found = {"numpy": np.matmul}
    for name, make in (("torch", _torch), ("jax", _jax), ("onnxruntime", _onnxruntime)):
        try:
            found[name] = make(threads)
        except ImportError:
            pass
    return found
