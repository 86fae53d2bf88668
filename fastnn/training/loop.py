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
from fastnn.data.datasets import iterate_minibatches, load_dataset, train_val_split
from fastnn.data.folders import FOLDER_SPLIT_SEED, FOLDER_TEST_FRACTION, folder_has_splits, load_folder_dataset
from fastnn.evaluation.metrics import dead_unit_fraction
from fastnn.model.network import NeuralNetwork
from fastnn.training.config import TrainConfig, learning_rate
from fastnn.training.factory import make_trainer
from fastnn.training.optim import make_optimizer
from fastnn.training.trainers import warm_up


class NonFiniteLoss(RuntimeError):
    pass


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


NUMBER_PIECES_TEST_SHARE = 20    # a number reader's test set: the pieces of number_pieces / 20 test numbers
NUMBER_PIECES_TEST_SEED = 0      # ... always the same ones, whatever the training seed


def load_test_set(cfg: TrainConfig):
    """The test Dataset for the config (``--test-limit`` applied); for a number reader
    (``number_pieces``), the pieces of numbers composed from the test split."""
    test = load_folder_dataset(cfg.data, "test") if cfg.data else load_dataset(cfg.dataset, "test", cfg.data_dir)
    if cfg.number_pieces:
        from fastnn.data.number_pieces import number_pieces

        test = number_pieces(test, max(1, cfg.number_pieces // NUMBER_PIECES_TEST_SHARE), NUMBER_PIECES_TEST_SEED,
                             jobs=-1)
    return test.subset(slice(0, cfg.test_limit)) if cfg.test_limit else test


def _number_reader_set(cfg: TrainConfig, digits, progress: bool):
    """A number reader's training set: the labelled pieces of ``cfg.number_pieces`` numbers
    composed from ``digits`` (``fastnn.data.number_pieces``), followed by the digits themselves."""
    from fastnn.data.datasets import Dataset
    from fastnn.data.number_pieces import number_pieces

    pieces = number_pieces(digits, cfg.number_pieces, cfg.seed, progress=progress, jobs=-1)
    return Dataset(np.concatenate([pieces.images, digits.images]), np.concatenate([pieces.labels, digits.labels]),
                   pieces.class_names, f"{digits.name} + {cfg.number_pieces} numbers' pieces")


def prepare_data(cfg: TrainConfig, progress: bool = False):
    """(train, val, test) Datasets for the config: limit, stratified split, test limit; val is
    None at ``val_split`` 0 (every sample trains).

    The split copies the rows out and lets the full set go: at this point, before any
    trainer exists, the two copies cost less than a full-size buffer kept through training."""
    full = load_folder_dataset(cfg.data, "train") if cfg.data else load_dataset(cfg.dataset, "train", cfg.data_dir)
    test = load_test_set(cfg)
    if cfg.limit:
        full = full.subset(slice(0, cfg.limit))
    if cfg.number_pieces:
        full = _number_reader_set(cfg, full, progress)
    if cfg.val_split == 0:
        return full, None, test
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


@dataclass
class _Run:
    """What one run builds before its first epoch."""
    model: NeuralNetwork
    optimizer: object
    trainer: object
    train_set: object
    val_set: object
    n_test: int
    shuffle_rng: np.random.Generator
    pool: object = None                 # CorruptedPool of the robust recipe, or None
    corrupt_p: float = 0.0              # the share of each epoch's samples drawn corrupted


@dataclass
class _Progress:
    """What the epochs leave behind, kept whatever stops them."""
    history: list = field(default_factory=list)
    epoch_times: list = field(default_factory=list)
    best_val: float = -1.0
    best_epoch: int = 0
    status: str = "completed"


def _train(cfg: TrainConfig, out: Path, progress: bool, log, signals, command: str | None = None) -> dict:
    run = _build(cfg, out, log, progress)
    compile_time = compile_kernels(run.model, run.trainer, cfg.batch_size, log)
    t_start = time.perf_counter()
    done = _run_epochs(cfg, run, out, progress, log, signals)
    signals.hold()
    total_time = time.perf_counter() - t_start
    run.trainer = None                            # its copy of the data (the fused path's CSR) is done
    return _finish(cfg, run, done, out, compile_time, total_time, command, log)


def _build(cfg: TrainConfig, out: Path, log, progress: bool = False) -> _Run:
    """Load and split the data, build the model, the optimizer and the trainer, and say so."""
    train_set, val_set, test_set = prepare_data(cfg, progress)
    layer_sizes = [train_set.num_features, *cfg.hidden, train_set.num_classes]
    model = NeuralNetwork(layer_sizes, activation=cfg.activation, init=cfg.init, backend=cfg.backend,
                          dtype=np.dtype(cfg.dtype), seed=cfg.seed, dropout=cfg.dropout)
    model.class_names = list(train_set.class_names)
    model.dataset = cfg.dataset
    model.pixel_inputs = True                     # images: predict refuses inputs outside [0, 1]
    model.input_norm = cfg.input_norm             # evaluation normalizes every input itself
    optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    augmentation = parse_augment(cfg.augment)
    augmenter = Augmenter(augmentation, train_set.images.shape[1:], cfg.seed) if augmentation.enabled else None
    fed, pool, corrupt_p = _training_images(cfg, train_set, log)
    trainer = make_trainer(model, optimizer, fed, fused=cfg.fused, seed=cfg.seed, log=log, augmenter=augmenter,
                           label_smoothing=cfg.label_smoothing)
    log(f"{model}\n{optimizer}  {cfg.lr_schedule} lr schedule, batch {cfg.batch_size}, {cfg.epochs} epochs, "
        + (f"label smoothing {cfg.label_smoothing:g}, " if cfg.label_smoothing else "")
        + f"{trainer.description}\n"
        f"data: {cfg.dataset} train {len(train_set)}, "
        + (f"val {len(val_set)}" if val_set is not None else "no validation split (the last epoch's model is kept)")
        + f", test {len(test_set)}; output {out}"
        + (f"\nclasses (the folder names): {', '.join(printable(c) for c in train_set.class_names)}"
           if cfg.data else "")
        + (f"\n{cfg.data} has no train/ and test/ folders: the test set is a stratified "
           f"{FOLDER_TEST_FRACTION:.0%} of each class (seed {FOLDER_SPLIT_SEED}, the same for evaluate --data)"
           if cfg.data and not folder_has_splits(cfg.data) else ""))
    # the test set is loaded again after training: not held through it
    return _Run(model, optimizer, trainer, train_set, val_set, len(test_set), np.random.default_rng([cfg.seed, 1]),
                pool, corrupt_p)


def _training_images(cfg: TrainConfig, train_set, log):
    """(the data set the trainer draws from, the CorruptedPool or None, p): the training images,
    followed by one corrupted copy of each when ``cfg.corrupt`` names kinds (``fastnn.data.distort``),
    normalized when ``cfg.input_norm`` is "background" (``fastnn.data.normalize``)."""
    from fastnn.data.datasets import Dataset
    from fastnn.data.distort import CorruptedPool, parse_distortions
    from fastnn.data.normalize import normalize_images

    kinds, p = parse_distortions(cfg.corrupt)
    fed, pool = train_set, None
    if kinds:
        t0 = time.perf_counter()
        pool = CorruptedPool(train_set.images, train_set.labels, kinds, cfg.seed)
        fed = Dataset(pool.images, pool.labels, train_set.class_names, f"{train_set.name}+corrupted")
        log(f"training corruptions: {', '.join(kinds)}; each epoch draws a sample's corrupted copy with p = {p:g} "
            f"(copies made in {time.perf_counter() - t0:.1f} s)")
    if cfg.input_norm == "background":
        fed = Dataset(normalize_images(fed.images), fed.labels, fed.class_names, fed.name)
    return fed, pool, p


def _run_epochs(cfg: TrainConfig, run: _Run, out: Path, progress: bool, log, signals) -> _Progress:
    """The epochs: each trained, evaluated, logged and written (history.csv; best_model.npz when
    validation accuracy improves). Ctrl-C, SIGTERM or a non-finite loss stop them; what was
    done is kept."""
    done = _Progress()
    average = _WeightAverage(run.model) if cfg.average_from else None
    # dead-ReLU monitor: units that output 0 for every one of the first 1,024 training samples
    monitor_X = run.train_set.features(np.arange(min(1024, len(run.train_set))), dtype=run.model.dtype)
    # a diverging run shows as a non-finite loss (caught below): no overflow warnings on the way
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            for epoch in range(1, cfg.epochs + 1):
                run.optimizer.lr = learning_rate(cfg, epoch)
                epoch_time = _train_epoch(cfg, run, epoch, progress)
                averaging = average is not None and epoch >= cfg.average_from
                if averaging:
                    average.add()
                    average.swap_in()                    # evaluated and saved as the average
                train_loss, train_acc = evaluate(run.model, run.train_set)
                val_loss, val_acc = evaluate(run.model, run.val_set) if run.val_set is not None else (math.nan,
                                                                                                      math.nan)
                dead = [dead_unit_fraction(h) for h in run.model.hidden_outputs(monitor_X)]
                done.epoch_times.append(epoch_time)
                done.history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                                     "val_loss": val_loss, "val_accuracy": val_acc, "lr": run.optimizer.lr,
                                     "epoch_time_s": epoch_time,
                                     **{f"dead_units_layer{i + 1}": d for i, d in enumerate(dead)}})
                improved = val_acc > done.best_val or run.val_set is None    # no validation: the last epoch
                if improved:
                    done.best_val, done.best_epoch = val_acc, epoch
                    run.model.save(out / "best_model.npz")
                if averaging:
                    average.swap_out()                   # training goes on from its own weights
                log(f"epoch {epoch:3d}/{cfg.epochs}{' (averaged)' if averaging else ''}  train loss {train_loss:.4f} "
                    f"acc {100 * train_acc:6.2f}%  "
                    + (f"val loss {val_loss:.4f} acc {100 * val_acc:6.2f}%  " if run.val_set is not None else "")
                    + f"{epoch_time:6.2f}s  dead units "
                    + "/".join(f"{100 * d:.0f}%" for d in dead) + ("  *" if improved else ""))
                write_csv_rows(done.history, out / "history.csv")
        except KeyboardInterrupt:
            signals.hold()                           # a second Ctrl-C / SIGTERM must not cut the writes short
            done.status = "interrupted"
            log(f"\ninterrupted: keeping the best model so far (epoch {done.best_epoch}) in {out / 'best_model.npz'}"
                if done.best_epoch else "\ninterrupted before the first epoch ended: no model to keep")
        except NonFiniteLoss as exc:
            signals.hold()
            done.status = "non-finite loss"
            log(f"stopped: {exc}")
    return done


