"""The official Cityscapes pixel-level evaluation, computed fast and without TensorFlow.

Reproduces cityscapesscripts' ``evalPixelLevelSemanticLabeling`` (version 2.3.0): the 34x34
label-id confusion matrix, IoU per class and per category, instance-weighted iIoU (with the
official average class sizes, ``args.avgClassSize`` of that module) and their averages, with the
same result keys. The official script loops over images and instances in Python and calls
``np.in1d``, which NumPy 2.4 removed; here each image is one 2-D histogram (the confusion
matrix, `utils.metrics.confusion_matrix`) and a few bincounts over its instance pixels, images are
decoded in parallel worker processes, and the weighted instance scores are summed in the same
order as the official script, so the numbers agree to rounding (tested to 1e-9).

Matching follows the official ``getPrediction``: the prediction of
``CITY_SEQ_FRAME_gtFine_labelIds.png`` is the one PNG under the prediction folder whose name
starts with ``CITY_SEQ_FRAME``. Bad input raises ValueError naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from utils.io import read_png as decode_png
from utils.io import reuse_freed_buffers
from utils.machine import available_cores, machine_info
from utils.metrics import confusion_matrix
from utils.timing import dense_peak

#: Instance ids at or below this value are not instances (official: ``instanceNp > 1000``).
INSTANCE_OFFSET = 1000
GT_SUFFIX = "_gtFine_labelIds.png"
#: Output names written by evaluate.py under -r (the JSON has the official name and keys).
RESULT_JSON = "resultPixelLevelSemanticLabeling.json"
RESULT_MARKDOWN = "evaluation.md"
RESULT_PLOT = "confusion_matrix.png"


@dataclasses.dataclass(frozen=True)
class LabelTables:
    """What the official script derives from ``cityscapesscripts.helpers.labels``, as arrays."""

    #: Label ids that are evaluated at all (official ``args.evalLabels``: every id >= 0).
    eval_ids: tuple[int, ...]
    #: Name of each label id.
    names: tuple[str, ...]
    #: bool[num_ids]: ``ignoreInEval`` of each label id.
    ignored: np.ndarray
    #: Category names in the official order (``category2labels``).
    categories: tuple[str, ...]
    #: int[num_ids]: index into `categories` of each label id.
    category_of: np.ndarray
    #: Label ids with instances that are scored (``hasInstances and not ignoreInEval``).
    instance_ids: tuple[int, ...]
    #: Categories whose labels all have instances -> their label ids (official instance stats).
    instance_categories: dict[str, tuple[int, ...]]
    #: float64[num_ids]: official average instance size per label id (NaN where none).
    avg_size: np.ndarray
    #: uint8[256]: category index of label ids that have instances, 255 for every other value.
    instance_category_lut: np.ndarray

    @property
    def num_ids(self) -> int:
        """Size of the confusion matrix (34: label ids 0..33)."""
        return max(self.eval_ids) + 1


@functools.lru_cache(maxsize=1)
def label_tables() -> LabelTables:
    """The label tables, built once from cityscapesscripts."""
    from cityscapesscripts.helpers.labels import category2labels, labels

    eval_ids = tuple(label.id for label in labels if label.id >= 0)
    num_ids = max(eval_ids) + 1
    by_id = {label.id: label for label in labels if label.id >= 0}
    names = tuple(by_id[i].name if i in by_id else "" for i in range(num_ids))
    ignored = np.array([by_id[i].ignoreInEval if i in by_id else True for i in range(num_ids)])
    categories = tuple(category2labels)
    category_of = np.array(
        [categories.index(by_id[i].category) if i in by_id else -1 for i in range(num_ids)]
    )
    instance_ids = tuple(i for i in eval_ids if by_id[i].hasInstances and not by_id[i].ignoreInEval)
    instance_categories: dict[str, tuple[int, ...]] = {}
    for category, members in category2labels.items():
        valid = [label for label in members if label.id >= 0]
        if all(label.hasInstances for label in valid):
            instance_categories[category] = tuple(label.id for label in valid)
    avg = official_average_class_sizes()
    avg_size = np.array([avg.get(names[i], math.nan) for i in range(num_ids)], dtype=np.float64)
    lut = np.full(256, 255, dtype=np.uint8)
    for i in eval_ids:
        if by_id[i].hasInstances:
            lut[i] = category_of[i]
    for array in (ignored, category_of, avg_size, lut):
        array.flags.writeable = False
    return LabelTables(
        eval_ids,
        names,
        ignored,
        categories,
        category_of,
        instance_ids,
        instance_categories,
        avg_size,
        lut,
    )


@functools.lru_cache(maxsize=1)
def official_average_class_sizes() -> dict[str, float]:
    """``args.avgClassSize`` of the official module: mean instance size of each instance class."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    return dict(official.args.avgClassSize)


@functools.lru_cache(maxsize=1)
def _train_to_label_id_lut() -> np.ndarray:
    """uint8[256]: train id 0..18 -> label id, 255 (void) -> 0 (unlabeled), any other -> 255."""
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, dtype=np.uint8)
    lut[255] = 0
    for label in labels:
        if 0 <= label.trainId < 255 and label.id >= 0:
            lut[label.trainId] = label.id
    lut.flags.writeable = False
    return lut


@dataclasses.dataclass
class PairStats:
    """What one image contributes: its confusion matrix and per-instance pixel counts."""

    confusion: np.ndarray  # (34, 34) int64, rows ground truth
    instance_label: np.ndarray  # (k,) label id of each scored instance, in instance-id order
    instance_size: np.ndarray  # (k,) pixels of the instance
    instance_tp: np.ndarray  # (k,) of those predicted as the instance's label
    instance_category_tp: np.ndarray  # (k,) of those predicted as any label of its category


