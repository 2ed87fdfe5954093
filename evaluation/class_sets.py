"""The official result dictionary for a class set (`utils.labels.CLASS_SETS`), and its confusion.

The official metrics are computed on label ids (`evaluation.cityscapes_eval`) for every class
set; a class set only decides which label ids are scored (rail20 adds rail track) and, for
categories, that the classes are the categories. So:

- cityscapes19 and rail20: the class keys (``classScores``, ``averageScoreClasses``, ...) hold
  the scores of the label ids the set scores, as the official script computes them;
- categories: the class keys hold the category scores (``categoryScores``: a category's IoU
  counts every pixel of its labels, as the official category score does), so that
  ``averageScoreClasses`` is the mean IoU of the 7 classes the model predicts.

Every result carries ``classSet``. NumPy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from utils.labels import ClassSet, get_class_set

__all__ = ["class_confusion", "class_set_result"]


def _average(scores: dict[str, float]) -> float:
    """Mean of the scores that are not NaN (the official average)."""
    values = [v for v in scores.values() if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def class_set_result(result: dict[str, Any], class_set: str) -> dict[str, Any]:
    """`result` (official keys, computed with `class_set`'s label tables) with ``classSet`` and,
    for categories, the category scores under the class keys."""
    result = dict(result, classSet=class_set)
    if class_set != "categories":
        return result
    names = get_class_set(class_set).names
    result["classScores"] = {c: result["categoryScores"][c] for c in names}
    result["classInstScores"] = {c: result["categoryInstScores"][c] for c in names}
    result["averageScoreClasses"] = _average(result["classScores"])
    result["averageScoreInstClasses"] = _average(result["classInstScores"])
    return result


def class_confusion(label_confusion: np.ndarray, class_set: ClassSet) -> tuple[np.ndarray, ...]:
    """A label-id confusion matrix (rows ground truth) summed onto `class_set`'s classes.

    Returns:
        (C, C) int64 counts of the scored ground-truth pixels by predicted class, and (C,) the
        pixels of each class predicted as a label id the set does not score (void).
    """
    cm = np.asarray(label_confusion, dtype=np.int64)
    num = class_set.num_classes
    index = class_set.from_label_ids[: cm.shape[0]].astype(np.intp)
    rows = np.zeros((num, cm.shape[1]), np.int64)
    scored = index < num
    np.add.at(rows, index[scored], cm[scored])
    out = np.zeros((num, num), np.int64)
    np.add.at(out.T, index[scored], rows.T[scored])
    return out, rows[:, ~scored].sum(axis=1)
