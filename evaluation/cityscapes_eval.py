"""The official Cityscapes pixel-level evaluation, computed fast and without TensorFlow.

Reproduces cityscapesscripts' ``evalPixelLevelSemanticLabeling`` (version 2.3.0): the 34x34
label-id confusion matrix, IoU per class and per category, instance-weighted iIoU (with the
official average class sizes, ``args.avgClassSize`` of that module) and their averages, with the
same result keys. The official script loops over images and instances in Python and calls
``np.in1d``, which NumPy 2.4 removed; here each image is one 2-D histogram (the confusion
matrix, `evaluation.metrics.confusion_matrix`) and a few bincounts over its instance pixels,
images are decoded in parallel worker processes, and the weighted instance scores are summed in
the same order as the official script, so the numbers agree to rounding (tested to 1e-9).

Matching follows the official ``getPrediction``: the prediction of
``CITY_SEQ_FRAME_gtFine_labelIds.png`` is the one PNG under the prediction folder whose name
starts with ``CITY_SEQ_FRAME``. Bad input raises BadInput naming the file.

The label ids, names and categories come from `utils.labels`; `LabelTables` only arranges them
as the official script uses them (which ids are ignored, which have instances, and so on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import confusion_matrix
from utils.errors import BadInput
from utils.io import read_png, reuse_freed_buffers
from utils.labels import (
    CATEGORIES,
    DEFAULT_CLASS_SET,
    LABELS,
    MAX_LABEL_ID,
    TRAIN_ID_TO_ID,
    get_class_set,
)
from utils.machine import available_cores

#: Instance ids at or below this value are not instances (official: ``instanceNp > 1000``).
INSTANCE_OFFSET = 1000
GT_SUFFIX = "_gtFine_labelIds.png"


@dataclasses.dataclass(frozen=True)
class LabelTables:
    """What the official script derives from the Cityscapes labels (`utils.labels`), as arrays."""

    #: The class set scored (`utils.labels.CLASS_SETS`; cityscapes19 is the official benchmark).
    class_set: str
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


@functools.cache
def label_tables(class_set: str = DEFAULT_CLASS_SET) -> LabelTables:
    """The label tables, arranged once per class set from `utils.labels`.

    A label id is evaluated when `class_set` scores it (``from_label_ids`` is not 255): for
    cityscapes19 and categories exactly the official ``ignoreInEval`` labels are left out; rail20
    scores rail track (label id 10) too, with the same formulas.
    """
    num_ids = MAX_LABEL_ID + 1
    scored = get_class_set(class_set).from_label_ids
    by_id = {label.id: label for label in LABELS}
    eval_ids = tuple(label.id for label in LABELS)
    names = tuple(by_id[i].name if i in by_id else "" for i in range(num_ids))
    ignored = np.array([scored[i] == 255 for i in range(num_ids)])
    categories = CATEGORIES
    category_of = np.array(
        [categories.index(by_id[i].category) if i in by_id else -1 for i in range(num_ids)]
    )
    instance_ids = tuple(i for i in eval_ids if by_id[i].hasInstances and not ignored[i])
    instance_categories: dict[str, tuple[int, ...]] = {}
    for category in categories:
        members = [label for label in LABELS if label.category == category]
        if all(label.hasInstances for label in members):
            instance_categories[category] = tuple(label.id for label in members)
    avg = official_average_class_sizes()
    avg_size = np.array([avg.get(names[i], math.nan) for i in range(num_ids)], dtype=np.float64)
    lut = np.full(256, 255, dtype=np.uint8)
    for i in eval_ids:
        if by_id[i].hasInstances:
            lut[i] = category_of[i]
    for array in (ignored, category_of, avg_size, lut):
        array.flags.writeable = False
    return LabelTables(
        class_set,
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
    # the official script only when its figures are used
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    return dict(official.args.avgClassSize)


# --------------------------------------------------------------------------- one image


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
    _check_pair(pred, gt, instances, names, num_ids)
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
        raise BadInput(
            f"instance file {names[2]} holds instance id(s) "
            f"{present[label_of >= num_ids][:5].tolist()} of unknown labels"
        )
    keep = ~tables.ignored[label_of]
    no_instances = keep & (tables.instance_category_lut[label_of] == 255)
    if no_instances.any():
        raise BadInput(
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


def _check_pair(
    pred: np.ndarray,
    gt: np.ndarray,
    instances: np.ndarray,
    names: tuple[str, str, str],
    num_ids: int,
) -> None:
    """BadInput naming the file if the three maps differ in size or hold unknown label ids."""
    if pred.shape != gt.shape:
        raise BadInput(
            f"prediction {names[0]} is {_size(pred)} but ground truth {names[1]} is "
            f"{_size(gt)}; write predictions at the ground truth's size"
        )
    if instances.shape != gt.shape:
        raise BadInput(
            f"instance file {names[2]} is {_size(instances)} but ground truth "
            f"{names[1]} is {_size(gt)}"
        )
    if int(gt.max()) >= num_ids:
        bad = np.unique(gt[gt >= num_ids])[:5].tolist()
        raise BadInput(
            f"ground truth {names[1]} holds unknown label id(s) {bad}; "
            f"Cityscapes label ids are 0..{num_ids - 1}"
        )
    if int(pred.max()) >= num_ids:
        bad = np.unique(pred[pred >= num_ids])[:5].tolist()
        raise BadInput(
            f"prediction {names[0]} holds id(s) {bad} that are not Cityscapes label "
            f"ids (0..{num_ids - 1}); write label ids, or train ids with --train-ids"
        )


def _size(array: np.ndarray) -> str:
    """'HxW' (or 'HxWxC') of an array, for messages."""
    return "x".join(str(s) for s in array.shape)


# --------------------------------------------------------------------------- reading files


def read_id_map(path: str | os.PathLike, what: str) -> np.ndarray:
    """An id map PNG (label, train or instance ids) as stored: 8/16 bit, 1 or 3 channels.

    Decodes with `utils.io.read_png` (BadInput naming the file as `what`, and the fix, if it
    fails). A palette prediction (`what` == "prediction") gives its indices, as PIL (and so the
    official script) reads it.
    """
    try:
        array = read_png(path, what)
    except BadInput as exc:
        fix = (
            "write it again (predict.py writes label ids under labelIds/)"
            if what == "prediction"
            else "re-extract gtFine from the data set's archive"
        )
        raise BadInput(f"{exc}; {fix}") from None
    if array.ndim == 3 and what == "prediction":
        array = _palette_indices(path, array)
    return array


def _palette_indices(path: str | os.PathLike, decoded: np.ndarray) -> np.ndarray:
    """A palette ('P') PNG holds indices, as PIL (and so the official script) reads them."""
    # image libraries only when images are read
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("P", "L"):
            return np.asarray(image)
    return decoded


def read_prediction(path: str | os.PathLike, train_ids: bool = False) -> np.ndarray:
    """A prediction PNG as (H, W) uint8 label ids; BadInput naming the file for bad content.

    Args:
        path: single-channel PNG of label ids (or train ids 0..18 and 255 with `train_ids`).
        train_ids: the file holds train ids; they are mapped to label ids (255 -> 0, unlabeled).
    """
    pred = read_id_map(path, "prediction")
    if pred.ndim != 2:
        raise BadInput(
            f"prediction {str(path)!r} has {pred.shape[2]} channels; write a "
            "single-channel (grayscale) PNG of label ids"
        )
    if pred.dtype != np.uint8:
        if int(pred.max()) > 255:
            bad = np.unique(pred[pred > 255])[:5].tolist()
            raise BadInput(
                f"prediction {str(path)!r} holds id(s) {bad} that are not "
                "Cityscapes label ids (0..33)"
            )
        pred = pred.astype(np.uint8)
    if train_ids:
        mapped = TRAIN_ID_TO_ID[pred]
        if int(mapped.max()) == 255:
            bad = np.unique(pred[mapped == 255])[:5].tolist()
            raise BadInput(
                f"prediction {str(path)!r} holds value(s) {bad} that are not train "
                "ids (0..18, 255 for void); drop --train-ids if it holds label ids"
            )
        pred = mapped
    return pred


def read_ground_truth(
    ground_truth: str | os.PathLike, instances: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W) label ids and instance ids of a ground-truth file and the instance file beside it.

    Raises:
        BadInput: a file is unreadable or not single-channel (naming it).
    """
    if instances is None:
        instances = instance_path(ground_truth)
    gt = read_id_map(ground_truth, "ground truth")
    inst = read_id_map(instances, "instance file")
    if gt.ndim != 2 or inst.ndim != 2:
        bad = ground_truth if gt.ndim != 2 else instances
        raise BadInput(f"ground-truth file {str(bad)!r} is not a single-channel PNG")
    return gt, inst


