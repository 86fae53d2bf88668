"""Training runs as a library: a ``TrainConfig`` (every option, the recipes per dataset) and
``train(config)``, the whole run behind ``python -m fastnn.train`` (and the experiments' runs).

``train`` claims the output folder, loads and splits the data, builds the model, the optimizer
and the fastest trainer (``fastnn.training.factory.make_trainer``), compiles the kernels in a step of
their own, runs the epochs with a progress bar and per-epoch metrics, keeps the model with the
best validation accuracy and writes ``best_model.npz`` (best validation accuracy),
``history.csv`` (a row per epoch, including the fraction of dead hidden units per layer: units
that output 0 for all of the first 1,024 training samples), ``learning_curves.png`` and
``metrics.json``. Ctrl-C or SIGTERM stops training, keeps the best model so far and still
writes everything.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fastnn import __version__
from fastnn.common.cli import new_run_folder, output_folder, printable, release_folder, remove_if_empty, stop_signals
from fastnn.common.errors import UserError
from fastnn.common.io import write_csv_rows, write_json
from fastnn.common.provenance import git_commit
from fastnn.data.augment import Augmenter, parse_augment
from fastnn.data.datasets import (
    FOLDER_SPLIT_SEED,
    FOLDER_TEST_FRACTION,
    folder_has_splits,
    iterate_minibatches,
    load_dataset,
    load_folder_dataset,
    train_val_split,
)
from fastnn.evaluation.metrics import dead_unit_fraction
from fastnn.model.network import NeuralNetwork
from fastnn.training.factory import make_trainer
from fastnn.training.optim import make_optimizer
from fastnn.training.trainers import warm_up

# The recipe per dataset: the settings whose defaults depend on the dataset, chosen on
# validation accuracy (never test) with `python -m fastnn.experiments augmentation` (REPORT.md).
RECIPES = {
    "mnist": {"epochs": 40, "augment": "shift=2", "dropout": 0.0, "label_smoothing": 0.0},
    "fashion-mnist": {"epochs": 40, "augment": "none", "dropout": 0.0, "label_smoothing": 0.1},
    # an image folder (--data): nothing known about its images, so no augmentation
    "folder": {"epochs": 20, "augment": "none", "dropout": 0.0, "label_smoothing": 0.0},
}


@dataclass
class TrainConfig:
    """Every setting of a training run (the defaults are the tuned ones). ``epochs``, ``augment``,
    ``dropout`` and ``label_smoothing`` left at None take the dataset's recipe (``RECIPES``).
    ``data``: an image folder (``fastnn.data.datasets.load_folder_dataset``) instead of a named dataset;
    ``dataset`` is then its name, for the outputs."""
    backend: str = "numpy"
    dataset: str = "mnist"
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "momentum"
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    hidden: list = field(default_factory=lambda: [128, 64])
    activation: str = "relu"
    init: str = "he"
    dropout: float | None = None
    weight_decay: float = 1e-4
    seed: int = 0
    val_split: float = 0.2
    data_dir: str | None = None
    limit: int | None = None
    test_limit: int | None = None
    dtype: str = "float32"
    out: str | None = None
    target_accuracy: float | None = None
    fused: bool = True
    augment: str | None = None
    label_smoothing: float | None = None
    data: str | None = None

    def __post_init__(self):
        recipe = RECIPES["folder"] if self.data else RECIPES.get(self.dataset, RECIPES["mnist"])
        for key, value in recipe.items():
            if getattr(self, key) is None:
                setattr(self, key, value)


class NonFiniteLoss(RuntimeError):
    pass


LR_SCHEDULES = ("constant", "cosine", "step")


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate for ``epoch`` (1-based) under ``cfg.lr_schedule``.

    constant: lr. cosine: lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2 (I. Loshchilov and
    F. Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017, without
    restarts). step: lr divided by 10 after 50% and again after 75% of the epochs.
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    if cfg.lr_schedule == "step":
        return cfg.lr * (0.1 ** ((epoch > cfg.epochs // 2) + (epoch > 3 * cfg.epochs // 4)))
    raise ValueError(f"unknown lr schedule {cfg.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")


def evaluate(model: NeuralNetwork, dataset, batch_size: int = 2000) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on a whole ``Dataset``, in evaluation mode."""
    n = len(dataset)
    if n == 0:
        return float("nan"), float("nan")
    total_loss, correct = 0.0, 0
    for X, y in iterate_minibatches(dataset, batch_size, dtype=model.dtype):
        loss, probs = model.loss(X, y)
        total_loss += loss * len(y)
        correct += int(np.sum(np.argmax(probs, axis=1) == y))
    return total_loss / n, correct / n


