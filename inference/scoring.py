"""A segmenter scored on a Cityscapes split: official metrics, calibration, safety classes and,
on request, robustness to corruptions (what evaluate.py -m/--onnx computes).

Each photo is decoded once; the model runs on it once per setting: the clean photo, then each
corruption at each severity (`datasets.corruptions`, corrupted in memory with the seed
`corruption_seed(seed, image index, corruption, severity)`, so every run sees the same
images). Each setting has its own official accumulator (`evaluation.cityscapes_eval`, over the
segmenter's class set). On the clean photos the class probabilities at the ground truth's
resolution feed the calibration histogram (15 bins) and, for Monte Carlo dropout, the
uncertainty against the error map (`evaluation.calibration`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from datasets.cityscapes import read_image
from datasets.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruption_seed
from evaluation.calibration import Calibration, ErrorDetection, calibration_summary
from evaluation.cityscapes_eval import (
    PixelLevelAccumulator,
    ground_truth_files,
    image_path,
    instance_path,
    label_tables,
    pair_stats,
    read_ground_truth,
)
from evaluation.class_sets import class_confusion
from evaluation.robustness import robustness_summary
from inference.segmenter import Segmenter
from utils.errors import BadInput
from utils.resize import resize_map

__all__ = ["ModelScores", "check_corruptions", "score_segmenter"]

#: Monte Carlo variance (the mean over classes of a probability's variance) is at most 1/4.
MC_VARIANCE_MAX = 0.25


@dataclasses.dataclass
class ModelScores:
    """What `score_segmenter` measured."""

    result: dict[str, Any]  #: official result dictionary of the clean images
    calibration: dict[str, Any]  #: calibration.json (evaluation.calibration_summary)
    robustness: dict[str, Any] | None  #: robustness.json, None without corruptions
    corrupted: dict[tuple[str, int], dict[str, Any]]  #: official result of each setting
    num_images: int


def check_corruptions(names: Sequence[str], severities: Sequence[int]) -> None:
    """BadInput naming an unknown corruption or a severity outside 1-5."""
    for name in names:
        if name not in CORRUPTIONS:
            raise BadInput(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    for severity in severities:
        if isinstance(severity, bool) or severity not in SEVERITIES:
            raise BadInput(f"corruption severities are 1-5, got {severity!r}")


def score_segmenter(
    segmenter: Segmenter,
    root: str,
    split: str = "val",
    corruptions: Sequence[str] = (),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ModelScores:
    """Score `segmenter` on `split` of `root`, clean and under each corruption and severity.

    Args:
        segmenter: the model (its class set is the one scored).
        root: Cityscapes root with gtFine/ and leftImg8bit/.
        split: the split whose ground truth is scored.
        corruptions: names of `datasets.corruptions.CORRUPTIONS` (none: clean images only).
        severities: severities 1-5 of each corruption.
        seed: the corruptions' base seed.
        batch: photos per model call.
        progress: called with the number of (image, setting) runs just done.

    Raises:
        BadInput: a bad corruption or severity, a missing image, a bad ground-truth file.
    """
    check_corruptions(corruptions, severities)
    gts = ground_truth_files(root, split)
    images = [image_path(gt) for gt in gts]
    for gt, image in zip(gts, images, strict=True):
        if not image.is_file():
            raise BadInput(f"no image {str(image)!r} for ground truth {gt!r}")
    class_set = segmenter.class_set
    tables = label_tables(class_set.name)
    settings: list[tuple[str, int]] = [("clean", 0)]
    settings += [(name, int(s)) for name in corruptions for s in severities]
    scores = {setting: PixelLevelAccumulator(tables) for setting in settings}
    calibration = Calibration(15) if segmenter.gives_scores else None
    mc = segmenter.mc_samples is not None
    detection = ErrorDetection(high=MC_VARIANCE_MAX) if mc else None
    for start in range(0, len(gts), batch):
        chunk = list(range(start, min(start + batch, len(gts))))
        photos = [read_image(images[i]) for i in chunk]
        truths = [read_ground_truth(gts[i]) for i in chunk]
        for name, severity in settings:
            clean = severity == 0
            inputs = photos
            if not clean:
                inputs = [
                    corrupt(photo, name, severity, corruption_seed(seed, i, name, severity))
                    for i, photo in zip(chunk, photos, strict=True)
                ]
            results = segmenter.predict(inputs, probabilities=clean and calibration is not None)
            for i, result, (gt, inst) in zip(chunk, results, truths, strict=True):
                class_ids = resize_map(result.train_ids, gt.shape, nearest=True)
                where = "" if clean else f" under {name} at severity {severity}"
                names = (
                    f"model output for {str(images[i])!r}{where}",
                    repr(gts[i]),
                    repr(instance_path(gts[i])),
                )
                pred = class_set.label_ids(class_ids)
                scores[name, severity].add(pair_stats(pred, gt, inst, names=names, tables=tables))
                if clean:
                    labels = class_set.from_label_ids[gt]
                    _add_calibration(calibration, detection, result, class_ids, labels)
            if progress is not None:
                progress(len(chunk))
    clean_result = scores["clean", 0].result()
    counts, _ = class_confusion(np.asarray(clean_result["confMatrix"]), class_set)
    summary = calibration_summary(
        calibration, counts, class_set.names, detection, segmenter.mc_samples
    )
    corrupted = {setting: acc.result() for setting, acc in scores.items() if setting[1] > 0}
    robustness = None
    if corruptions:
        miou = {
            name: {s: corrupted[name, s]["averageScoreClasses"] for s in severities}
            for name in corruptions
        }
        robustness = robustness_summary(clean_result["averageScoreClasses"], miou, seed, severities)
    return ModelScores(clean_result, summary, robustness, corrupted, len(gts))


def _add_calibration(
    calibration: Calibration | None,
    detection: ErrorDetection | None,
    result: Any,
    class_ids: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Add one clean image's probabilities (and uncertainty) at the ground truth's size (that of
    `labels`: class indices, 255 where the class set scores nothing)."""
    size = labels.shape
    if calibration is not None:
        probabilities = result.probabilities
        if probabilities.shape[:2] != tuple(size):
            probabilities = resize_map(probabilities, size)
            if probabilities.ndim == 2:
                probabilities = probabilities[..., None]
        calibration.update(probabilities, labels, class_ids)
    if detection is not None and result.uncertainty is not None:
        uncertainty = resize_map(result.uncertainty, size)
        detection.update(uncertainty, class_ids, labels, num_classes=255)
