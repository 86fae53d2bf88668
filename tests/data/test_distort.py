"""The robust recipe's training-time corruptions (``fastnn.data.distort``) and the input
normalization (``fastnn.data.normalize``)."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn.data.distort import DISTORTIONS, CorruptedPool, distort, parse_distortions
from fastnn.data.normalize import normalize_background, normalize_images
from tests.data.test_corruptions import digits


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_each_kind_changes_every_image_and_is_seeded(kind):
    x = digits(16)
    a = distort(x, [kind], np.random.default_rng(4))
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, distort(x, [kind], np.random.default_rng(4)))
    changed = (a != x).reshape(len(x), -1).any(axis=1)
    assert changed.mean() >= 0.9, f"{kind} left {np.sum(~changed)} of {len(x)} images as they were"


def test_the_pool_draws_corrupted_copies_with_probability_p():
    x = digits(200)
    labels = np.arange(200) % 10
    pool = CorruptedPool(x, labels, ["blur", "noise"], seed=0)
    assert pool.images.shape == (400, 28, 28) and (pool.labels[:200] == pool.labels[200:]).all()
    np.testing.assert_array_equal(pool.images[:200], x)
    perm = np.random.default_rng(1).permutation(200)
    rows = pool.order(perm, 0.3, np.random.default_rng(2))
    assert ((rows % 200) == perm).all() and 0.2 < (rows >= 200).mean() < 0.4
    assert (pool.order(perm, 1.0, np.random.default_rng(2)) >= 200).all()


@pytest.mark.parametrize("spec, kinds, p", [("none", (), 0.0), ("blur,lines", ("blur", "lines"), 0.5),
                                            ("affine:p=0.25", ("affine",), 0.25)])
def test_specs_parse(spec, kinds, p):
    assert parse_distortions(spec) == (kinds, p)


@pytest.mark.parametrize("spec, message", [("snow", "unknown kind 'snow'"), ("blur:p=2", "0 < P <= 1"),
                                           ("blur:q=1", "write p=P"), (":p=0.5", "at least one kind")])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_distortions(spec)


def test_normalization_undoes_brightness_and_contrast_and_is_idempotent():
    x = digits(8).reshape(8, -1).astype(np.float32) / 255                           # (8, 784)
    np.testing.assert_allclose(normalize_background(x), x, atol=1e-6)              # MNIST-like: unchanged
    bright = np.clip(x + 0.3, 0, 1)
    np.testing.assert_allclose(normalize_background(bright), np.clip(x / 0.7, 0, 1), atol=1e-5)
    low = 0.3 * x + 0.4                                                            # contrast 0.3 about 0.4
    np.testing.assert_allclose(normalize_background(low), x, atol=1e-5)
    once = normalize_background(low)
    np.testing.assert_array_equal(normalize_background(once), once)
    assert normalize_background(np.full((2, 784), 0.5, np.float32)).max() == 0      # no ink: zeros
    assert normalize_images(digits(3)).dtype == np.uint8
