"""evaluation.metrics (confusion matrices, scores) and utils.visualize (palette, overlay, panel)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from evaluation.metrics import confusion_matrix, scores_from_confusion
from utils import visualize

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _reference_confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel-by-pixel loop: the independent reference."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if 0 <= g < num_classes and 0 <= p < num_classes:
            cm[g, p] += 1
    return cm


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 19, size=(2, 24, 40)).astype(np.uint8)
    pred = rng.integers(0, 19, size=(2, 24, 40)).astype(np.uint8)
    gt[:, :4] = 255  # ignore region
    gt[gt == 7] = 3  # class 7 absent from ground truth (but predicted)
    pred[pred == 9] = 10
    gt[gt == 9] = 10  # class 9 absent from both
    return gt, pred


def test_confusion_matrix_matches_loop(pair):
    gt, pred = pair
    cm = confusion_matrix(gt, pred)
    assert cm.dtype == np.int64 and cm.shape == (19, 19)
    np.testing.assert_array_equal(cm, _reference_confusion(gt, pred, 19))
    assert cm.sum() == np.count_nonzero(gt != 255)


def test_confusion_matrix_out_of_range_prediction_not_counted():
    gt = np.array([[0, 1, 2, 255]], dtype=np.int32)
    pred = np.array([[0, 19, -1, 1]], dtype=np.int32)
    cm = confusion_matrix(gt, pred)
    assert cm.sum() == 1 and cm[0, 0] == 1


def test_confusion_matrix_rejects_shape_mismatch_and_floats():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="integers"):
        confusion_matrix(np.zeros((2, 3)), np.zeros((2, 3)))


def test_scores_from_confusion(pair):
    gt, pred = pair
    scores = scores_from_confusion(confusion_matrix(gt, pred))
    iou = scores["iou"]
    assert np.isnan(iou[9])  # absent from ground truth and prediction
    assert iou[7] == 0.0  # absent from ground truth only: predicted, so a real zero
    valid = gt != 255
    for c in (0, 5, 18):
        inter = np.count_nonzero(valid & (gt == c) & (pred == c))
        union = np.count_nonzero(valid & ((gt == c) | (pred == c)))
        assert iou[c] == pytest.approx(inter / union)
    assert scores["mean_iou"] == pytest.approx(np.nanmean(iou))
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(gt[valid] == pred[valid]))
    empty = scores_from_confusion(np.zeros((3, 3), np.int64))
    assert np.isnan(empty["mean_iou"]) and np.isnan(empty["pixel_accuracy"])


def test_colorize_uses_cityscapes_palette():
    from cityscapesscripts.helpers.labels import trainId2label

    ids = np.array([[0, 13, 255], [18, 10, 200]], dtype=np.uint8)
    rgb = visualize.colorize(ids)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == trainId2label[0].color == (128, 64, 128)
    assert tuple(rgb[0, 1]) == trainId2label[13].color
    assert tuple(rgb[1, 0]) == trainId2label[18].color
    assert tuple(rgb[0, 2]) == (0, 0, 0) and tuple(rgb[1, 2]) == (0, 0, 0)
    np.testing.assert_array_equal(visualize.colorize(ids.astype(np.int64)), rgb)


def test_overlay_blends_and_checks_sizes():
    image = np.full((4, 5, 3), 100, np.uint8)
    color = np.full((4, 5, 3), 200, np.uint8)
    assert (visualize.overlay(image, color, 0.25) == 125).all()
    assert (visualize.overlay(image, color, 0.0) == 100).all()
    with pytest.raises(ValueError, match="alpha"):
        visualize.overlay(image, color, 1.5)
    with pytest.raises(ValueError, match="one size"):
        visualize.overlay(image, color[:2], 0.5)


def test_panel_and_heatmap():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    pred = np.zeros((32, 64), np.uint8)
    pred[:, 32:] = 13
    gt = np.full((32, 64), 255, np.uint8)
    gt[:16] = 0
    picture = visualize.panel(image, pred, gt, title="x")
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8
    assert [name for name, _ in visualize.legend_entries([pred, gt])] == ["road", "car"]
    heat = visualize.heatmap(np.linspace(0, 1, 32 * 64).reshape(32, 64))
    assert heat.shape == (32, 64, 3) and heat.dtype == np.uint8
    assert not (heat[0, 0] == heat[-1, -1]).all()


def test_confusion_matrix_many_classes_and_chunks(monkeypatch):
    import evaluation.metrics as metrics

    rng = np.random.default_rng(3)
    gt = rng.integers(0, 300, size=(40, 50)).astype(np.int32)
    pred = rng.integers(-5, 305, size=(40, 50)).astype(np.int64)
    np.testing.assert_array_equal(
        confusion_matrix(gt, pred, num_classes=300, ignore_index=None),
        _reference_confusion(gt, pred, 300),
    )  # bincount path
    small_gt = (gt % 21).astype(np.uint8)
    small_pred = (pred % 19).astype(np.int16)
    expected = confusion_matrix(small_gt, small_pred)
    monkeypatch.setattr(metrics, "_HISTOGRAM_CHUNK", 7)  # many OpenCV calls, summed
    np.testing.assert_array_equal(confusion_matrix(small_gt, small_pred), expected)
    np.testing.assert_array_equal(
        expected, _reference_confusion(np.where(small_gt < 19, small_gt, 255), small_pred, 19)
    )
    # an ignore_index inside the class range is left out too
    cm = confusion_matrix(small_gt, small_pred, num_classes=19, ignore_index=0)
    assert cm[0].sum() == 0 and cm.sum() == np.count_nonzero((small_gt > 0) & (small_gt < 19))