def evaluate_files(
    prediction: str, ground_truth: str, instances: str | None = None, train_ids: bool = False
) -> PairStats:
    """Read one prediction / ground-truth / instance triple and score it (see `pair_stats`)."""
    if instances is None:
        instances = instance_path(ground_truth)
    pred = read_prediction(prediction, train_ids=train_ids)
    gt, inst = read_ground_truth(ground_truth, instances)
    return pair_stats(pred, gt, inst, names=(repr(prediction), repr(ground_truth), repr(instances)))


def _evaluate_task(task: tuple[str, str, str, bool]) -> PairStats:
    """Worker entry point (module level so it pickles)."""
    return evaluate_files(*task)


# --------------------------------------------------------------------------- file names


def instance_path(ground_truth: str | os.PathLike) -> str:
    """The instanceIds file beside a labelIds file (official: replace 'labelIds')."""
    path = Path(ground_truth)
    return str(path.with_name(path.name.replace("labelIds", "instanceIds")))


def image_path(ground_truth: str | os.PathLike) -> Path:
    """The ``leftImg8bit`` image of a ``ROOT/gtFine/SPLIT/CITY/*_gtFine_labelIds.png`` file."""
    path = Path(ground_truth)
    return (
        path.parents[3]
        / "leftImg8bit"
        / path.parents[1].name
        / path.parent.name
        / f"{frame_key(path)}_leftImg8bit.png"
    )


