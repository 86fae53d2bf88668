"""Shared fixtures: the real data folder (tests skip with a reason when it is absent) and torch."""
from __future__ import annotations

from pathlib import Path

import pytest

from fastnn.data import DATASETS, default_data_dir


def real_data_dir() -> Path | None:
    """The folder holding the real MNIST files, or None."""
    root = default_data_dir()
    files = DATASETS["mnist"].files.values()
    return root if all((root / "mnist" / fn).exists() for fn, _ in files) else None


@pytest.fixture(scope="session")
def mnist_dir():
    root = real_data_dir()
    if root is None:
        pytest.skip(f"real MNIST not found under {default_data_dir()} "
                    "(set FASTNN_DATA_DIR=../shared/data or let fastnn download it)")
    return root


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch", reason="torch not installed (pip install torch==2.13.0)")


@pytest.fixture(autouse=True)
def _no_gui(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
