"""The professional baseline: the same MLP trained the way a PyTorch user would write it.

``nn.Sequential`` of ``nn.Linear`` and activation modules, autograd, ``nn.CrossEntropyLoss``
and ``torch.optim`` (SGD with momentum, or Adam; ``weight_decay`` as torch's coupled L2,
which decays biases too, the one difference from ``fastnn.training.optim``). It starts from the
``NeuralNetwork``'s initial weights and takes mini-batches in the same order; dropout uses
``nn.Dropout`` with torch's own generator (seeded), so dropout runs are not mask-for-mask equal.

The training set is converted to one float32 tensor once; each step indexes it with the
epoch's permutation (the fastest plain-PyTorch way, faster here than a ``DataLoader``).
torch uses ``torch.get_num_threads()`` threads (set from ``OMP_NUM_THREADS``).
"""
from __future__ import annotations

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # reported by get_backend("torch") with an install hint
    raise ImportError(f"torch is not installed ({exc})") from exc

from fastnn.backends.timing import phase
from fastnn.data.datasets import to_float
from fastnn.training.trainers import TrainerBase, batch_images, checked_order

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def build_module(model) -> "nn.Sequential":
    """An ``nn.Sequential`` with ``model``'s layers and (copied) weights: Linear.weight = W.T."""
    layers = []
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        linear = nn.Linear(W.shape[0], W.shape[1], dtype=getattr(torch, model.dtype.name))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if i < model.num_layers - 1:
            layers.append(_ACTIVATIONS[model.activation]())
            if model.dropout:
                layers.append(nn.Dropout(model.dropout))
    return nn.Sequential(*layers)


class TorchTrainer(TrainerBase):
    """Trains a copy of ``model`` in PyTorch, writing the weights back after every epoch.

    Args:
        model: a ``NeuralNetwork`` (its weights are the starting point and receive the result).
        optimizer: a ``fastnn.training.optim`` optimizer whose kind and hyperparameters are mirrored
            (``SGD`` with or without momentum, ``Adam``).
        dataset: the training ``Dataset``.
        seed: seeds torch's generator (dropout).
        augmenter: a ``fastnn.data.augment.Augmenter`` moving each batch, or None.
        label_smoothing: eps in [0, 1) (``torch.nn.CrossEntropyLoss``'s, the same target).
    """

    def __init__(self, model, optimizer, dataset, seed: int = 0, augmenter=None, label_smoothing: float = 0.0):
        from fastnn.training.optim import SGD, Adam

        torch.manual_seed(seed)
        self.model, self.optimizer = model, optimizer
        self.module = build_module(model)
        dtype = getattr(torch, model.dtype.name)
        self.dataset, self.augmenter = dataset, augmenter
        # without augmentation the whole float set once; with it each batch is moved, then converted
        self.X = None if augmenter else torch.from_numpy(dataset.features(dtype=model.dtype)).to(dtype)  # (n, D)
        self.y = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))        # (n,)
        params = self.module.parameters()
        if isinstance(optimizer, Adam):
            self.torch_optimizer = torch.optim.Adam(params, lr=optimizer.lr, betas=(optimizer.beta1, optimizer.beta2),
                                                    eps=optimizer.eps, weight_decay=optimizer.weight_decay)
        elif isinstance(optimizer, SGD):
            self.torch_optimizer = torch.optim.SGD(params, lr=optimizer.lr, momentum=optimizer.momentum,
                                                   weight_decay=optimizer.weight_decay)
        else:
            raise ValueError(f"no torch equivalent for optimizer {type(optimizer).__name__}")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.description = (f"torch.nn + autograd + torch.optim (torch {torch.__version__}, "
                            f"{torch.get_num_threads()} threads)")
        self.timer = None          # a fastnn.backends.timing.PhaseTimer times each phase of a step

    def run_steps(self, order: np.ndarray, first_step: int, n_steps: int, batch_size: int) -> np.ndarray:
        """Train on batches ``first_step`` .. ``first_step + n_steps - 1`` of ``order``; return their losses.
        Raises as ``fastnn.training.trainers.checked_order``."""
        order = checked_order(order, len(self.dataset), first_step, n_steps, batch_size)
        for group in self.torch_optimizer.param_groups:
            group["lr"] = self.optimizer.lr
        self.module.train()
        order_t = torch.from_numpy(np.asarray(order, dtype=np.int64))
        losses = []
        n = len(order_t)
        timer = self.timer
        for step in range(first_step, min(first_step + n_steps, -(-n // batch_size))):
            with phase(timer, "data"):
                idx = order_t[step * batch_size:(step + 1) * batch_size]
                if self.augmenter is None:
                    xb = self.X[idx]                                                  # (B, D)
                else:
                    images = batch_images(self.dataset, order, step, batch_size, self.augmenter)
                    xb = torch.from_numpy(to_float(images, self.model.dtype))         # (B, D)
                yb = self.y[idx]
            with phase(timer, "forward"):
                logits = self.module(xb)
            with phase(timer, "loss"):
                loss = self.loss_fn(logits, yb)
            with phase(timer, "backward"):
                self.torch_optimizer.zero_grad()
                loss.backward()
            with phase(timer, "optimizer"):
                self.torch_optimizer.step()
            losses.append(loss.item())
        self.optimizer.t += len(losses)
        return np.array(losses)

    def sync_to_model(self) -> None:
        """Copy the trained weights back into the ``NeuralNetwork``."""
        linears = [m for m in self.module if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for i, linear in enumerate(linears):
                self.model.weights[i][...] = linear.weight.detach().numpy().T
                self.model.biases[i][...] = linear.bias.detach().numpy()
