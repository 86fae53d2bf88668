"""Shared fixtures: the real data folder (tests skip with a reason when it is absent) and torch; the
``--slow`` option (the tests marked slow skip without it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fastnn.data.datasets import DATASETS, default_data_dir

# Skip reasons of the optional extras: one line, naming what installs the package (.ci/run's full
# stage fails on any skip whose reason says "pip install" or "apt-get install").
TORCH_MISSING = "torch not installed: pip install torch==2.13.0, then pip install -e '.[torch]'"


def real_data_dir() -> Path | None:
    """The folder holding the real MNIST files, or None."""
    root = default_data_dir()
    files = DATASETS["mnist"].files.values()
    return root if all((root / "mnist" / fn).exists() for fn, _ in files) else None


SLOW_SKIPPED = "slow (an end-to-end run): python -m pytest --slow runs it, as CI's full stage does"


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow: whole commands, every documentation page and the "
                          "notebook, end to end on real MNIST (minutes; CI's full stage runs them)")


def pytest_collection_modifyitems(config, items):
    """Without --slow, the tests marked slow skip (the default run stays a few minutes long)."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason=SLOW_SKIPPED)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_dir():
    root = real_data_dir()
    if root is None:
        pytest.skip(f"real MNIST not found under {default_data_dir()} "
                    "(set FASTNN_DATA_DIR=/path/to/folder, or let fastnn download it)")
    return root


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch", reason=TORCH_MISSING)


@pytest.fixture(autouse=True)
def _no_gui(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