def ground_truth_files(root: str | os.PathLike, split: str = "val") -> list[str]:
    """Sorted ``gtFine/{split}/*/*_gtFine_labelIds.png`` files; BadInput naming the folder."""
    folder = Path(root) / "gtFine" / split
    files = sorted(str(p) for p in folder.glob(f"*/*{GT_SUFFIX}"))
    if not files:
        raise BadInput(
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
        BadInput: a missing or empty folder, a ground-truth file with no prediction or with
            several, or a prediction that matches no ground-truth file (each names the file).
    """
    folder = Path(prediction_dir)
    if not folder.is_dir():
        raise BadInput(f"prediction folder {str(folder)!r} does not exist")
    if (folder / "labelIds").is_dir():
        folder = folder / "labelIds"
    predictions = sorted(str(p) for p in folder.rglob("*.png"))
    if not predictions:
        raise BadInput(f"prediction folder {str(folder)!r} holds no PNG files")
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
            raise BadInput(
                f"no prediction for ground truth {gt!r}: expected a PNG named "
                f"{key}*.png under {str(folder)!r}"
            )
        if len(found) > 1:
            raise BadInput(
                f"several predictions for ground truth {gt!r}: {found[0]!r} and "
                f"{found[1]!r}; keep one"
            )
        pairs.append((found[0], gt))
    for key, files in by_key.items():
        if key not in wanted:
            raise BadInput(
                f"prediction {files[0]!r} matches no ground-truth file "
                f"(expected a CITY_SEQ_FRAME*.png name of the evaluated split)"
            )
    return pairs


# --------------------------------------------------------------------------- the scores


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
        """The official result dictionary (the keys of ``resultPixelLevelSemanticLabeling.json``),
        with ``classSet`` and, for another class set than cityscapes19, its scores under the
        class keys (`evaluation.class_sets.class_set_result`)."""
        from evaluation.class_sets import class_set_result

        result = official_scores(self.confusion, *self._weighted(), tables=self.tables)
        return class_set_result(result, self.tables.class_set)


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
    row = cm.sum(axis=1)
    total = int(cm.sum())
    class_scores, class_inst = _class_scores(cm, tp_w, fn_w, t)
    category_scores, category_inst = _category_scores(cm, cat_tp_w, cat_fn_w, t)
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


def _class_scores(
    cm: np.ndarray, tp_w: np.ndarray, fn_w: np.ndarray, t: LabelTables
) -> tuple[dict[str, float], dict[str, float]]:
    """IoU and instance-weighted iIoU of each label id, by name (NaN for ignored ids)."""
    evaluated = [i for i in t.eval_ids if not t.ignored[i]]
    row = cm.sum(axis=1)
    col_valid = cm[evaluated].sum(axis=0)  # column sums over the rows that are evaluated
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
    return class_scores, class_inst


def _category_scores(
    cm: np.ndarray, cat_tp_w: np.ndarray, cat_fn_w: np.ndarray, t: LabelTables
) -> tuple[dict[str, float], dict[str, float]]:
    """IoU and instance-weighted iIoU of each category, by name."""
    evaluated = [i for i in t.eval_ids if not t.ignored[i]]
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
    return category_scores, category_inst


def score_average(scores: dict[str, float]) -> float:
    """Mean of the scores that are not NaN, summed in order as the official script does."""
    total, count = 0.0, 0
    for value in scores.values():
        if not math.isnan(value):
            total += value
            count += 1
    return total / count if count else math.nan


# --------------------------------------------------------------------------- many images


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool; fork where available (fast start, inherits the imported modules).

    Used for the evaluation and for the decode ceiling (`bench.eval_speed`) alike, with the same
    worker setup.
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)


def chunk_size(num_tasks: int, workers: int) -> int:
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
    class_set: str = DEFAULT_CLASS_SET,
) -> dict[str, Any]:
    """Score (prediction, ground truth) file pairs; the official result dictionary.

    Args:
        pairs: (prediction PNG, ``*_gtFine_labelIds.png``) paths; the instance file is found
            beside the ground truth.
        train_ids: predictions hold train ids instead of label ids.
        workers: decoding processes (default: the available CPUs; 1 runs in this process).
        progress: called with the number of images done after each image.
        class_set: the class set scored (an image's counts do not depend on it).
    """
    if not pairs:
        raise ValueError("no prediction / ground-truth pairs to evaluate")
    workers = available_cores() if workers is None else int(workers)
    tasks = [(str(p), str(g), instance_path(g), train_ids) for p, g in pairs]
    accumulator = PixelLevelAccumulator(label_tables(class_set))
    if workers <= 1 or len(tasks) == 1:
        for stats in map(_evaluate_task, tasks):
            accumulator.add(stats)
            if progress:
                progress(accumulator.num_images)
    else:
        chunk = chunk_size(len(tasks), workers)
        with worker_pool(min(workers, len(tasks))) as pool:
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


# --------------------------------------------------------------------------- the official script


def run_official(
    pairs: Sequence[tuple[str, str]], export_file: str | os.PathLike
) -> dict[str, Any]:
    """Run cityscapesscripts' own evaluation in this process on (prediction, ground truth) pairs.

    NumPy 2.4 removed ``np.in1d``, which cityscapesscripts 2.3.0 calls: it is given back as an
    alias of ``np.isin`` for the duration of the call only. Printing is silenced.
    """

    # the official script only when its figures are used
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
