"""Inference per backend, side by side with ONNX Runtime (the usual way to serve a small model on a
CPU): batch-1 latency of ``model.predict`` on real test images (p50 and p99 over ``LATENCY_CALLS``
calls per entry) and throughput on the 10,000 MNIST test images (the best and the median of
``THROUGHPUT_ROUNDS`` passes), each of the shipped pretrained models (MNIST, Fashion-MNIST;
784-128-64-10 ReLU) on its own test set, the same model everywhere.

``onnxruntime``: the model exported by ``fastnn.export`` with the labels output alone
(MatMul/Add/Relu/ArgMax, no Softmax), ``intra_op_num_threads`` = OMP_NUM_THREADS (else the core
count); skipped with the reason where onnx/onnxruntime are not installed (``pip install -e
".[bench]"``). ``openvino``: the same ONNX file compiled by OpenVINO for its CPU device as its
documentation advises ("High-level Performance Hints"): the LATENCY hint and one synchronous request
for batch 1, the THROUGHPUT hint and an ``AsyncInferQueue`` of the device's optimal number of
requests, the batch split between them, for the test set; both with ``INFERENCE_NUM_THREADS`` =
OMP_NUM_THREADS and float32 arithmetic (``INFERENCE_PRECISION_HINT``: on a CPU with bf16
instructions OpenVINO would otherwise compute in bf16, and its labels differed from the others' on
55 of the 10,000 images). numba and cython run their fused forward (one compiled call,
``fastnn.inference.forward``); numpy and torch kernel by kernel; ``cython-int8`` is the opt-in int8
forward (``model.to_int8()``, ``fastnn.inference.int8``: layer 0 in 8-bit integers). Every entry's
labels on the 10,000 images are checked against ONNX Runtime's before anything is timed; the int8
entry's against its own NumPy oracle (``fastnn.inference.int8.reference_logits``), and it may differ
from ONNX Runtime's on at most ``INT8_MAX_CHANGED`` of the images (the count is printed). Entries
run interleaved (A B C ... A B C ...), so that the shared machine's noise falls on all of them
alike, with a ``PAUSE_S`` pause before each entry's turn: thread pools (ONNX Runtime's, OpenMP's,
OpenBLAS's, whose threads spin up to 2^28 cycles, ~0.1 s) keep spinning for a while after their
work, and on 2 cores the spinning threads of one entry would otherwise take the cores from the next
(with a 0.05 s pause numba's throughput measured 220,000 images/s here, 400,000 alone). After the
pause a thread pool's sleeping workers may start late (on the 2-core VM of REPORT.md, milliseconds
late): each entry's passes include that, as a server's first batch after an idle moment would.
The summary prints each as a ratio to ONNX Runtime.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.backends import available_backends
from fastnn.data.datasets import load_dataset
from fastnn.speed.report import inference_group

from .conftest import record_result

LAYERS = [784, 128, 64, 10]
FORWARD_FLOP = 2 * sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:]))   # dense-equivalent, per image


def sparse_flop(X) -> int:
    """The arithmetic a path that skips zero inputs does at least: layer 0 over X's non-zeros, the
    other layers dense (ReLU's zeros, which the fused forward also skips, not counted)."""
    return 2 * (int(np.count_nonzero(X)) * LAYERS[1]
                + len(X) * sum(a * b for a, b in zip(LAYERS[1:-1], LAYERS[2:])))
ENTRIES = ["onnxruntime", "openvino", "numpy", "numba", "cython", "cython-int8", "torch"]
INT8_MAX_CHANGED = 0.002          # the int8 opt-in may change this share of ORT's labels (not more)
MODELS = ["mnist", "fashion-mnist"]               # the shipped pretrained models
LATENCY_ROUNDS, LATENCY_CALLS = 10, 2_000          # per entry: 20,000 timed calls
THROUGHPUT_ROUNDS = 15
PAUSE_S = 0.2                                      # before each entry's turn: the last one's threads go idle


@pytest.fixture(scope="module", params=MODELS)
def test_set(request):
    """(dataset name, its test set): each benchmark runs once per shipped model."""
    try:
        return request.param, load_dataset(request.param, "test")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"real {request.param} unavailable: {exc}")


