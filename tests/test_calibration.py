"""evaluation/calibration.py on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.calibration import (
    SAFETY_CLASSES,
    Calibration,
    ErrorDetection,
    calibration_summary,
    safety_classes,
    safety_scores,
)
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
    # the model's own predictions decide what is right: a tie goes the model's way
    tie = Calibration(15)
    tie.update(np.array([[0.5, 0.5]]), np.array([1]), predictions=np.array([1]))
    assert tie.ece() == pytest.approx(0.5) and tie.table()[7]["accuracy"] == 1.0


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


def test_aurc_is_the_mean_risk_of_the_most_certain_pixels():
    detection = ErrorDetection(high=1.0, num_bins=100)
    labels = np.array([0, 0, 0, 0, 255])
    predictions = np.array([0, 1, 0, 1, 1])  # right, wrong, right, wrong, ignored
    uncertainty = np.array([0.105, 0.305, 0.505, 0.905, 0.0])
    detection.update(uncertainty, predictions, labels, num_classes=19)
    # kept from the most certain: right, wrong, right, wrong: risks 0, 1/2, 1/3, 2/4
    assert detection.aurc() == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)
    tied = ErrorDetection(high=1.0, num_bins=10)  # one bin: kept or dropped together
    tied.update(np.array([0.51, 0.52]), np.array([0, 1]), np.array([0, 0]), 19)
    assert tied.aurc() == pytest.approx(0.5)
    assert np.isnan(ErrorDetection().aurc())


def test_safety_classes_of_each_class_set():
    from utils.labels import CLASS_SETS

    assert safety_classes(CLASS_SETS["cityscapes19"].names) == SAFETY_CLASSES
    assert safety_classes(CLASS_SETS["rail20"].names) == SAFETY_CLASSES
    # categories: the categories of person/rider, the vehicles, and light/sign/pole
    assert safety_classes(CLASS_SETS["categories"].names) == ("human", "vehicle", "object")
    names = CLASS_SETS["categories"].names
    cm = np.zeros((7, 7), np.int64)
    human, flat = names.index("human"), names.index("flat")
    cm[human, human], cm[human, flat], cm[flat, human] = 8, 2, 8
    scores = safety_scores(cm, ("human",), names)
    assert scores["human"] == {"recall": 0.8, "precision": 0.5}


def test_summary_holds_the_ece_of_its_calibration_and_the_safety_figures():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    calibration = Calibration(15)
    calibration.update(probabilities, np.array([0, 1, 0]))
    cm = np.zeros((19, 19), np.int64)
    person, car = CLASS_NAMES.index("person"), CLASS_NAMES.index("car")
    cm[person, person], cm[car, car], cm[car, person] = 3, 1, 1
    detection = ErrorDetection()
    detection.update(np.array([0.2, 0.1]), np.array([1, 0]), np.array([0, 0]), 19)
    summary = calibration_summary(calibration, cm, CLASS_NAMES, detection, samples=4)
    assert summary["ece"] == calibration.ece() and summary["bins"] == 15
    assert summary["safety"]["person"] == {"recall": 1.0, "precision": 0.75}
    assert summary["safety"]["car"] == {"recall": 0.5, "precision": 1.0}
    assert summary["safety"]["rider"] == {"recall": None, "precision": None}  # NaN -> null
    assert summary["safety_mean_recall"] == pytest.approx(0.75)  # of the classes present
    # the right pixel (0.1) is kept first, then the wrong one: risks 0 and 1/2
    assert summary["mc"] == {"samples": 4, "auroc": 1.0, "aurc": 0.25}
    assert len(summary["reliability"]) == 15 and summary["reliability"][13]["pixels"] == 1
    none = calibration_summary(None, cm, CLASS_NAMES)
    assert none["ece"] is None and none["mc"] is None
