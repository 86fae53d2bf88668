"""What both demos (the window, ``fastnn.demo``, and the page, ``fastnn.demos.web``) keep between
draws: the models, one per dataset or the user's own, and the test sets, each loaded on first
use; a lock, since a model's forward pass reuses its buffers; and the answer for one drawing.
"""
from __future__ import annotations

import threading

import numpy as np

from fastnn.data.datasets import DATASETS

__all__ = ["DemoState", "degrade", "MAX_NOISE", "MAX_BLUR", "VARIANTS"]

MAX_NOISE = 1.0      # the noise slider's end: Gaussian noise of this standard deviation (ink in [0, 1])
MAX_BLUR = 8.0       # the blur slider's end: a Gaussian of this standard deviation, in canvas pixels
VARIANTS = ("standard", "robust")     # which model answers: the dataset's default, or its robust one


def degrade(gray: np.ndarray, noise: float = 0.0, blur: float = 0.0) -> np.ndarray:
    """The demos' robustness sliders: ``gray`` (H, W) in [0, 1] blurred by a Gaussian of ``blur``
    pixels (scipy.ndimage.gaussian_filter), then Gaussian noise of standard deviation ``noise``
    added (numpy, a fixed seed: the same drawing gets the same noise), clipped to [0, 1]."""
    from scipy.ndimage import gaussian_filter

    out = np.asarray(gray, dtype=np.float32)
    if blur > 0:
        out = gaussian_filter(out, sigma=float(blur))
    if noise > 0:
        out = out + np.random.default_rng(0).normal(0.0, noise, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


class DemoState:
    """The models (one per dataset, or ``model_path``'s for all), the test sets, a generator for
    random test images (seeded) and a lock (a model's forward reuses its buffers, so one request
    at a time runs it)."""

    def __init__(self, model_path=None, data_dir=None, seed: int = 0):
        self.model_path, self.data_dir = model_path, data_dir
        self.rng = np.random.default_rng(seed)
        self.models, self.tests = {}, {}
        self.lock = threading.Lock()

    def model(self, dataset: str, variant: str = "standard"):
        """The model that answers for ``dataset``: its pretrained one (``variant`` "robust": its
        robust one, where one ships), or the ``model_path`` model for every dataset and variant;
        loaded on first use, on the fastest backend with a fused forward.
        Raises ModelFileError, UserError (not a regular file) for a bad ``model_path``;
        FileNotFoundError when no robust model ships for ``dataset``."""
        from fastnn.common.cli import regular_file
        from fastnn.inference.forward import inference_backend
        from fastnn.model.network import NeuralNetwork

        key = "custom" if self.model_path else (dataset, variant)
        if key not in self.models:
            if self.model_path:
                self.models[key] = NeuralNetwork.load(regular_file(self.model_path, "model file"),
                                                      backend=inference_backend())
            else:
                self.models[key] = NeuralNetwork.pretrained(dataset, variant=None if variant == "standard" else variant)
        return self.models[key]

    def test_set(self, dataset: str):
        """``dataset``'s test set, loaded on first use (``data_dir`` as ``load_dataset``)."""
        from fastnn.data.datasets import load_dataset

        if dataset not in self.tests:
            self.tests[dataset] = load_dataset(dataset, "test", self.data_dir)
        return self.tests[dataset]

    def answer(self, dataset: str, x: np.ndarray, variant: str = "standard") -> dict:
        """The JSON answer for input ``x`` (784,) float32 in [0, 1]."""
        with self.lock:
            model = self.model(dataset, variant)
            probs = model.forward(x.reshape(1, -1).astype(model.dtype))[0]                 # (C,)
        classes = [str(c) for c in (model.class_names or DATASETS[dataset].classes)]
        return {"dataset": dataset, "classes": classes, "probs": [round(float(p), 5) for p in probs],
                "prediction": classes[int(np.argmax(probs))],
                "input": [round(float(v), 3) for v in x]}

    def read(self, dataset: str, gray: np.ndarray, variant: str = "standard") -> dict:
        """The JSON answer for a drawn number ``gray`` (H, W) in [0, 1]: the number, its confidence
        and each digit's label, probability, box (top, left, bottom, right) and 28 x 28 input; read
        by MNIST's number reader (the "numbers" variant) when the standard MNIST model is chosen.
        Raises UserError for a model that does not read digits, BlankImage for no ink."""
        from fastnn.model.numbers import read_number

        if not self.model_path and dataset == "mnist" and variant == "standard":
            variant = "numbers"                                  # MNIST's number reader reads touching digits
        with self.lock:
            model = self.model(dataset, variant)
            reading = read_number(model, gray)
        return {"dataset": dataset, "number": reading.text, "confidence": round(reading.confidence, 5),
                "height": int(gray.shape[0]), "width": int(gray.shape[1]),
                "digits": [{"label": label, "probability": round(p, 5), "box": list(box),
                            "input": [round(float(v), 3) for v in image]}
                           for (label, p, box), image in zip(reading.digits, reading.inputs)]}