def ort_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


def onnxruntime_predict(model):
    """ONNX Runtime's ``predict`` for ``model``: X (N, D) float32 -> labels (N,) int64."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install -e '.[bench]'")
    pytest.importorskip("onnx", reason="onnx not installed: pip install -e '.[bench]'")
    from fastnn.model.onnx import to_onnx_bytes

    options = ort.SessionOptions()
    options.intra_op_num_threads = ort_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(to_onnx_bytes(model, outputs=("labels",)), options,
                                   providers=["CPUExecutionProvider"])
    return lambda X: session.run(["labels"], {"pixels": X})[0]


def openvino_predict(model, hint: str):
    """OpenVINO's ``predict`` for ``model`` under a performance ``hint`` ("LATENCY": one synchronous
    request; "THROUGHPUT": the batch split over an AsyncInferQueue): X (N, D) float32 -> labels (N,)."""
    ov = pytest.importorskip("openvino", reason="openvino not installed: pip install -e '.[bench]'")
    pytest.importorskip("onnx", reason="onnx not installed: pip install -e '.[bench]'")
    import tempfile
    from pathlib import Path

    from fastnn.model.onnx import to_onnx_bytes

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:                     # OpenVINO reads an ONNX file
        path = Path(tmp) / "model.onnx"
        path.write_bytes(to_onnx_bytes(model, outputs=("labels",)))
        compiled = core.compile_model(core.read_model(path), "CPU",
                                      {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": ort_threads(),
                                       "INFERENCE_PRECISION_HINT": "f32"})      # not bf16: the others' float32
    output = compiled.output(0)
    if hint == "LATENCY":
        request = compiled.create_infer_request()
        return lambda X: request.infer({0: X})[output]
    queue = ov.AsyncInferQueue(compiled, 0)                          # 0: the device's optimal number of requests
    labels: dict = {}
    queue.set_callback(lambda request, part: labels.__setitem__(part, request.get_output_tensor(0).data.copy()))

    def predict(X):
        labels.clear()
        parts = np.array_split(np.arange(len(X)), len(queue))
        for k, rows in enumerate(parts):
            queue.start_async({0: X[rows[0]:rows[-1] + 1] if len(rows) else X[:0]}, k)
        queue.wait_all()
        return np.concatenate([labels[k] for k in range(len(parts))]).astype(np.int64)

    return predict


def predictors(test_set, hint: str = "LATENCY") -> dict:
    """name -> predict(X) for every entry available here, validated: labels equal to ORT's.
    ``hint``: what OpenVINO is configured for (LATENCY or THROUGHPUT)."""
    dataset, data = test_set
    X = data.features()                                             # (10000, 784) float32
    out = {}
    for name in ENTRIES:
        if name in ("onnxruntime", "openvino"):
            model = NeuralNetwork.pretrained(dataset, backend="numpy")
            try:
                out[name] = onnxruntime_predict(model) if name == "onnxruntime" else openvino_predict(model, hint)
            except pytest.skip.Exception as exc:
                print(f"skipped {name}: {exc}")
        elif name == "cython-int8":
            model = NeuralNetwork.pretrained(dataset, backend="numpy")
            from fastnn.model.int8 import int8_unavailable_reason

            reason = int8_unavailable_reason(model)
            if reason:
                print(f"skipped {name}: {reason}")
                continue
            out[name] = model.to_int8().predict
        elif name in available_backends():
            out[name] = NeuralNetwork.pretrained(dataset, backend=name).predict
        else:
            print(f"skipped {name}: backend unavailable here")
    reference = out["onnxruntime"](X) if "onnxruntime" in out else NeuralNetwork.pretrained(dataset).predict(X)
    for name, predict in out.items():
        labels = predict(X)
        if name == "cython-int8":
            check_int8(predict.__self__, X, labels, reference)
            continue
        assert np.array_equal(labels, reference), f"{name}: labels differ from the reference on " \
                                                  f"{int((labels != reference).sum())} test images"
    return out


def check_int8(model, X, labels, reference) -> None:
    """The int8 entry's labels: those of its NumPy oracle (except where the oracle's two largest
    logits are within 1e-4, a tie that float32 rounding may break either way), and ORT's on all but
    ``INT8_MAX_CHANGED`` of the images."""
    from fastnn.inference.int8 import reference_logits

    oracle = reference_logits(model.layer0, model.biases0, model.weights, model.biases, model.activation, X)
    top2 = np.sort(oracle, axis=1)[:, -2:]
    tie = top2[:, 1] - top2[:, 0] < 1e-4
    wrong = (labels != oracle.argmax(axis=1)) & ~tie
    assert not wrong.any(), f"cython-int8: labels differ from the int8 oracle on {int(wrong.sum())} images"
    changed = int((labels != reference).sum())
    print(f"cython-int8: labels differ from onnxruntime's (float32) on {changed} of {len(X)} images")
    assert changed <= INT8_MAX_CHANGED * len(X), f"cython-int8 changed {changed} labels"


def run_rounds(benchmark, group: str, entries: dict, time_entry, rounds: int) -> dict:
    """Interleaved rounds: each calls ``time_entry(name, predict)`` for every entry in turn after
    a ``PAUSE_S`` pause; one warm-up round first (caches, thread pools), then ``rounds`` timed ones
    (1 when timing is off). Returns {name: [what time_entry returned, per round]}."""
    times = {name: [] for name in entries}

    def one_round():
        for name, predict in entries.items():
            time.sleep(PAUSE_S)
            times[name].append(time_entry(predict))

    one_round()
    for t in times.values():
        t.clear()
    benchmark.group = group + ", interleaved"
    benchmark.pedantic(one_round, rounds=1 if getattr(benchmark, "disabled", False) else rounds, iterations=1)
    return times


def test_latency_one_image(benchmark, test_set):
    """Batch 1 through ``predict``, one image at a time from the test set; every call timed on its
    own (perf_counter_ns), entries interleaved in blocks of ``LATENCY_CALLS`` calls."""
    entries = predictors(test_set)
    X = test_set[1].features()
    group = inference_group("latency", test_set[0])
    rows = [X[i:i + 1] for i in range(LATENCY_CALLS)]              # (1, 784) views, as a caller's

    def block(predict):
        ns = np.empty(len(rows), dtype=np.int64)
        for k, x in enumerate(rows):
            t0 = time.perf_counter_ns()
            predict(x)
            ns[k] = time.perf_counter_ns() - t0
        return ns

    times = run_rounds(benchmark, group, entries, block, LATENCY_ROUNDS)
    rounds = len(next(iter(times.values()), []))
    if rounds > 1:
        per_entry = {}
        for name, blocks in times.items():
            seconds = np.concatenate(blocks) * 1e-9
            per_entry[name] = {"median_s": float(np.median(seconds)), "min_s": float(seconds.min()),
                               "p99_s": float(np.percentile(seconds, 99)), "calls": int(seconds.size)}
            record_result(group, name, **per_entry[name])
        benchmark.extra_info["interleaved"] = per_entry


def test_throughput_test_set(benchmark, test_set):
    """The 10,000 test images in one ``predict`` call, entries interleaved; images/s from the
    best pass (and the median, for the noise)."""
    entries = predictors(test_set, hint="THROUGHPUT")
    X = test_set[1].features()                                      # (10000, 784)
    group = inference_group("throughput", test_set[0])

    def one_pass(predict):
        t0 = time.perf_counter()
        predict(X)
        return time.perf_counter() - t0

    times = run_rounds(benchmark, group, entries, one_pass, THROUGHPUT_ROUNDS)
    rounds = len(next(iter(times.values()), []))
    if rounds > 1:
        per_entry = {}
        flop, flop_sparse = FORWARD_FLOP * len(X), sparse_flop(X)
        for name, t in times.items():
            best = float(np.min(t))
            per_entry[name] = {"median_s": float(np.median(t)), "min_s": best, "images_per_s": len(X) / best,
                               "gflops": flop / best / 1e9, "sparse_gflops": flop_sparse / best / 1e9,
                               "flop": flop, "sparse_flop": flop_sparse, "images": len(X), "times_s": t}
            record_result(group, name, **{k: v for k, v in per_entry[name].items() if k != "times_s"})
        benchmark.extra_info["interleaved"] = per_entry