def pair_stats(
    pred: np.ndarray,
    gt: np.ndarray,
    instances: np.ndarray,
    names: tuple[str, str, str] = ("prediction", "ground truth", "instances"),
    tables: LabelTables | None = None,
) -> PairStats:
    """Score one image from label-id arrays, as the official ``evaluatePair`` does.

    Args:
        pred: (H, W) predicted label ids (0..33).
        gt: (H, W) ground-truth label ids (0..33).
        instances: (H, W) official instance ids (``id * 1000 + k`` for instances).
        names: file names used in error messages (prediction, ground truth, instances).
        tables: label tables (default: `label_tables()`).

    Returns:
        PairStats of the image.
    """
    tables = tables or label_tables()
    num_ids = tables.num_ids
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction {names[0]} is {_size(pred)} but ground truth {names[1]} is "
            f"{_size(gt)}; write predictions at the ground truth's size"
        )
    if instances.shape != gt.shape:
        raise ValueError(
            f"instance file {names[2]} is {_size(instances)} but ground truth "
            f"{names[1]} is {_size(gt)}"
        )
    if int(gt.max()) >= num_ids:
        bad = np.unique(gt[gt >= num_ids])[:5].tolist()
        raise ValueError(
            f"ground truth {names[1]} holds unknown label id(s) {bad}; "
            f"Cityscapes label ids are 0..{num_ids - 1}"
        )
    if int(pred.max()) >= num_ids:
        bad = np.unique(pred[pred >= num_ids])[:5].tolist()
        raise ValueError(
            f"prediction {names[0]} holds id(s) {bad} that are not Cityscapes label "
            f"ids (0..{num_ids - 1}); write label ids, or train ids with --train-ids"
        )
    cm = confusion_matrix(gt, pred, num_classes=num_ids, ignore_index=None)
    flat = instances.reshape(-1)
    where = np.flatnonzero(flat > INSTANCE_OFFSET)  # one pass; then only instance pixels
    empty = np.zeros(0, dtype=np.int64)
    if where.size == 0:
        return PairStats(cm, empty, empty, empty, empty)
    ids = flat[where].astype(np.intp)
    size = np.bincount(ids)
    present = np.flatnonzero(size)
    label_of = present // INSTANCE_OFFSET
    if int(label_of.max()) >= num_ids:
        raise ValueError(
            f"instance file {names[2]} holds instance id(s) "
            f"{present[label_of >= num_ids][:5].tolist()} of unknown labels"
        )
    keep = ~tables.ignored[label_of]
    no_instances = keep & (tables.instance_category_lut[label_of] == 255)
    if no_instances.any():
        raise ValueError(
            f"instance file {names[2]} holds instance id(s) "
            f"{present[no_instances][:5].tolist()} of labels that have no instances"
        )
    predicted = pred.reshape(-1)[where]
    pixel_label = ids // INSTANCE_OFFSET
    hit = predicted == pixel_label
    tp = np.bincount(ids[hit], minlength=size.size)
    lut = tables.instance_category_lut
    category_hit = lut[predicted] == lut[np.minimum(pixel_label, 255)]
    category_tp = np.bincount(ids[category_hit], minlength=size.size)
    present = present[keep]
    return PairStats(
        cm,
        label_of[keep].astype(np.int64),
        size[present].astype(np.int64),
        tp[present].astype(np.int64),
        category_tp[present].astype(np.int64),
    )


def _size(array: np.ndarray) -> str:
    """'HxW' (or 'HxWxC') of an array, for messages."""
    return "x".join(str(s) for s in array.shape)


def read_png(path: str | os.PathLike, what: str) -> np.ndarray:
    """Decode a PNG as stored (8/16 bit, 1 or 3 channels); ValueError naming the file if it fails.

    A palette prediction gives its indices, as PIL (and so the official script) reads it.
    """
    array = decode_png(path, what)
    if array.ndim == 3 and what == "prediction":
        array = _palette_indices(path, array)
    return array


