"""A training run's settings: ``TrainConfig`` (every option of ``python -m fastnn.train``), the
recipe per dataset (``RECIPES``) and the learning-rate schedules."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["LR_SCHEDULES", "RECIPES", "TrainConfig", "learning_rate"]

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
    ``data``: an image folder (``fastnn.data.folders.load_folder_dataset``) instead of a named dataset;
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
    average_from: int | None = None  # weight averaging (SWA) of every epoch's weights from this epoch on
    corrupt: str = "none"          # training-time corruptions (fastnn.data.distort): the robust recipe
    input_norm: str = "none"       # "background": every image normalized (fastnn.data.normalize), here and after
    number_pieces: int = 0         # > 0: train a number reader on the pieces of this many composed numbers

    def __post_init__(self):
        recipe = RECIPES["folder"] if self.data else RECIPES.get(self.dataset, RECIPES["mnist"])
        for key, value in recipe.items():
            if getattr(self, key) is None:
                setattr(self, key, value)


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
