"""What both demos (the window, ``fastnn.demo``, and the page, ``fastnn.demos.web``) keep between
draws: the models, one per dataset or the user's own, and the test sets, each loaded on first
use; a lock, since a model's forward pass reuses its buffers; and the answer for one drawing.
"""
from __future__ import annotations

import threading

import numpy as np

from fastnn.data.datasets import DATASETS

__all__ = ["DemoState"]


class DemoState:
    """The models (one per dataset, or ``model_path``'s for all), the test sets, a generator for
    random test images (seeded) and a lock (a model's forward reuses its buffers, so one request
    at a time runs it)."""

    def __init__(self, model_path=None, data_dir=None, seed: int = 0):
        self.model_path, self.data_dir = model_path, data_dir
        self.rng = np.random.default_rng(seed)
        self.models, self.tests = {}, {}
        self.lock = threading.Lock()

    def model(self, dataset: str):
        """The model that answers for ``dataset``: its pretrained one, or the ``model_path`` model
        for every dataset; loaded on first use, on the fastest backend with a fused forward.
        Raises ModelFileError, UserError (not a regular file) for a bad ``model_path``."""
        from fastnn.common.cli import regular_file
        from fastnn.inference.forward import inference_backend
        from fastnn.model.network import NeuralNetwork

        key = "custom" if self.model_path else dataset
        if key not in self.models:
            self.models[key] = (NeuralNetwork.load(regular_file(self.model_path, "model file"),
                                                   backend=inference_backend())
                                if self.model_path else NeuralNetwork.pretrained(dataset))
        return self.models[key]

    def test_set(self, dataset: str):
        """``dataset``'s test set, loaded on first use (``data_dir`` as ``load_dataset``)."""
        from fastnn.data.datasets import load_dataset

        if dataset not in self.tests:
            self.tests[dataset] = load_dataset(dataset, "test", self.data_dir)
        return self.tests[dataset]

    def answer(self, dataset: str, x: np.ndarray) -> dict:
        """The JSON answer for input ``x`` (784,) float32 in [0, 1]."""
        with self.lock:
            model = self.model(dataset)
            probs = model.forward(x.reshape(1, -1).astype(model.dtype))[0]                 # (C,)
        classes = [str(c) for c in (model.class_names or DATASETS[dataset].classes)]
        return {"dataset": dataset, "classes": classes, "probs": [round(float(p), 5) for p in probs],
                "prediction": classes[int(np.argmax(probs))],
                "input": [round(float(v), 3) for v in x]}
