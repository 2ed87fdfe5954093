"""Beyond mIoU: how far the softmax confidence can be trusted, how well uncertainty finds errors,
and recall and precision of the classes whose misses matter on a road or a track.

- `Calibration` accumulates, over any number of images, the pixel-level reliability histogram
  of the top-class softmax confidence (15 equal bins on [0, 1], as Guo et al., "On Calibration of
  Modern Neural Networks", ICML 2017) and gives the expected calibration error: the pixel-weighted
  mean over bins of |accuracy - mean confidence|.
- `ErrorDetection` accumulates histograms of an uncertainty score (Bayesian SegNet's Monte Carlo
  variance or predictive entropy, or 1 - confidence) over correct and wrong pixels and gives the
  area under the ROC curve of the score as a detector of wrong pixels: the probability that a
  wrong pixel is more uncertain than a right one (0.5: the score knows nothing of the errors,
  1.0: it ranks every wrong pixel above every right one).
  `aurc` is the area under its risk-coverage curve (Geifman and El-Yaniv, NeurIPS 2017): the
  error rate of the pixels kept when only the most certain are kept, averaged over every share
  kept (lower is better; the error rate itself when the score is no help).
- `safety_scores` reads recall and precision of the safety classes from a confusion matrix
  (`evaluation.metrics`, rows ground truth, columns prediction), of any class set
  (`safety_classes` names what stands for them in one: their categories for categories).

Pixels whose label is outside 0..num_classes-1 (ignore, 255) are left out everywhere. NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from utils.labels import CLASS_NAMES, LABELS

__all__ = [
    "SAFETY_CLASSES",
    "Calibration",
    "ErrorDetection",
    "safety_classes",
    "safety_scores",
]

#: The classes a missed pixel of which can hurt someone on a road or a track.
SAFETY_CLASSES = (
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "bicycle",
    "motorcycle",
    "traffic light",
    "traffic sign",
    "pole",
)


def _valid(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    return (labels >= 0) & (labels < num_classes)


class Calibration:
    """Reliability histogram of top-class confidence over pixels, and its ECE."""

    def __init__(self, num_bins: int = 15) -> None:
        if num_bins < 1:
            raise ValueError(f"calibration needs at least one bin, got {num_bins!r}")
        self.num_bins = int(num_bins)
        self.counts = np.zeros(num_bins, np.int64)
        self.confidence = np.zeros(num_bins, np.float64)  # sums per bin
        self.correct = np.zeros(num_bins, np.int64)

    def update(
        self, probabilities: np.ndarray, labels: np.ndarray, predictions: np.ndarray | None = None
    ) -> None:
        """Add one image or batch: class probabilities (..., C) summing to 1, labels (...).

        `predictions` (...): the classes predicted, when they are taken from scores the
        probabilities were computed from (softmax may round two near-equal top scores to a
        tie); default: the argmax of the probabilities."""
        probabilities = np.asarray(probabilities)
        labels = np.asarray(labels)
        if probabilities.shape[:-1] != labels.shape or (
            predictions is not None and np.shape(predictions) != labels.shape
        ):
            raise ValueError(
                f"probabilities {probabilities.shape} and labels {labels.shape} do not match "
                "(probabilities have one more, last, axis: the classes)"
            )
        keep = _valid(labels, probabilities.shape[-1])
        probabilities, labels = probabilities[keep], labels[keep]
        confidence = probabilities.max(axis=-1).astype(np.float64)
        if predictions is None:
            right = probabilities.argmax(axis=-1) == labels
        else:
            right = np.asarray(predictions)[keep] == labels
        # bins (k/n, (k+1)/n], confidence 0 in the first (Guo et al.'s convention)
        bins = np.clip(np.ceil(confidence * self.num_bins).astype(np.int64) - 1, 0, None)
        bins = np.minimum(bins, self.num_bins - 1)
        self.counts += np.bincount(bins, minlength=self.num_bins)
        self.confidence += np.bincount(bins, weights=confidence, minlength=self.num_bins)
        self.correct += np.bincount(bins, weights=right, minlength=self.num_bins).astype(np.int64)

    def ece(self) -> float:
        """Expected calibration error in [0, 1] (NaN before any valid pixel)."""
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        used = self.counts > 0
        gap = np.abs(self.correct[used] - self.confidence[used]) / self.counts[used]
        return float(np.sum(gap * self.counts[used]) / total)

    def table(self) -> list[dict[str, Any]]:
        """Per bin: lower and upper edge, pixels, mean confidence, accuracy (a reliability plot)."""
        rows = []
        for k in range(self.num_bins):
            n = int(self.counts[k])
            rows.append(
                {
                    "low": k / self.num_bins,
                    "high": (k + 1) / self.num_bins,
                    "pixels": n,
                    "confidence": float(self.confidence[k] / n) if n else float("nan"),
                    "accuracy": float(self.correct[k] / n) if n else float("nan"),
                }
            )
        return rows


class ErrorDetection:
    """Uncertainty of right and wrong pixels in histograms, and the AUROC of finding the wrong."""

    def __init__(self, high: float = 1.0, num_bins: int = 10000) -> None:
        """Scores are binned on [0, `high`] (larger ones go to the last bin)."""
        if not high > 0 or num_bins < 2:
            raise ValueError(
                f"error detection needs high > 0 and 2+ bins, got {high!r}, {num_bins!r}"
            )
        self.high, self.num_bins = float(high), int(num_bins)
        self.right = np.zeros(num_bins, np.int64)
        self.wrong = np.zeros(num_bins, np.int64)

    def update(
        self, uncertainty: np.ndarray, predictions: np.ndarray, labels: np.ndarray, num_classes: int
    ) -> None:
        """Add pixels: uncertainty score, predicted class and label, all of one shape."""
        uncertainty, predictions, labels = map(np.asarray, (uncertainty, predictions, labels))
        if not uncertainty.shape == predictions.shape == labels.shape:
            raise ValueError(
                f"uncertainty {uncertainty.shape}, predictions {predictions.shape} and labels "
                f"{labels.shape} must have one shape"
            )
        keep = _valid(labels, num_classes)
        score = np.clip(uncertainty[keep].astype(np.float64) / self.high, 0.0, 1.0)
        bins = np.minimum((score * self.num_bins).astype(np.int64), self.num_bins - 1)
        wrong = predictions[keep] != labels[keep]
        self.wrong += np.bincount(bins[wrong], minlength=self.num_bins)
        self.right += np.bincount(bins[~wrong], minlength=self.num_bins)

    def auroc(self) -> float:
        """P(a wrong pixel scores above a right one) + half the ties (NaN without both kinds)."""
        n_wrong, n_right = self.wrong.sum(), self.right.sum()
        if n_wrong == 0 or n_right == 0:
            return float("nan")
        right_below = np.cumsum(self.right) - self.right  # right pixels in lower bins
        above = np.sum(self.wrong * right_below) + 0.5 * np.sum(self.wrong * self.right)
        return float(above / (n_wrong * n_right))

    def aurc(self) -> float:
        """Area under the risk-coverage curve: the pixels ranked from the most certain, the
        error rate of the first k averaged over k = 1..N; ties (one bin) are kept or dropped
        together, so the risk is read at the end of each bin (NaN before any pixel)."""
        total = self.right + self.wrong
        n = total.sum()
        if n == 0:
            return float("nan")
        used = total > 0
        kept = np.cumsum(total)[used]
        risk = np.cumsum(self.wrong)[used] / kept
        return float(np.sum(risk * total[used]) / n)


def safety_classes(names: Sequence[str]) -> tuple[str, ...]:
    """The classes of a class set (`names`) that stand for SAFETY_CLASSES: each safety class
    it has, else the category that holds it (categories: object, human, vehicle), in order."""
    category = {label.name: label.category for label in LABELS}
    found: list[str] = []
    for name in SAFETY_CLASSES:
        stand_in = name if name in names else category[name]
        if stand_in in names and stand_in not in found:
            found.append(stand_in)
    return tuple(found)


def safety_scores(
    confusion: np.ndarray,
    classes: Sequence[str] = SAFETY_CLASSES,
    names: Sequence[str] = CLASS_NAMES,
) -> dict[str, dict[str, float]]:
    """Per safety class: recall (share of its pixels found) and precision (share of the pixels
    predicted as it that are it), NaN where the class has no pixel of that kind.

    `confusion` is over the classes `names` (default: the 19 of the benchmark), rows ground
    truth."""
    confusion = np.asarray(confusion, np.float64)
    names = list(names)
    if confusion.shape != (len(names), len(names)):
        raise ValueError(f"a {len(names)}-class confusion matrix is needed, got {confusion.shape}")
    scores = {}
    for name in classes:
        if name not in names:
            raise ValueError(f"unknown class {name!r}; the classes are {', '.join(names)}")
        k = names.index(name)
        hit, truth, predicted = confusion[k, k], confusion[k].sum(), confusion[:, k].sum()
        scores[name] = {
            "recall": float(hit / truth) if truth else float("nan"),
            "precision": float(hit / predicted) if predicted else float("nan"),
        }
    return scores


#: What evaluate.py writes under -r when it runs a model.
CALIBRATION_JSON = "calibration.json"


def _finite(value: float) -> float | None:
    """A finite float, or None (null in JSON) for NaN."""
    value = float(value)
    return value if np.isfinite(value) else None


def calibration_summary(
    calibration: Calibration | None,
    confusion: np.ndarray,
    names: Sequence[str],
    detection: ErrorDetection | None = None,
    samples: int | None = None,
) -> dict[str, Any]:
    """The ``calibration.json`` record (NaN written as null).

    Args:
        calibration: the pixels' reliability histogram (None: the model gave no scores, an
            ``--argmax`` export: "ece" is null).
        confusion: (C, C) confusion matrix over the class set `names`, rows ground truth.
        names: the classes of the confusion matrix.
        detection: Monte Carlo uncertainty against the error map (bayes_segnet
            --mc-samples), or None.
        samples: the Monte Carlo samples of `detection`.

    Returns:
        {"ece", "bins", "reliability": [per bin], "safety": {class: {"recall", "precision"}},
        "safety_mean_recall", "mc": None | {"samples", "auroc", "aurc"}}.
    """
    classes = safety_classes(names)
    safety = safety_scores(confusion, classes, names)
    recalls = [v["recall"] for v in safety.values() if np.isfinite(v["recall"])]
    return {
        "ece": None if calibration is None else _finite(calibration.ece()),
        "bins": 15 if calibration is None else calibration.num_bins,
        "reliability": []
        if calibration is None
        else [
            {k: _finite(v) if isinstance(v, float) else v for k, v in row.items()}
            for row in calibration.table()
        ],
        "safety": {
            name: {k: _finite(v) for k, v in scores.items()} for name, scores in safety.items()
        },
        "safety_mean_recall": _finite(np.mean(recalls)) if recalls else None,
        "mc": None
        if detection is None
        else {
            "samples": int(samples or 0),
            "auroc": _finite(detection.auroc()),
            "aurc": _finite(detection.aurc()),
        },
    }