class _WeightAverage:
    """Stochastic weight averaging (P. Izmailov et al., "Averaging Weights Leads to Wider Optima
    and Better Generalization", UAI 2018): the running mean of the weights and biases at the end
    of each epoch from ``--average-from`` on, in float64. ``swap_in`` puts the mean into the
    model's arrays in place (the trainers and the fused forward hold those very arrays) for
    evaluation and saving; ``swap_out`` puts the trained weights back."""

    def __init__(self, model: NeuralNetwork):
        self.model = model
        self.count = 0
        self.mean = [np.zeros(a.shape) for a in model.parameters()]
        self.saved = None

    def add(self) -> None:
        self.count += 1
        for m, a in zip(self.mean, self.model.parameters()):
            m += (a - m) / self.count

    def swap_in(self) -> None:
        self.saved = [a.copy() for a in self.model.parameters()]
        for a, m in zip(self.model.parameters(), self.mean):
            a[...] = m

    def swap_out(self) -> None:
        for a, s in zip(self.model.parameters(), self.saved):
            a[...] = s
        self.saved = None


def _train_epoch(cfg: TrainConfig, run: _Run, epoch: int, progress: bool) -> float:
    """One epoch of training with a progress bar (the running loss); returns its seconds.
    Raises NonFiniteLoss at the first step whose loss is not finite."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    order = run.shuffle_rng.permutation(len(run.train_set))
    if run.pool is not None:                      # the robust recipe: some samples' corrupted copies
        order = run.pool.order(order, run.corrupt_p, run.shuffle_rng)
    bar = tqdm(total=math.ceil(len(run.train_set) / cfg.batch_size), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
               disable=not progress, mininterval=0.5)
    running = {"loss": 0.0, "done": 0}

    def on_steps(losses):
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
        run.trainer.run_epoch(order, cfg.batch_size, on_steps)
    finally:
        bar.close()
    return time.perf_counter() - t0


def _finish(cfg: TrainConfig, run: _Run, done: _Progress, out: Path, compile_time: float, total_time: float,
            command: str | None, log) -> dict:
    """Test the best model, write metrics.json and learning_curves.png, say what was written."""
    model, history, epoch_times = run.model, done.history, done.epoch_times
    if done.best_epoch:
        best = NeuralNetwork.load(out / "best_model.npz", backend=cfg.backend)
        test_loss, test_acc = evaluate(best, load_test_set(cfg))
    else:
        test_loss = test_acc = float("nan")
    metrics = {
        "backend": cfg.backend, "dataset": cfg.dataset, "status": done.status,
        "test_accuracy": test_acc, "test_loss": test_loss,
        "best_val_accuracy": done.best_val if done.best_epoch else float("nan"), "best_epoch": done.best_epoch,
        "epochs_completed": len(history), "epoch_times_s": epoch_times, "compile_time_s": compile_time,
        "total_time_s": total_time,
        "seed": cfg.seed, "layer_sizes": model.layer_sizes, "num_parameters": model.num_parameters(),
        "train_samples": len(run.train_set), "val_samples": len(run.val_set) if run.val_set is not None else 0,
        "test_samples": run.n_test,
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
                             f"{cfg.dataset}, {'-'.join(map(str, model.layer_sizes))}, backend {cfg.backend}")
    written = ["best_model.npz", "history.csv", "learning_curves.png", "metrics.json"] if history else ["metrics.json"]
    log(f"wrote {out}/{{{', '.join(written)}}}")
    if epoch_times:
        log(f"epoch time: median {float(np.median(epoch_times)):.3f} s over {len(epoch_times)} epochs "
            f"({1e6 * float(np.median(epoch_times)) / len(run.train_set):.1f} us per training sample)")
    if done.best_epoch:
        log(f"test accuracy {100 * test_acc:.2f}% (best model, epoch {done.best_epoch}, val accuracy "
            f"{100 * done.best_val:.2f}%)" if run.val_set is not None else
            f"test accuracy {100 * test_acc:.2f}% (the last epoch's model, epoch {done.best_epoch}: "
            "no validation split)")
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