def _palette_indices(path: str | os.PathLike, decoded: np.ndarray) -> np.ndarray:
    """A palette ('P') PNG holds indices, as PIL (and so the official script) reads them."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("P", "L"):
            return np.asarray(image)
    return decoded


def read_prediction(path: str | os.PathLike, train_ids: bool = False) -> np.ndarray:
    """A prediction PNG as (H, W) uint8 label ids; ValueError naming the file for bad content.

    Args:
        path: single-channel PNG of label ids (or train ids 0..18 and 255 with `train_ids`).
        train_ids: the file holds train ids; they are mapped to label ids (255 -> 0, unlabeled).
    """
    pred = read_png(path, "prediction")
    if pred.ndim != 2:
        raise ValueError(
            f"prediction {str(path)!r} has {pred.shape[2]} channels; write a "
            "single-channel (grayscale) PNG of label ids"
        )
    if pred.dtype != np.uint8:
        if int(pred.max()) > 255:
            bad = np.unique(pred[pred > 255])[:5].tolist()
            raise ValueError(
                f"prediction {str(path)!r} holds id(s) {bad} that are not "
                "Cityscapes label ids (0..33)"
            )
        pred = pred.astype(np.uint8)
    if train_ids:
        mapped = _train_to_label_id_lut()[pred]
        if int(mapped.max()) == 255:
            bad = np.unique(pred[mapped == 255])[:5].tolist()
            raise ValueError(
                f"prediction {str(path)!r} holds value(s) {bad} that are not train "
                "ids (0..18, 255 for void); drop --train-ids if it holds label ids"
            )
        pred = mapped
    return pred


def evaluate_files(
    prediction: str, ground_truth: str, instances: str | None = None, train_ids: bool = False
) -> PairStats:
    """Read one prediction / ground-truth / instance triple and score it (see `pair_stats`)."""
    if instances is None:
        instances = instance_path(ground_truth)
    pred = read_prediction(prediction, train_ids=train_ids)
    gt = read_png(ground_truth, "ground truth")
    inst = read_png(instances, "instance file")
    if gt.ndim != 2 or inst.ndim != 2:
        bad = ground_truth if gt.ndim != 2 else instances
        raise ValueError(f"ground-truth file {bad!r} is not a single-channel PNG")
    return pair_stats(pred, gt, inst, names=(repr(prediction), repr(ground_truth), repr(instances)))


def _evaluate_task(task: tuple[str, str, str, bool]) -> PairStats:
    """Worker entry point (module level so it pickles)."""
    return evaluate_files(*task)


def instance_path(ground_truth: str | os.PathLike) -> str:
    """The instanceIds file beside a labelIds file (official: replace 'labelIds')."""
    path = Path(ground_truth)
    return str(path.with_name(path.name.replace("labelIds", "instanceIds")))


def ground_truth_files(root: str | os.PathLike, split: str = "val") -> list[str]:
    """Sorted ``gtFine/{split}/*/*_gtFine_labelIds.png`` files; ValueError naming the folder."""
    folder = Path(root) / "gtFine" / split
    files = sorted(str(p) for p in folder.glob(f"*/*{GT_SUFFIX}"))
    if not files:
        raise ValueError(
            f"no ground truth '*{GT_SUFFIX}' under {str(folder)!r}; check -p/--path and --split"
        )
    return files


def frame_key(path: str | os.PathLike) -> str:
    """CITY_SEQ_FRAME of a Cityscapes file name ('' if the name has fewer parts)."""
    parts = Path(path).name.split("_")
    return "_".join(parts[:3]) if len(parts) >= 3 else ""


def match_predictions(
    prediction_dir: str | os.PathLike, ground_truth: Sequence[str]
) -> list[tuple[str, str]]:
    """Pair each ground-truth file with its prediction, as the official ``getPrediction`` does.

    A predict.py results folder (which holds a ``labelIds/`` subfolder) may be given directly.

    Raises:
        ValueError: a missing or empty folder, a ground-truth file with no prediction or with
            several, or a prediction that matches no ground-truth file (each names the file).
    """
    folder = Path(prediction_dir)
    if not folder.is_dir():
        raise ValueError(f"prediction folder {str(folder)!r} does not exist")
    if (folder / "labelIds").is_dir():
        folder = folder / "labelIds"
    predictions = sorted(str(p) for p in folder.rglob("*.png"))
    if not predictions:
        raise ValueError(f"prediction folder {str(folder)!r} holds no PNG files")
    by_key: dict[str, list[str]] = {}
    for pred in predictions:
        by_key.setdefault(frame_key(pred), []).append(pred)
    pairs = []
    wanted = set()
    for gt in ground_truth:
        key = frame_key(gt)
        wanted.add(key)
        found = by_key.get(key, [])
        if not found:
            raise ValueError(
                f"no prediction for ground truth {gt!r}: expected a PNG named "
                f"{key}*.png under {str(folder)!r}"
            )
        if len(found) > 1:
            raise ValueError(
                f"several predictions for ground truth {gt!r}: {found[0]!r} and "
                f"{found[1]!r}; keep one"
            )
        pairs.append((found[0], gt))
    for key, files in by_key.items():
        if key not in wanted:
            raise ValueError(
                f"prediction {files[0]!r} matches no ground-truth file "
                f"(expected a CITY_SEQ_FRAME*.png name of the evaluated split)"
            )
    return pairs


class PixelLevelAccumulator:
    """Sums PairStats image by image, in order, and computes the official result dictionary."""

    def __init__(self, tables: LabelTables | None = None) -> None:
        self.tables = tables or label_tables()
        n = self.tables.num_ids
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self._instances: list[tuple[np.ndarray, ...]] = []
        self.num_images = 0

    def add(self, stats: PairStats) -> None:
        """Add one image's counts."""
        self.confusion += stats.confusion
        if stats.instance_label.size:
            self._instances.append(
                (
                    stats.instance_label,
                    stats.instance_size,
                    stats.instance_tp,
                    stats.instance_category_tp,
                )
            )
        self.num_images += 1

    def _weighted(self) -> tuple[np.ndarray, ...]:
        """Instance-weighted tp/fn per label id and per category, summed in the official order."""
        t = self.tables
        n, k = t.num_ids, len(t.categories)
        if not self._instances:
            zeros = np.zeros(n), np.zeros(k)
            return zeros[0], zeros[0].copy(), zeros[1], zeros[1].copy()
        label, size, tp, cat_tp = (
            np.concatenate(parts) for parts in zip(*self._instances, strict=True)
        )
        weight = t.avg_size[label] / size.astype(np.float64)
        category = t.category_of[label]
        # bincount adds each bin's weights in element order, as the official loop does.
        return (
            np.bincount(label, tp * weight, minlength=n),
            np.bincount(label, (size - tp) * weight, minlength=n),
            np.bincount(category, cat_tp * weight, minlength=k),
            np.bincount(category, (size - cat_tp) * weight, minlength=k),
        )

    def result(self) -> dict[str, Any]:
        """The official result dictionary (the keys of ``resultPixelLevelSemanticLabeling.json``)."""
        return official_scores(self.confusion, *self._weighted(), tables=self.tables)


