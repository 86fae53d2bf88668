"""The whole training loop on fastnn's public API: MNIST to 97% and more, failing loudly below.

    python examples/mnist.py                        # 10 epochs on numba; exit status 1 below 97%
    EPOCHS=1 TARGET=90 python examples/mnist.py     # the short run the test suite makes

EPOCHS, TARGET (test accuracy, %) and BACKEND (numba, cython, numpy, ...) come from the environment.
"""
import os
import time

import numpy as np

from fastnn import NeuralNetwork
from fastnn.data.datasets import load_dataset
from fastnn.training.factory import make_trainer
from fastnn.training.optim import make_optimizer

EPOCHS, TARGET = int(os.environ.get("EPOCHS", 10)), float(os.environ.get("TARGET", 97))
BACKEND, LR = os.environ.get("BACKEND", "numba"), 0.05

train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")   # uint8 (N, 28, 28), labels (N,)
model = NeuralNetwork([784, 128, 64, 10], activation="relu", init="he", backend=BACKEND, seed=0)
model.pixel_inputs = True                                      # inputs are pixels in [0, 1]: anything else is an error
optimizer = make_optimizer("momentum", model, lr=LR, weight_decay=1e-4)
trainer = make_trainer(model, optimizer, train)                # whole SGD steps in compiled code on numba and cython
rng = np.random.default_rng(0)
X_test = test.features()                                       # float32 (10000, 784) in [0, 1]

for epoch in range(1, EPOCHS + 1):
    optimizer.lr = LR * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / EPOCHS))     # cosine decay to 0
    t0 = time.perf_counter()
    losses = trainer.run_epoch(rng.permutation(len(train)), batch_size=64)   # (steps,) each batch's mean loss
    seconds = time.perf_counter() - t0
    accuracy = 100 * np.mean(model.predict(X_test) == test.labels)
    print(f"epoch {epoch:2d}  loss {losses.mean():.4f}  test accuracy {accuracy:.2f}%  {seconds:.2f} s")

if accuracy < TARGET:
    raise SystemExit(f"FAIL: test accuracy {accuracy:.2f}% is below the target {TARGET:g}%")
print(f"test accuracy {accuracy:.2f}% >= {TARGET:g}%")
