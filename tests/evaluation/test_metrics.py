"""fastnn.evaluation.metrics against scikit-learn (the oracle), on random inputs and the 0/0 edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn.evaluation import metrics

sk = pytest.importorskip("sklearn.metrics")


@st.composite
def label_pairs(draw):
    c = draw(st.integers(1, 8))
    n = draw(st.integers(1, 60))
    labels = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    preds = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    return labels, preds, c


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
@settings(max_examples=60, deadline=None)
@given(label_pairs())
def test_report_matches_sklearn(case):
    labels, preds, c = case
    rep = metrics.classification_report(labels, preds, c)
    classes = list(range(c))
    p, r, f, s = sk.precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    got = rep["per_class"]
    assert len(got) == c
    np.testing.assert_allclose([g["precision"] for g in got], p, atol=1e-12)
    np.testing.assert_allclose([g["recall"] for g in got], r, atol=1e-12)
    np.testing.assert_allclose([g["f1"] for g in got], f, atol=1e-12)
    assert [g["support"] for g in got] == list(s)
    for avg in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(labels, preds, labels=classes, average=avg, zero_division=0)
        np.testing.assert_allclose([rep[avg]["precision"], rep[avg]["recall"], rep[avg]["f1"]], [p, r, f], atol=1e-12)
    assert rep["accuracy"] == pytest.approx(sk.accuracy_score(labels, preds))
    np.testing.assert_array_equal(rep["confusion_matrix"], sk.confusion_matrix(labels, preds, labels=classes))
    np.testing.assert_allclose(metrics.normalize_rows(rep["confusion_matrix"]),
                               np.nan_to_num(sk.confusion_matrix(labels, preds, labels=classes, normalize="true")))


def test_edge_cases_are_zero_with_a_note():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 0, 0, 0])                    # class 1 never predicted; class 2 absent everywhere
    rep = metrics.classification_report(labels, preds, num_classes=3, class_names=["a", "b", "c"])
    assert rep["per_class"][1]["precision"] == 0 and rep["per_class"][2]["recall"] == 0
    assert rep["per_class"][2]["f1"] == 0 and rep["per_class"][2]["support"] == 0
    assert any("b is never predicted" in n for n in rep["notes"])
    assert any("c has no samples" in n for n in rep["notes"])
    cm = metrics.confusion_matrix(labels, preds, 3)
    assert cm.shape == (3, 3) and cm.dtype == np.int64 and cm.sum() == 4
    assert metrics.normalize_rows(cm)[2].tolist() == [0, 0, 0]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_matrix(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 2\)"):
        metrics.confusion_matrix(np.zeros(3, int), np.array([0, 1, 5]), 2)
    with pytest.raises(TypeError, match="integers"):
        metrics.accuracy(np.zeros(3), np.zeros(3))


def test_most_confused_pairs():
    cm = np.array([[5, 3, 0], [0, 4, 7], [1, 0, 2]])
    assert metrics.most_confused_pairs(cm, 2) == [(1, 2, 7), (0, 1, 3)]


def test_reliability_and_ece():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    rel = metrics.reliability(probs, labels, n_bins=10)
    assert len(rel["count"]) == 10 and sum(rel["count"]) == 4
    # bins: 0.6 -> [0.5,0.6], 0.7 -> (0.6,0.7], 0.8 -> (0.7,0.8], 0.9 -> (0.8,0.9]
    expected = (abs(1 - 0.6) + abs(1 - 0.7) + abs(0 - 0.8) + abs(1 - 0.9)) / 4
    assert rel["ece"] == pytest.approx(expected)
    perfect = metrics.reliability(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]))
    assert perfect["ece"] == pytest.approx(0.0)


def test_dead_unit_fraction():
    acts = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    assert metrics.dead_unit_fraction(acts) == 0.5
    with pytest.raises(ValueError, match="shape"):
        metrics.dead_unit_fraction(np.zeros(3))