def default_run_dir(dataset: str, backend: str) -> Path:
    """A new folder name under runs/: ``<time>-<dataset>-<backend>``, suffixed to be unique."""
    return new_run_folder(f"{dataset}-{backend}")


def load_test_set(cfg: TrainConfig):
    """The test Dataset for the config (``--test-limit`` applied)."""
    test = load_folder_dataset(cfg.data, "test") if cfg.data else load_dataset(cfg.dataset, "test", cfg.data_dir)
    return test.subset(slice(0, cfg.test_limit)) if cfg.test_limit else test


def prepare_data(cfg: TrainConfig):
    """(train, val, test) Datasets for the config: limit, stratified split, test limit.

    The split copies the rows out and lets the full set go: at this point, before any
    trainer exists, the two copies cost less than a full-size buffer kept through training."""
    full = load_folder_dataset(cfg.data, "train") if cfg.data else load_dataset(cfg.dataset, "train", cfg.data_dir)
    test = load_test_set(cfg)
    if cfg.limit:
        full = full.subset(slice(0, cfg.limit))
    train_idx, val_idx = train_val_split(full.labels, cfg.val_split, cfg.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise UserError(f"--val-split {cfg.val_split} of {len(full)} samples leaves {len(train_idx)} for training "
                        f"and {len(val_idx)} for validation; both need some: raise --limit or change --val-split")
    return full.subset(train_idx), full.subset(val_idx), test


def train(cfg: TrainConfig, progress: bool = True, log=print, overwrite: bool = False,
          command: str | None = None) -> dict:
    """Run one training job as configured; return the metrics dict (also written to disk).

    Raises:
        UserError: ``cfg.out`` is a file, a non-empty folder (unless ``overwrite``) or not
            writable; the data split leaves no training or validation samples.
        KeyboardInterrupt: Ctrl-C or SIGTERM before training started (nothing is written, the new
            run folder is removed). During training they stop it and everything is written.
    """
    out = output_folder(cfg.out or default_run_dir(cfg.dataset, cfg.backend), overwrite)
    cfg.out = str(out)
    with stop_signals() as signals:
        try:
            return _train(cfg, out, progress, log, signals, command)
        except BaseException:
            remove_if_empty(out)                     # a failed start leaves no empty run folder
            raise
        finally:
            release_folder(out)                      # another run may use it now


def _train(cfg: TrainConfig, out: Path, progress: bool, log, signals, command: str | None = None) -> dict:
    from tqdm.auto import tqdm

    train_set, val_set, test_set = prepare_data(cfg)
    layer_sizes = [train_set.num_features, *cfg.hidden, train_set.num_classes]
    model = NeuralNetwork(layer_sizes, activation=cfg.activation, init=cfg.init, backend=cfg.backend,
                          dtype=np.dtype(cfg.dtype), seed=cfg.seed, dropout=cfg.dropout)
    model.class_names = list(train_set.class_names)
    model.dataset = cfg.dataset
    model.pixel_inputs = True                     # images: predict refuses inputs outside [0, 1]
    optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    shuffle_rng = np.random.default_rng([cfg.seed, 1])
    augmentation = parse_augment(cfg.augment)
    augmenter = Augmenter(augmentation, train_set.images.shape[1:], cfg.seed) if augmentation.enabled else None
    trainer = make_trainer(model, optimizer, train_set, fused=cfg.fused, seed=cfg.seed, log=log, augmenter=augmenter,
                           label_smoothing=cfg.label_smoothing)
    log(f"{model}\n{optimizer}  {cfg.lr_schedule} lr schedule, batch {cfg.batch_size}, {cfg.epochs} epochs, "
        + (f"label smoothing {cfg.label_smoothing:g}, " if cfg.label_smoothing else "")
        + f"{trainer.description}\n"
        f"data: {cfg.dataset} train {len(train_set)}, val {len(val_set)}, test {len(test_set)}; output {out}"
        + (f"\nclasses (the folder names): {', '.join(printable(c) for c in train_set.class_names)}"
           if cfg.data else "")
        + (f"\n{cfg.data} has no train/ and test/ folders: the test set is a stratified "
           f"{FOLDER_TEST_FRACTION:.0%} of each class (seed {FOLDER_SPLIT_SEED}, the same for evaluate --data)"
           if cfg.data and not folder_has_splits(cfg.data) else ""))
    n_test = len(test_set)
    del test_set                                  # loaded again after training: not held through it
    compile_time = compile_kernels(model, trainer, cfg.batch_size, log)

    # dead-ReLU monitor: units that output 0 for every one of the first 1,024 training samples
    monitor_X = train_set.features(np.arange(min(1024, len(train_set))), dtype=model.dtype)
    best_model_path = out / "best_model.npz"
    history, epoch_times = [], []
    best_val, best_epoch = -1.0, 0
    status = "completed"
    n_batches = math.ceil(len(train_set) / cfg.batch_size)
    t_start = time.perf_counter()
    # a diverging run shows as a non-finite loss (caught below): no overflow warnings on the way
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            for epoch in range(1, cfg.epochs + 1):
                optimizer.lr = learning_rate(cfg, epoch)
                t0 = time.perf_counter()
                order = shuffle_rng.permutation(len(train_set))
                bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not progress,
                           mininterval=0.5)
                running = {"loss": 0.0, "done": 0}

                def on_steps(losses, epoch=epoch, bar=bar, running=running):
                    bad = np.flatnonzero(~np.isfinite(losses))
                    if bad.size:
                        raise NonFiniteLoss(f"loss became {losses[bad[0]]} at epoch {epoch}, step "
                                            f"{running['done'] + bad[0] + 1}: the learning rate {cfg.lr} is "
                                            f"probably too high; try --lr {cfg.lr / 10:g}")
                    for loss in losses:
                        running["done"] += 1
                        running["loss"] += (loss - running["loss"]) / min(running["done"], 50)  # mean of ~50 steps
                    bar.set_postfix(loss=f"{running['loss']:.4f}", refresh=False)
                    bar.update(len(losses))

                try:
                    trainer.run_epoch(order, cfg.batch_size, on_steps)
                finally:
                    bar.close()
                epoch_time = time.perf_counter() - t0
                train_loss, train_acc = evaluate(model, train_set)
                val_loss, val_acc = evaluate(model, val_set)
                dead = [dead_unit_fraction(h) for h in model.hidden_outputs(monitor_X)]
                epoch_times.append(epoch_time)
                history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                                "val_loss": val_loss, "val_accuracy": val_acc, "lr": optimizer.lr,
                                "epoch_time_s": epoch_time,
                                **{f"dead_units_layer{i + 1}": d for i, d in enumerate(dead)}})
                improved = val_acc > best_val
                if improved:
                    best_val, best_epoch = val_acc, epoch
                    model.save(best_model_path)
                log(f"epoch {epoch:3d}/{cfg.epochs}  train loss {train_loss:.4f} acc {100 * train_acc:6.2f}%  "
                    f"val loss {val_loss:.4f} acc {100 * val_acc:6.2f}%  {epoch_time:6.2f}s  dead units "
                    + "/".join(f"{100 * d:.0f}%" for d in dead) + ("  *" if improved else ""))
                write_csv_rows(history, out / "history.csv")
        except KeyboardInterrupt:
            signals.hold()                           # a second Ctrl-C / SIGTERM must not cut the writes short
            status = "interrupted"
            log(f"\ninterrupted: keeping the best model so far (epoch {best_epoch}) in {best_model_path}"
                if best_epoch else "\ninterrupted before the first epoch ended: no model to keep")
        except NonFiniteLoss as exc:
            signals.hold()
            status = "non-finite loss"
            log(f"stopped: {exc}")
    signals.hold()
    total_time = time.perf_counter() - t_start
    del trainer                                   # its copy of the data (the fused path's CSR) is done

    if best_epoch:
        best = NeuralNetwork.load(best_model_path, backend=cfg.backend)
        test_loss, test_acc = evaluate(best, load_test_set(cfg))
    else:
        test_loss = test_acc = float("nan")
    metrics = {
        "backend": cfg.backend, "dataset": cfg.dataset, "status": status,
        "test_accuracy": test_acc, "test_loss": test_loss,
        "best_val_accuracy": best_val if best_epoch else float("nan"), "best_epoch": best_epoch,
        "epochs_completed": len(history), "epoch_times_s": epoch_times, "compile_time_s": compile_time,
        "total_time_s": total_time,
        "seed": cfg.seed, "layer_sizes": layer_sizes, "num_parameters": model.num_parameters(),
        "train_samples": len(train_set), "val_samples": len(val_set), "test_samples": n_test,
        "hyperparameters": {k: v for k, v in asdict(cfg).items() if k not in ("backend", "dataset", "seed", "out")},
        "command": command,
        "environment": {"fastnn": __version__, "git_commit": git_commit(), "python": platform.python_version(),
                        "numpy": np.__version__,
                        "machine": platform.machine(), "processor": platform.processor() or None},
    }
    write_json(metrics, out / "metrics.json")
    if history:
        from fastnn.common.plotting import plot_learning_curves  # matplotlib only now: ~20 MB less during training

        plot_learning_curves(history, out / "learning_curves.png",
                             f"{cfg.dataset}, {'-'.join(map(str, layer_sizes))}, backend {cfg.backend}")
    written = ["best_model.npz", "history.csv", "learning_curves.png", "metrics.json"] if history else ["metrics.json"]
    log(f"wrote {out}/{{{', '.join(written)}}}")
    if epoch_times:
        log(f"epoch time: median {float(np.median(epoch_times)):.3f} s over {len(epoch_times)} epochs "
            f"({1e6 * float(np.median(epoch_times)) / len(train_set):.1f} us per training sample)")
    if best_epoch:
        log(f"test accuracy {100 * test_acc:.2f}% (best model, epoch {best_epoch}, val accuracy "
            f"{100 * best_val:.2f}%)")
    else:
        log("no epoch completed: no model and no test accuracy")
    return metrics