def official_scores(
    cm: np.ndarray,
    tp_w: np.ndarray,
    fn_w: np.ndarray,
    cat_tp_w: np.ndarray,
    cat_fn_w: np.ndarray,
    tables: LabelTables | None = None,
) -> dict[str, Any]:
    """IoU / iIoU per class and category with the official formulas and result keys.

    Args:
        cm: (34, 34) label-id confusion matrix, rows ground truth.
        tp_w: instance-weighted true positives per label id (official ``tpWeighted``).
        fn_w: instance-weighted false negatives per label id.
        cat_tp_w: instance-weighted true positives per category index.
        cat_fn_w: instance-weighted false negatives per category index.
        tables: label tables (default: `label_tables()`).
    """
    t = tables or label_tables()
    cm = np.asarray(cm, dtype=np.int64)
    evaluated = [i for i in t.eval_ids if not t.ignored[i]]
    row = cm.sum(axis=1)
    col_valid = cm[evaluated].sum(axis=0)  # column sums over the rows that are evaluated
    total = int(cm.sum())

    class_scores: dict[str, float] = {}
    class_inst: dict[str, float] = {}
    for i in t.eval_ids:
        name = t.names[i]
        if t.ignored[i]:
            class_scores[name] = class_inst[name] = math.nan
            continue
        tp = int(cm[i, i])
        fn = int(row[i]) - tp
        fp = int(col_valid[i]) - tp
        denom = tp + fp + fn
        class_scores[name] = float(tp) / denom if denom else math.nan
        if i in t.instance_ids:
            denom_w = float(tp_w[i]) + fp + float(fn_w[i])
            class_inst[name] = float(tp_w[i]) / denom_w if denom_w != 0 else math.nan
        else:
            class_inst[name] = math.nan

    category_scores: dict[str, float] = {}
    category_inst: dict[str, float] = {}
    for c, category in enumerate(t.categories):
        members = [i for i in t.eval_ids if t.category_of[i] == c]
        valid = [i for i in members if not t.ignored[i]]
        outside = [i for i in evaluated if t.category_of[i] != c]
        if valid:
            tp = int(cm[np.ix_(valid, valid)].sum())
            fn = int(cm[valid].sum()) - tp
            fp = int(cm[np.ix_(outside, valid)].sum())
            denom = tp + fp + fn
            category_scores[category] = float(tp) / denom if denom else math.nan
        else:
            category_scores[category] = math.nan
        if category in t.instance_categories:
            ids = list(t.instance_categories[category])
            fp = int(cm[np.ix_(outside, ids)].sum())
            denom_w = float(cat_tp_w[c]) + fp + float(cat_fn_w[c])
            category_inst[category] = float(cat_tp_w[c]) / denom_w if denom_w != 0 else math.nan
        else:
            category_inst[category] = math.nan

    return {
        "confMatrix": cm.tolist(),
        "priors": {t.names[i]: (float(row[i]) / total if total else math.nan) for i in t.eval_ids},
        "labels": {t.names[i]: i for i in t.eval_ids},
        "classScores": class_scores,
        "classInstScores": class_inst,
        "categoryScores": category_scores,
        "categoryInstScores": category_inst,
        "averageScoreClasses": score_average(class_scores),
        "averageScoreInstClasses": score_average(class_inst),
        "averageScoreCategories": score_average(category_scores),
        "averageScoreInstCategories": score_average(category_inst),
    }


def score_average(scores: dict[str, float]) -> float:
    """Mean of the scores that are not NaN, summed in order as the official script does."""
    total, count = 0.0, 0
    for value in scores.values():
        if not math.isnan(value):
            total += value
            count += 1
    return total / count if count else math.nan


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool; fork where available (fast start, inherits the imported modules).

    Used for the evaluation and for the decode ceiling alike, with the same worker setup.
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)


