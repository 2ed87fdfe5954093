"""Confusion matrices and the scores computed from them: one implementation for the whole project.

`confusion_matrix` (NumPy) counts the pixels:

- rows are ground-truth classes, columns predicted classes, both `0..num_classes-1`;
- a pixel whose ground truth is `ignore_index` (or any value outside `0..num_classes-1`) is not
  counted;
- a pixel whose prediction is outside `0..num_classes-1` is not counted either. Predictions taken
  with argmax over the class axis are always in range; a label map that may hold other values
  (a void prediction, a label-id PNG) must be checked or mapped before it reaches these functions
  (evaluate.py checks every prediction file and names the one holding an unknown id).

No TensorFlow here: the evaluation path stays TF-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int = 19, ignore_index: int | None = 255
) -> np.ndarray:
    """Count (ground truth, prediction) pairs into a (C, C) int64 matrix, rows ground truth.

    Args:
        gt: ground-truth class ids of any shape (train ids for the 19-class setting).
        pred: predicted class ids, same shape as `gt`.
        num_classes: C; ids outside `0..C-1` in either array are not counted.
        ignore_index: ground-truth value never counted (255 by default). Kept for clarity:
            any id outside `0..C-1` is already left out.

    Returns:
        np.ndarray of int64, shape (C, C).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(
            f"ground truth and prediction differ in shape: got {gt.shape!r} and {pred.shape!r}"
        )
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
    num_classes = int(num_classes)
    if gt.size == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    if num_classes < 255:
        return _confusion_histogram(
            _as_uint8(gt, num_classes), _as_uint8(pred, num_classes), num_classes, ignore_index
        )
    gt = gt.ravel()
    pred = pred.ravel()
    valid = _in_range(gt, num_classes) & _in_range(pred, num_classes)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        valid &= gt != ignore_index
    index = gt[valid].astype(np.intp) * num_classes + pred[valid]
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


#: Pixels per OpenCV histogram call: its float32 bins count exactly up to 2**24.
_HISTOGRAM_CHUNK = 1 << 24


def _confusion_histogram(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """2-D histogram of uint8 (gt, pred) pairs with OpenCV (about 5x faster than bincount).

    Values outside 0..C-1 fall outside the histogram's range and are not counted.
    """
    import cv2  # on first use: importing this module stays cheap for the training loop

    gt = np.ascontiguousarray(gt).reshape(-1)
    pred = np.ascontiguousarray(pred).reshape(-1)
    mask = None
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        mask = (gt != ignore_index).view(np.uint8)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for start in range(0, gt.size, _HISTOGRAM_CHUNK):
        part = slice(start, start + _HISTOGRAM_CHUNK)
        hist = cv2.calcHist(
            [gt[part][None], pred[part][None]],
            [0, 1],
            None if mask is None else mask[part][None],
            [num_classes, num_classes],
            [0, num_classes, 0, num_classes],
        )
        cm += hist.astype(np.int64)
    return cm


def _as_uint8(values: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer ids as uint8, with every id outside 0..C-1 (C < 255) mapped to 255."""
    if values.dtype == np.uint8:
        return values
    inside = _in_range(values, num_classes)
    return np.where(inside, values, 255).astype(np.uint8)


def _in_range(values: np.ndarray, num_classes: int) -> np.ndarray:
    """Boolean mask of `0 <= values < num_classes` that avoids a signed compare on unsigned data."""
    if values.dtype.kind == "u":
        return values < num_classes
    if values.dtype.kind not in "iu":
        raise ValueError(f"class ids must be integers, got dtype {values.dtype}")
    return (values >= 0) & (values < num_classes)


def scores_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Per-class IoU, mean IoU and pixel accuracy of a (C, C) confusion matrix (rows ground truth).

    Args:
        cm: confusion matrix, rows ground truth, columns prediction.

    Returns:
        dict with `iou` (np.ndarray float64 (C,), NaN for a class absent from both ground truth
        and prediction), `mean_iou` (mean over the classes that are not NaN, as the official
        Cityscapes script averages; NaN if all are), `pixel_accuracy` (correct / counted pixels,
        NaN if none were counted), `class_accuracy` (per-class recall, NaN for classes absent
        from the ground truth) and `mean_class_accuracy`.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape!r}")
    tp = np.diag(cm)
    gt_total = cm.sum(axis=1)
    pred_total = cm.sum(axis=0)
    union = gt_total + pred_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(gt_total > 0, tp / gt_total, np.nan)
    total = cm.sum()
    return {
        "iou": iou,
        "mean_iou": _nanmean(iou),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "class_accuracy": recall,
        "mean_class_accuracy": _nanmean(recall),
    }


def _nanmean(values: np.ndarray) -> float:
    """Mean of the entries that are not NaN; NaN if there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
