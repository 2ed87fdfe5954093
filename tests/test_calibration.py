"""evaluation/calibration.py on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.calibration import SAFETY_CLASSES, Calibration, ErrorDetection, safety_scores
from utils.labels import CLASS_NAMES


def test_ece_of_a_hand_computed_case():
    probabilities = np.array(
        [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45], [0.7, 0.3], [0.28, 0.72]]
    )
    labels = np.array([0, 1, 0, 255, 0, 0])  # the 255 pixel is ignored
    calibration = Calibration(15)
    calibration.update(probabilities[:3], labels[:3])  # in two calls: it accumulates
    calibration.update(probabilities[3:], labels[3:])
    # bins (k/15, (k+1)/15]: 0.9 -> 13 (right), 0.8 -> 11 (wrong), 0.6 -> 8 (right), 0.7 and
    # 0.72 -> 10 (one right, one wrong: accuracy 0.5, confidence 0.71)
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.6) + 2 * abs(0.5 - 0.71)) / 5
    assert calibration.ece() == pytest.approx(expected)
    rows = calibration.table()
    assert [r["pixels"] for r in rows] == [0] * 8 + [1, 0, 2, 1, 0, 1, 0]
    assert rows[10]["accuracy"] == 0.5 and rows[10]["confidence"] == pytest.approx(0.71)
    perfect = Calibration()
    perfect.update(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
    assert perfect.ece() == 0.0
    assert np.isnan(Calibration().ece())
    with pytest.raises(ValueError, match="do not match"):
        calibration.update(probabilities, labels[:2])


def test_error_detection_auroc_counts_pairs_and_half_the_ties():
    detection = ErrorDetection(high=1.0, num_bins=100)
    labels = np.array([0, 0, 1, 1, 1, 255])
    predictions = np.array([1, 0, 0, 1, 1, 0])  # wrong, right, wrong, right, right, ignored
    uncertainty = np.array([0.905, 0.105, 0.505, 0.505, 0.705, 0.99])
    detection.update(uncertainty, predictions, labels, num_classes=19)
    # wrong 0.905 is above all 3 right ones; wrong 0.505 is above 0.105, ties 0.505, below 0.705
    assert detection.auroc() == pytest.approx((3 + 1 + 0.5) / 6)
    ranked = ErrorDetection()
    ranked.update(np.array([0.9, 0.1]), np.array([1, 0]), np.array([0, 0]), 19)
    assert ranked.auroc() == 1.0
    only_right = ErrorDetection()
    only_right.update(np.array([0.3]), np.array([0]), np.array([0]), 19)
    assert np.isnan(only_right.auroc())


def test_safety_recall_and_precision_from_a_confusion_matrix():
    cm = np.zeros((19, 19), np.int64)
    person, road = CLASS_NAMES.index("person"), CLASS_NAMES.index("road")
    cm[person, person] = 30  # 30 person pixels found
    cm[person, road] = 10  # 10 missed as road
    cm[road, person] = 20  # 20 road pixels called person
    scores = safety_scores(cm)
    assert set(scores) == set(SAFETY_CLASSES)
    assert scores["person"] == {"recall": 30 / 40, "precision": 30 / 50}
    assert np.isnan(scores["rider"]["recall"]) and np.isnan(scores["rider"]["precision"])
    with pytest.raises(ValueError, match="unknown class 'tram'"):
        safety_scores(cm, ["tram"])