def _chunk_size(num_tasks: int, workers: int) -> int:
    """Images per task message: a few, and at least four messages per worker."""
    return max(1, min(8, num_tasks // (workers * 4)))


def _init_worker() -> None:
    """Worker set-up: reuse freed image buffers (see `utils.io.reuse_freed_buffers`)."""
    reuse_freed_buffers()


def evaluate_pairs(
    pairs: Sequence[tuple[str, str]],
    train_ids: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score (prediction, ground truth) file pairs; the official result dictionary.

    Args:
        pairs: (prediction PNG, ``*_gtFine_labelIds.png``) paths; the instance file is found
            beside the ground truth.
        train_ids: predictions hold train ids instead of label ids.
        workers: decoding processes (default: the available CPUs; 1 runs in this process).
        progress: called with the number of images done after each image.
    """
    if not pairs:
        raise ValueError("no prediction / ground-truth pairs to evaluate")
    workers = available_cores() if workers is None else int(workers)
    tasks = [(str(p), str(g), instance_path(g), train_ids) for p, g in pairs]
    accumulator = PixelLevelAccumulator()
    if workers <= 1 or len(tasks) == 1:
        for stats in map(_evaluate_task, tasks):
            accumulator.add(stats)
            if progress:
                progress(accumulator.num_images)
    else:
        chunk = _chunk_size(len(tasks), workers)
        with _pool(min(workers, len(tasks))) as pool:
            results = pool.map(_evaluate_task, tasks, chunksize=chunk)  # starts the workers
            try:
                for stats in results:
                    accumulator.add(stats)
                    if progress:
                        progress(accumulator.num_images)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # stop at the first bad file
                raise
    return accumulator.result()


def evaluate_folder(
    root: str | os.PathLike,
    predictions: str | os.PathLike,
    split: str = "val",
    train_ids: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a folder of prediction PNGs against ``gtFine/{split}`` of a Cityscapes root.

    Args:
        root: Cityscapes root (holds gtFine/).
        predictions: folder searched recursively for ``CITY_SEQ_FRAME*.png`` predictions.
        split: ground-truth split.
        train_ids: predictions hold train ids (0..18, 255) instead of label ids.
        workers: decoding processes (default: the available CPUs).
        progress: called with the number of images done.

    Returns:
        The official result dictionary (see `official_scores`).
    """
    pairs = match_predictions(predictions, ground_truth_files(root, split))
    return evaluate_pairs(pairs, train_ids=train_ids, workers=workers, progress=progress)


# --------------------------------------------------------------------------- reports


def markdown_report(
    result: dict[str, Any],
    title: str = "Cityscapes pixel-level evaluation",
    notes: Sequence[str] = (),
) -> str:
    """The official printout's class and category tables (IoU, nIoU) as markdown."""
    t = label_tables()
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")

    def table(header: str, rows: list[tuple[str, float, float]], avg: tuple[float, float]):
        out = [f"| {header} | IoU | nIoU |", "|---|---:|---:|"]
        out += [f"| {name} | {_fmt(iou)} | {_fmt(niou)} |" for name, iou, niou in rows]
        out.append(f"| **Score Average** | **{_fmt(avg[0])}** | **{_fmt(avg[1])}** |")
        return out

    class_rows = [
        (t.names[i], result["classScores"][t.names[i]], result["classInstScores"][t.names[i]])
        for i in t.eval_ids
        if not t.ignored[i]
    ]
    lines += ["## Classes", ""]
    lines += table(
        "classes", class_rows, (result["averageScoreClasses"], result["averageScoreInstClasses"])
    )
    from cityscapesscripts.helpers.labels import category2labels

    category_rows = [
        (c, result["categoryScores"][c], result["categoryInstScores"][c])
        for c in result["categoryScores"]
        if not all(label.ignoreInEval for label in category2labels[c])
    ]
    lines += ["", "## Categories", ""]
    lines += table(
        "categories",
        category_rows,
        (result["averageScoreCategories"], result["averageScoreInstCategories"]),
    )
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    """Three decimals as the official printout; 'nan' for NaN."""
    return "nan" if math.isnan(value) else f"{value:.3f}"


#: The "Blues" colour ramp (ColorBrewer): white to dark blue, at 0, 0.5 and 1.
_BLUES = np.array([[247, 251, 255], [107, 174, 214], [8, 48, 107]], dtype=np.float64)


def plot_confusion(result: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """Row-normalised confusion matrix of the 19 evaluated classes (plus a void column) as a PNG.

    Drawn with OpenCV: importing matplotlib and laying out its text took about 0.9 s of CPU,
    a sixth of a 300-image evaluation here. Cells hold the percentage of the row (shown from
    0.5%); classes absent from the ground truth have a grey row.
    """
    import cv2

    from utils.io import atomic_path

    t = label_tables()
    cm = np.asarray(result["confMatrix"], dtype=np.float64)
    evaluated = [i for i in t.eval_ids if not t.ignored[i]]
    ignored = [i for i in t.eval_ids if t.ignored[i]]
    rows = cm[evaluated]
    matrix = np.concatenate([rows[:, evaluated], rows[:, ignored].sum(axis=1, keepdims=True)], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = matrix / rows.sum(axis=1, keepdims=True)
    names = [t.names[i] for i in evaluated]
    columns = names + ["(void ids)"]

    font, cell, small, large = cv2.FONT_HERSHEY_SIMPLEX, 34, 0.36, 0.5
    name_width = max(cv2.getTextSize(n, font, large, 1)[0][0] for n in columns)
    side, top, bar = 40, 56, 70  # margins: axis name, title, colour bar
    left = side + name_width + 14
    bottom = name_width + 50  # the upright column names and the axis name
    height = top + cell * len(names) + bottom
    width = left + cell * len(columns) + bar
    canvas = np.full((height, width, 3), 255, np.uint8)

    def text(
        img: np.ndarray, s: str, x: int, y: int, scale: float, colour=(0, 0, 0), align: str = "left"
    ) -> None:
        (w, h), _ = cv2.getTextSize(s, font, scale, 1)
        x = {"left": x, "right": x - w, "centre": x - w // 2}[align]
        cv2.putText(img, s, (x, y + h // 2), font, scale, colour, 1, cv2.LINE_AA)

    def colour_of(v: float) -> tuple[int, int, int]:
        rgb = [np.interp(v, [0, 0.5, 1], _BLUES[:, c]) for c in range(3)]
        return tuple(int(round(c)) for c in rgb)

    for r in range(len(names)):
        y0 = top + r * cell
        text(canvas, names[r], left - 8, y0 + cell // 2, large, align="right")
        for c in range(len(columns)):
            x0 = left + c * cell
            v = matrix[r, c]
            fill = (200, 200, 200) if np.isnan(v) else colour_of(float(v))
            cv2.rectangle(canvas, (x0, y0), (x0 + cell - 1, y0 + cell - 1), fill, -1)
            if np.isfinite(v) and v >= 0.005:
                ink = (255, 255, 255) if v > 0.5 else (0, 0, 0)
                text(canvas, f"{100 * v:.0f}", x0 + cell // 2, y0 + cell // 2, small, ink, "centre")
    # Column names and the row axis name: written horizontally, then turned to read upwards.
    strip = np.full((cell * len(columns), name_width + 16, 3), 255, np.uint8)
    for c, name in enumerate(columns):
        text(strip, name, strip.shape[1] - 8, c * cell + cell // 2, large, align="right")
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = top + cell * len(names)
    canvas[y0 : y0 + strip.shape[0], left : left + strip.shape[1]] = strip
    text(canvas, "prediction", left + cell * len(columns) // 2, height - 16, large, align="centre")
    axis = np.full((side, cell * len(names), 3), 255, np.uint8)
    text(axis, "ground truth", axis.shape[1] // 2, side // 2, large, align="centre")
    canvas[top : top + axis.shape[1], :side] = cv2.rotate(axis, cv2.ROTATE_90_COUNTERCLOCKWISE)
    heading = title or "Confusion matrix (row-normalised, %)"
    while cv2.getTextSize(heading, font, large, 1)[0][0] > width - 20 and len(heading) > 4:
        heading = heading[:-4] + "..."
    text(canvas, heading, width // 2, top // 2, large, align="centre")
    x0, y0, y1 = left + cell * len(columns) + 16, top, top + cell * len(names)
    for y in range(y0, y1):
        cv2.line(canvas, (x0, y), (x0 + 14, y), colour_of(1 - (y - y0) / (y1 - y0 - 1)), 1)
    for frac in (0.0, 0.5, 1.0):
        y = int(round(y1 - 1 - frac * (y1 - y0 - 1)))
        cv2.line(canvas, (x0 + 14, y), (x0 + 18, y), (0, 0, 0), 1)
        text(canvas, f"{100 * frac:.0f}", x0 + 21, y, small)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {str(path)!r}")


# --------------------------------------------------------------------------- benchmark


def run_official(
    pairs: Sequence[tuple[str, str]], export_file: str | os.PathLike
) -> dict[str, Any]:
    """Run cityscapesscripts' own evaluation in this process on (prediction, ground truth) pairs.

    NumPy 2.4 removed ``np.in1d``, which cityscapesscripts 2.3.0 calls: it is given back as an
    alias of ``np.isin`` for the duration of the call only. Printing is silenced.
    """
    import contextlib
    import io

    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    had_in1d = hasattr(np, "in1d")
    saved = {k: getattr(official.args, k) for k in ("exportFile", "quiet", "JSONOutput")}
    try:
        if not had_in1d:
            setattr(np, "in1d", np.isin)  # noqa: B010 - the removed name, given back
        official.args.exportFile = str(export_file)
        official.args.quiet = True
        official.args.JSONOutput = True
        with contextlib.redirect_stdout(io.StringIO()):
            return official.evaluateImgLists(
                [p for p, _ in pairs], [g for _, g in pairs], official.args
            )
    finally:
        for k, v in saved.items():
            setattr(official.args, k, v)
        if not had_in1d:
            delattr(np, "in1d")  # noqa: B043


def decode_ceiling(pairs: Sequence[tuple[str, str]], workers: int | None = None) -> float:
    """Seconds to only decode the three PNGs of every pair with `workers` processes."""
    workers = available_cores() if workers is None else int(workers)
    tasks = [(p, g, instance_path(g)) for p, g in pairs]
    start = time.perf_counter()
    chunk = _chunk_size(len(tasks), workers)
    with _pool(workers) as pool:
        list(pool.map(_decode_only, tasks, chunksize=chunk))
    return time.perf_counter() - start


def _decode_only(task: tuple[str, str, str]) -> int:
    """Decode three PNGs and return their pixel count (worker entry point)."""
    return sum(int(read_png(path, "file").size) for path in task)


def make_noisy_predictions(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "val",
    noise: float = 0.15,
    seed: int = 0,
    num_files: int | None = None,
) -> list[tuple[str, str]]:
    """Write label-id PNG predictions that are the ground truth with blocks of wrong classes.

    Each prediction copies the ground truth, maps void ids to a valid class (as a model would),
    and replaces a `noise` share of 16x16 blocks with random evaluated label ids.

    Args:
        root: Cityscapes root with gtFine/{split}.
        out_dir: folder for ``CITY_SEQ_FRAME_pred.png`` files (created).
        split: split to use.
        noise: share of blocks replaced.
        seed: random seed.
        num_files: use the first `num_files` ground-truth files (default: all).

    Returns:
        The (prediction, ground truth) pairs written.
    """
    import cv2

    t = label_tables()
    valid_ids = np.array([i for i in t.eval_ids if not t.ignored[i]], dtype=np.uint8)
    gts = ground_truth_files(root, split)[:num_files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = []
    for gt_path in gts:
        gt = read_png(gt_path, "ground truth")
        pred = gt.copy()
        void = t.ignored[pred]
        pred[void] = rng.choice(valid_ids)
        h, w = pred.shape
        blocks = rng.random(((h + 15) // 16, (w + 15) // 16)) < noise
        values = rng.choice(valid_ids, size=blocks.shape).astype(np.uint8)
        block_mask = np.kron(blocks, np.ones((16, 16), bool))[:h, :w]
        block_values = np.kron(values, np.ones((16, 16), np.uint8))[:h, :w]
        pred[block_mask] = block_values[block_mask]
        path = out / f"{frame_key(gt_path)}_pred.png"
        if not cv2.imwrite(str(path), pred):
            raise OSError(f"could not write {str(path)!r}")
        pairs.append((str(path), gt_path))
    return pairs


def _subset_tree(pairs: Sequence[tuple[str, str]], folder: Path, split: str) -> tuple[Path, Path]:
    """A root and prediction folder of symbolic links holding exactly `pairs`."""
    root, preds = folder / "root", folder / "predictions"
    for pred, gt in pairs:
        gt_path = Path(gt)
        city_dir = root / "gtFine" / split / gt_path.parent.name
        city_dir.mkdir(parents=True, exist_ok=True)
        for source in (gt_path, Path(instance_path(gt))):
            (city_dir / source.name).symlink_to(source.resolve())
        image = (
            gt_path.parents[3]
            / "leftImg8bit"
            / split
            / gt_path.parent.name
            / f"{frame_key(gt_path)}_leftImg8bit.png"
        )
        image_dir = root / "leftImg8bit" / split / gt_path.parent.name
        image_dir.mkdir(parents=True, exist_ok=True)
        if image.exists():
            (image_dir / image.name).symlink_to(image.resolve())
        preds.mkdir(parents=True, exist_ok=True)
        (preds / Path(pred).name).symlink_to(Path(pred).resolve())
    return root, preds


def _max_abs_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """Largest difference between the score entries of two result dictionaries (NaN = NaN)."""
    worst = 0.0
    for key in ("classScores", "classInstScores", "categoryScores", "categoryInstScores"):
        for name, value in theirs[key].items():
            mine = ours[key][name]
            if math.isnan(value) != math.isnan(mine):
                return math.inf
            if not math.isnan(value):
                worst = max(worst, abs(mine - value))
    for key in (
        "averageScoreClasses",
        "averageScoreInstClasses",
        "averageScoreCategories",
        "averageScoreInstCategories",
    ):
        if not (math.isnan(ours[key]) and math.isnan(theirs[key])):
            worst = max(worst, abs(ours[key] - theirs[key]))
    if np.asarray(ours["confMatrix"]).tolist() != np.asarray(theirs["confMatrix"]).tolist():
        return math.inf
    return worst


def benchmark_evaluation(
    root: str | os.PathLike,
    num_files: int = 300,
    split: str = "val",
    predictions: str | os.PathLike | None = None,
    workers: int | None = None,
    official: bool = True,
    work_dir: str | os.PathLike | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Time evaluate.py (whole process) against the official script and the PNG-decode ceiling.

    The same `num_files` ground-truth files (the first of the split, sorted) are evaluated three
    ways: ``python evaluate.py`` as a subprocess (interpreter start, imports, scoring and writing
    its outputs all timed); cityscapesscripts' ``evaluateImgLists`` in this process (``np.in1d``
    given back for it; its interpreter start is not counted, which favours it); and only decoding
    the three PNGs of each pair with the same number of worker processes (the ceiling).

    Args:
        root: Cityscapes root with gtFine/{split} (full-size files for a meaningful figure).
        num_files: how many ground-truth files to use.
        split: split to use.
        predictions: folder of label-id PNG predictions; default: noisy ground truth written by
            `make_noisy_predictions` into the work folder.
        workers: worker processes for ours and the ceiling (default: the available CPUs).
        official: also time the official script (slow: about 0.3 s per full-size image).
        work_dir: folder for the links, predictions and outputs (default: a temporary one).
        repeats: time ours and the ceiling this many times, alternating, and keep the fastest
            of each (the machine may be shared; the official script runs once).

    Returns:
        dict with seconds (`ours_s`, `official_s`, `ceiling_s`), `speedup` (official / ours),
        `ceiling_share` (ceiling / ours), `max_abs_difference` between the two results,
        `images_per_s`, the machine and library versions and the command that was timed.
    """
    workers = available_cores() if workers is None else int(workers)
    if num_files < 1:
        raise ValueError(f"num_files must be at least 1, got {num_files!r}")
    gts = ground_truth_files(root, split)
    if len(gts) < num_files:
        raise ValueError(
            f"{str(root)!r} has {len(gts)} ground-truth files in split {split!r}, "
            f"fewer than the {num_files} asked for"
        )
    # How fast the (shared) machine is at the time: speed-ups between a compute-bound and a
    # decode-bound program move with it.
    machine_speed = dense_peak(seconds=1.0, backends=("numpy",))["numpy"]["best_gflops"]
    with tempfile.TemporaryDirectory(prefix="eval-bench-", dir=work_dir) as tmp:
        folder = Path(tmp)
        if predictions is None:
            pairs = make_noisy_predictions(root, folder / "noisy", split=split, num_files=num_files)
        else:
            pairs = _match_subset(predictions, gts[:num_files])
        sub_root, sub_preds = _subset_tree(pairs, folder / "subset", split)
        sub_pairs = match_predictions(sub_preds, ground_truth_files(sub_root, split))

        repo = Path(__file__).resolve().parents[1]
        command = [
            sys.executable,
            str(repo / "evaluate.py"),
            "--predictions",
            str(sub_preds),
            "-p",
            str(sub_root),
            "--split",
            split,
            "-r",
            str(folder / "ours"),
            "--workers",
            str(workers),
            "--no-progress",
        ]
        runs: dict[str, list[tuple[float, float]]] = {"ours": [], "ceiling": [], "official": []}
        theirs: dict[str, Any] | None = None
        for _ in range(max(1, int(repeats))):
            with _timer(runs["ceiling"]):
                decode_ceiling(sub_pairs, workers=workers)
            with _timer(runs["ours"]):
                done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"evaluate.py failed ({done.returncode}): {done.stderr.strip()}")
            if official:
                with _timer(runs["official"]):
                    theirs = run_official(sub_pairs, folder / "official.json")
        import json

        ours = json.loads((folder / "ours" / RESULT_JSON).read_text())
        best = {k: min(v) for k, v in runs.items() if v}  # fastest wall time, with its CPU time
        result: dict[str, Any] = {
            "num_files": num_files,
            "size": "x".join(str(s) for s in read_png(sub_pairs[0][1], "ground truth").shape),
            "workers": workers,
            "repeats": max(1, int(repeats)),
            "ours_s": best["ours"][0],
            "ceiling_s": best["ceiling"][0],
            "ours_cpu_s": best["ours"][1],
            "ceiling_cpu_s": best["ceiling"][1],
            "ours_runs_s": [w for w, _ in runs["ours"]],
            "ceiling_runs_s": [w for w, _ in runs["ceiling"]],
            "ceiling_share": best["ceiling"][0] / best["ours"][0],
            "images_per_s": num_files / best["ours"][0],
            "command": " ".join(command[1:])
            .replace(str(folder), "<tmp>")
            .replace(f"{repo}{os.sep}", ""),
        }
        if theirs is not None:
            result["official_s"], result["official_cpu_s"] = best["official"]
            result["official_runs_s"] = [w for w, _ in runs["official"]]
            result["speedup"] = result["official_s"] / result["ours_s"]
            # What the machine allows: the official's CPU time over the ceiling's wall time if
            # the decoding workers had the cores to themselves (CPU time / workers).
            result["speedup_bound"] = result["official_cpu_s"] / (result["ceiling_cpu_s"] / workers)
            result["max_abs_difference"] = _max_abs_difference(ours, theirs)
            result["averageScoreClasses"] = theirs["averageScoreClasses"]
    info = machine_info()
    result.update(cpu=info["cpu"], cores=info["cores"], versions=info["versions"])
    result["numpy_matmul_gflops"] = machine_speed
    return result


class _timer:
    """Context manager appending (wall seconds, CPU seconds of this process and its waited-for
    children) to a list."""

    def __init__(self, into: list[tuple[float, float]]) -> None:
        self.into = into

    @staticmethod
    def _cpu() -> float:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __enter__(self) -> _timer:
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.into.append((time.perf_counter() - self.wall, self._cpu() - self.cpu))


def _match_subset(predictions: str | os.PathLike, gts: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs for `gts` only, from a folder that may hold predictions of further files."""
    folder = Path(predictions)
    by_key: dict[str, str] = {}
    for pred in sorted(folder.rglob("*.png")):
        by_key.setdefault(frame_key(pred), str(pred))
    missing = [g for g in gts if frame_key(g) not in by_key]
    if missing:
        raise ValueError(f"no prediction for ground truth {missing[0]!r} under {str(folder)!r}")
    return [(by_key[frame_key(g)], g) for g in gts]


def _runs(values: Sequence[float] | None) -> str:
    """'1.23 / 1.30' for a list of run times ('-' when absent)."""
    return " / ".join(f"{v:.2f}" for v in values) if values else "-"


def speed_markdown(result: dict[str, Any], command: str = "") -> str:
    """A results/ page for a `benchmark_evaluation` result (machine, versions, figures)."""
    lines = [
        "# Evaluation speed: evaluate.py against cityscapesscripts",
        "",
        f"{result['num_files']} prediction / ground-truth pairs of {result['size']} pixels "
        f"(label-id PNGs; the three PNGs of each pair are decoded), "
        f"{result['workers']} worker processes.",
        "",
        "| what | wall seconds | CPU seconds | images/s (wall) |",
        "|---|---:|---:|---:|",
    ]
    n = result["num_files"]
    rows = []
    if "official_s" in result:
        rows.append(
            (
                f"cityscapesscripts {result['versions'].get('cityscapesscripts', '')} "
                "evaluateImgLists "
                "(in-process, np.in1d given back; 1 process)",
                "official",
            )
        )
    rows.append(
        ("evaluate.py, whole process (start, imports, scoring, JSON, markdown, plot)", "ours")
    )
    rows.append(
        (
            f"decode ceiling: only decoding the 3 PNGs of each pair "
            f"({result['workers']} processes)",
            "ceiling",
        )
    )
    for label, key in rows:
        lines.append(
            f"| {label} | {result[key + '_s']:.2f} | {result[key + '_cpu_s']:.2f} | "
            f"{n / result[key + '_s']:.1f} |"
        )
    lines.append("")
    if "speedup" in result:
        lines.append(f"- speed-up over the official script (wall): **{result['speedup']:.2f}x**")
        lines.append(
            f"- the most this machine allows while decoding every PNG: "
            f"{result['speedup_bound']:.2f}x (official CPU time / ceiling CPU time "
            f"spread over {result['workers']} cores)"
        )
        same = " (confusion matrices identical)" if result["max_abs_difference"] == 0 else ""
        lines.append(
            f"- largest difference between the two results' scores: "
            f"{result['max_abs_difference']:.3g}{same}"
        )
    lines.append(
        f"- share of the decode ceiling reached (wall): "
        f"**{result['ceiling_share']:.2f}**; in CPU time: "
        f"{result['ceiling_cpu_s'] / result['ours_cpu_s']:.2f}"
    )
    if result.get("repeats", 1) > 1:
        lines.append(
            f"- fastest of {result['repeats']} alternating runs of each; all runs (s): "
            f"ours {_runs(result.get('ours_runs_s'))}, ceiling "
            f"{_runs(result.get('ceiling_runs_s'))}, official "
            f"{_runs(result.get('official_runs_s'))}"
        )
    lines += [
        "",
        f"Machine: {result['cpu']}, {result['cores']} cores, no GPU; NumPy matmul "
        f"{result.get('numpy_matmul_gflops', math.nan):.0f} GFLOP/s just before the runs. "
        "cityscapesscripts' Cython extension is not built, so it takes its NumPy path, as a pip "
        "install does.",
        "",
        f"evaluate.py command timed: `python {result['command']}`",
    ]
    if command:
        lines += ["", f"Reproduce: `{command}`"]
    return "\n".join(lines) + "\n"