def compile_kernels(model: NeuralNetwork, trainer, batch_size: int, log=print) -> float:
    """Compile the run's kernels before the first epoch and say so: a first run on a machine
    compiles Numba's kernels (the fused path's in two worker processes at once,
    ``fastnn.training.precompile``), later runs load them from its cache (``fastnn.training.trainers.warm_up``).
    Its time never counts in an epoch's. Returns the seconds it took."""
    import time

    from fastnn.training.fused import FusedTrainer

    cached = getattr(model.backend, "fused_path_cached", None)
    first = cached is not None and not cached()
    t0 = time.perf_counter()
    if first:
        log(f"compiling the {model.backend_name} kernels (first run on this machine; later runs load them "
            f"from Numba's cache) ...")
        if isinstance(trainer, FusedTrainer):
            from fastnn.training.precompile import KernelSpec, compile_in_workers

            compile_in_workers(KernelSpec(tuple(model.layer_sizes), model.dtype.name,
                                          tuple(trainer.dataset.images.shape[1:]), trainer.augmenter is not None))
    _, compiled = warm_up(model, trainer, batch_size)
    seconds = time.perf_counter() - t0
    if first:
        log(f"compiling the {model.backend_name} kernels (first run on this machine): {seconds:.1f} s"
            + (f" ({compiled} compiled in this process)" if compiled else ""))
    elif compiled:
        log(f"compiling the {model.backend_name} kernels: {seconds:.1f} s ({compiled} kernels)")
    elif cached is not None:
        log(f"loading the compiled {model.backend_name} kernels from Numba's cache: {seconds:.1f} s")
    return seconds
