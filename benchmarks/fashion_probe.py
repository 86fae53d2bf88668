"""Probe routes to 90% on Fashion-MNIST with the seed network in PyTorch before building them into fastnn.

Contract: one training run of 784-H...-10 per call (fastnn's recipe: SGD with momentum 0.9, lr
0.05 cosine, weight decay 1e-4, batch 64, label smoothing 0.1, He init, 40 epochs, the same
stratified 20% validation split); prints validation and test accuracy, FINAL last.
Needs torch (``pip install torch==2.13.0``). REPORT's Fashion-MNIST section quotes its runs.

Routes it can try, each an option:

- a wider **teacher** for distillation (Hinton, Vinyals and Dean, 2015): ``--save-teacher T.npz``
  writes the trained network's weights (npz, no pickle); ``--teacher T.npz --teacher-hidden ...``
  trains against (1 - alpha) CE(labels) + alpha T^2 CE(softmax(teacher / T), softmax(z / T)),
  the teacher evaluated on the same inputs as the student (``--mix P``: a share P of the steps
  train on mixup inputs with the teacher's targets only: "function matching", Beyer et al. 2022);
- ``--full``: train on all 60,000 training images (no validation split, the last epoch kept);
- ``--constant --average-from E``: a constant learning rate and the mean of the weights at the
  end of every epoch from E on (stochastic weight averaging, as fastnn's ``--average-from``).

    python benchmarks/fashion_probe.py --hidden 1024 512 --dropout 0.3 --label-smoothing 0 --save-teacher t0.npz
    python benchmarks/fashion_probe.py --teacher t0.npz --teacher-hidden 1024 512 --temperature 4 --alpha 0.9
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np


def build(sizes, dropout, torch):
    """784-H...-10 with ReLU (dropout after each hidden layer when > 0), He-initialized."""
    nn = torch.nn
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        linear = nn.Linear(n_in, n_out)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    linear = nn.Linear(sizes[-2], sizes[-1])
    nn.init.kaiming_normal_(linear.weight)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(*layers, linear)


def linears(model, torch):
    return [m for m in model if isinstance(m, torch.nn.Linear)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 64], help="hidden layer sizes")
    p.add_argument("--epochs", type=int, default=40, help="passes over the training images")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate")
    p.add_argument("--constant", action="store_true", help="a constant learning rate instead of cosine decay")
    p.add_argument("--average-from", type=int, default=0, help="weight averaging from this epoch (1-based; 0: off)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="eps of the smoothed labels")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout after each hidden layer")
    p.add_argument("--full", action="store_true", help="train on all 60,000 images (validation then overlaps)")
    p.add_argument("--seed", type=int, default=0, help="init, split and shuffling")
    p.add_argument("--teacher", default=None, help="distil from this teacher (an npz of --save-teacher)")
    p.add_argument("--teacher-hidden", type=int, nargs="+", default=[1024, 512], help="the teacher's hidden sizes")
    p.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T of the distillation")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the distillation term")
    p.add_argument("--mix", type=float, default=0.0, help="share of steps on mixup inputs, teacher targets only")
    p.add_argument("--save-teacher", default=None, help="write the trained weights here (npz)")
    p.add_argument("--data-dir", default=None, help="folder holding fashion-mnist/ (default: $FASTNN_DATA_DIR)")
    a = p.parse_args(argv)
    if a.epochs < 1 or min(a.hidden + a.teacher_hidden) < 1 or a.seed < 0 or a.temperature <= 0:
        p.error("--epochs, --hidden, --teacher-hidden and --temperature must be positive, --seed >= 0")
    if not 0 <= a.average_from <= a.epochs or not 0 <= a.alpha <= 1 or not 0 <= a.mix <= 1:
        p.error("--average-from must be in [0, --epochs], --alpha and --mix in [0, 1]")
    if a.teacher and not Path(a.teacher).is_file():
        p.error(f"--teacher {a.teacher}: no such file (write one with --save-teacher)")

    import torch
    import torch.nn.functional as F

    from fastnn.data.datasets import load_dataset, train_val_split

    torch.manual_seed(a.seed)
    train = load_dataset("fashion-mnist", "train", a.data_dir)
    test = load_dataset("fashion-mnist", "test", a.data_dir)
    X = torch.tensor(train.images.reshape(len(train.labels), -1) / 255.0, dtype=torch.float32)   # (60000, 784)
    y = torch.tensor(train.labels.astype(np.int64))
    X_test = torch.tensor(test.images.reshape(len(test.labels), -1) / 255.0, dtype=torch.float32)
    y_test = torch.tensor(test.labels.astype(np.int64))
    train_idx, val_idx = train_val_split(train.labels, 0.2, a.seed)
    train_idx = torch.tensor(np.arange(len(y)) if a.full else train_idx)
    val_idx = torch.tensor(val_idx)

    model = build([784, *a.hidden, 10], a.dropout, torch)
    teacher = None
    if a.teacher:
        teacher = build([784, *a.teacher_hidden, 10], 0.0, torch).eval()
        with np.load(a.teacher, allow_pickle=False) as f:
            for i, layer in enumerate(linears(teacher, torch)):
                layer.weight.data = torch.tensor(f[f"weights_{i}"])
                layer.bias.data = torch.tensor(f[f"biases_{i}"])
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=1e-4)
    T, n, batch = a.temperature, len(train_idx), 64
    average = None

    def distill(z, xb):                        # T^2 CE(softmax(teacher / T), softmax(z / T))
        with torch.no_grad():
            q = F.softmax(teacher(xb) / T, 1)
        return -(q * F.log_softmax(z / T, 1)).sum(1).mean() * T * T

    for epoch in range(a.epochs):
        lr = a.lr if a.constant else a.lr * 0.5 * (1 + math.cos(math.pi * epoch / a.epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        order = train_idx[torch.randperm(n)]
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            xb = X[idx]                                                               # (N, 784)
            if teacher is not None and a.mix and torch.rand(()) < a.mix:
                lam = torch.rand(len(idx), 1)
                xb = lam * xb + (1 - lam) * xb[torch.randperm(len(idx))]
                loss = distill(model(xb), xb)
            else:
                z = model(xb)                                                         # (N, 10)
                loss = F.cross_entropy(z, y[idx], label_smoothing=a.label_smoothing)
                if teacher is not None:
                    loss = (1 - a.alpha) * loss + a.alpha * distill(z, xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        evaluated = model
        if a.average_from and epoch + 1 >= a.average_from:
            k = epoch + 2 - a.average_from
            state = {key: v.detach().clone() for key, v in model.state_dict().items()}
            average = state if average is None else {key: average[key] + (state[key] - average[key]) / k
                                                     for key in state}
            evaluated = build([784, *a.hidden, 10], a.dropout, torch)
            evaluated.load_state_dict(average)
        evaluated.eval()
        with torch.no_grad():
            val = (evaluated(X[val_idx]).argmax(1) == y[val_idx]).float().mean().item() * 100
            acc = (evaluated(X_test).argmax(1) == y_test).float().mean().item() * 100
        print(f"epoch {epoch + 1}: val {val:.2f}% test {acc:.2f}% ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"FINAL val {val:.2f}% test {acc:.2f}%", flush=True)
    if a.save_teacher:
        layers = linears(evaluated, torch)
        np.savez(a.save_teacher, **{f"weights_{i}": m.weight.detach().numpy() for i, m in enumerate(layers)},
                 **{f"biases_{i}": m.bias.detach().numpy() for i, m in enumerate(layers)})


if __name__ == "__main__":
    main()
