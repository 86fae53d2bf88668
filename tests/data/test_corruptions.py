"""The corruptions of the robustness benchmark (``fastnn.data.corruptions``): deterministic, every kind
changes the images and more so as the severity grows, bad arguments get clear errors."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from fastnn.common.errors import UserError
from fastnn.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt

ROBUST_MISSING = "scikit-image not installed: pip install -e '.[robust]'"


def _require_skimage():
    try:                                      # ImportError too: pytest 9's importorskip skips only ModuleNotFound
        import skimage  # noqa: F401
    except ImportError:
        pytest.skip(ROBUST_MISSING)


def digits(n=12, seed=0):
    """n made-up 'digits': a bright ring or bar on black, at random places (N, 28, 28) uint8."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:28, :28]
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(10, 18, size=2)
        radius = np.hypot(rows - r, cols - c)
        images[i][(radius > 4) & (radius < 7)] = 255
        images[i, r - 8:r + 8, c:c + 2] = 200
    return images


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_kind_is_deterministic_and_changes_the_images(name):
    _require_skimage()
    x = digits()
    changes = []
    for s in SEVERITIES:
        a = corrupt(x, name, s, seed=3)
        assert a.shape == x.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, corrupt(x, name, s, seed=3))
        changes.append(np.abs(a.astype(int) - x).mean())
        assert changes[-1] > 0, f"{name} at severity {s} left the images as they were"
    assert changes[-1] > changes[0], f"{name}: severity 3 changes less than severity 1 ({changes})"
    np.testing.assert_array_equal(x, digits())                                   # the input is not touched


@pytest.mark.parametrize("name", ["shot_noise", "rotate", "zigzag", "fog"])
def test_another_seed_gives_other_images(name):
    _require_skimage()
    x = digits()
    assert (corrupt(x, name, 2, seed=0) != corrupt(x, name, 2, seed=1)).any()


def test_bad_arguments_get_clear_errors():
    _require_skimage()
    x = digits(2)
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        corrupt(x, "snow", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(x, "fog", 4)
    with pytest.raises(ValueError, match=r"\(N, H, W\) uint8"):
        corrupt(x.astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match=r"\(N, H, W\) uint8"):
        corrupt(x.reshape(2, -1), "fog", 1)
    assert corrupt(x[:0], "fog", 1).shape == (0, 28, 28)


def test_a_missing_scikit_image_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)                        # import skimage -> ImportError
    with pytest.raises(UserError, match=r"pip install -e \"\.\[robust\]\""):
        corrupt(digits(2), "fog", 1)
