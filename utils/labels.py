"""The one Cityscapes label module: every id, name, colour and lookup table the suite uses.

Built once, at import, from ``cityscapesscripts.helpers.labels`` (never a hand-written table).
Three id spaces appear in the suite:

- label ids (0..33, -1 for license plate) as stored in ``*_gtFine_labelIds.png`` and as the
  official evaluation wants them;
- train ids (0..18, 255 = ignore) inside the pipeline and as the models predict them;
- categories (flat, construction, object, nature, sky, human, vehicle; void left out).

Every table is a read-only numpy array, so a caller cannot change it for the others.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from cityscapesscripts.helpers.labels import category2labels, labels

from utils.errors import BadInput

#: Classes the models predict (train ids 0..18).
NUM_CLASSES = 19
#: The ignore value in train-id maps.
IGNORE = 255

#: The Cityscapes labels with a label id (license plate, id -1, has none).
_LABELS = tuple(label for label in labels if 0 <= label.id < 256)
_TRAIN_LABELS = {label.trainId: label for label in _LABELS if 0 <= label.trainId < NUM_CLASSES}


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _id_to_train() -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for label in _LABELS:
        lut[label.id] = label.trainId if 0 <= label.trainId < NUM_CLASSES else IGNORE
    return _frozen(lut)


def _train_to_id() -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[IGNORE] = 0  # ignore -> unlabeled, the official evaluation's void
    for train_id, label in _TRAIN_LABELS.items():
        lut[train_id] = label.id
    return _frozen(lut)


def _valid_ids() -> np.ndarray:
    valid = np.zeros(256, dtype=bool)
    for label in _LABELS:
        valid[label.id] = True
    return _frozen(valid)


def _valid_train_ids() -> np.ndarray:
    valid = np.zeros(256, dtype=bool)
    valid[list(range(NUM_CLASSES)) + [IGNORE]] = True
    return _frozen(valid)


def _palette(train: bool) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    for label in _LABELS:
        if train and 0 <= label.trainId < NUM_CLASSES:
            lut[label.trainId] = label.color
        elif not train:
            lut[label.id] = label.color
    return _frozen(lut)


#: uint8[256]: label id -> train id (255 for ignored classes and ids Cityscapes lacks).
ID_TO_TRAIN_ID = _id_to_train()
#: uint8[256]: train id 0..18 -> label id, 255 (ignore) -> 0 (unlabeled), any other -> 255.
TRAIN_ID_TO_ID = _train_to_id()
#: bool[256]: which values may appear in a ``*_labelIds.png`` file.
VALID_LABEL_IDS = _valid_ids()
#: bool[256]: which values may appear in a ``*_labelTrainIds.png`` file (0..18 and 255).
VALID_TRAIN_IDS = _valid_train_ids()
#: The largest label id (33).
MAX_LABEL_ID = int(np.flatnonzero(VALID_LABEL_IDS).max())
#: The 19 class names in train-id order.
CLASS_NAMES: tuple[str, ...] = tuple(_TRAIN_LABELS[i].name for i in range(NUM_CLASSES))
#: uint8[256, 3] RGB: train id -> Cityscapes colour; 255 and unused ids black.
TRAIN_ID_PALETTE = _palette(train=True)
#: uint8[256, 3] RGB: label id -> colour, as in ``gtFine *_color.png``.
LABEL_ID_PALETTE = _palette(train=False)
#: Category names in the official order (``category2labels``), void included.
CATEGORIES: tuple[str, ...] = tuple(category2labels)
#: All Cityscapes labels with a label id, in cityscapesscripts' order (the Label namedtuples).
LABELS = _LABELS


# ---------------------------------------------------------------------------------------------
# Class sets: what a model predicts and an evaluation scores, as lookups from label ids
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassSet:
    """The classes of `--classes NAME` and how label ids map onto them.

    `from_label_ids` (uint8[256]) maps a label id to a class index (255: not scored, as the
    official evaluation leaves out its `ignoreInEval` labels); `to_label_ids` maps a class index
    back to a label id (for prediction files in the official format).
    """

    name: str
    names: tuple[str, ...]
    from_label_ids: np.ndarray
    to_label_ids: np.ndarray
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def label_ids(self, class_ids: np.ndarray) -> np.ndarray:
        """Class indices -> Cityscapes label ids (`to_label_ids`; 255 and any index outside the
        set -> 0, unlabeled, as TRAIN_ID_TO_ID maps ignore), uint8 of the same shape."""
        lut = np.zeros(256, dtype=np.uint8)
        lut[: self.num_classes] = self.to_label_ids
        return lut[np.asarray(class_ids, dtype=np.uint8)]

    @property
    def palette(self) -> np.ndarray:
        """uint8[256, 3] RGB: class index -> the Cityscapes colour of its label (`to_label_ids`);
        255 and unused indices black. For cityscapes19 it is TRAIN_ID_PALETTE."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = LABEL_ID_PALETTE[self.to_label_ids]
        return _frozen(lut)


def _class_set(name: str, names: tuple[str, ...], index_of, description: str) -> ClassSet:
    """A ClassSet whose label `label` goes to class `index_of(label)` (None: not scored)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    back = np.zeros(len(names), dtype=np.uint8)
    filled = np.zeros(len(names), dtype=bool)
    for label in _LABELS:  # cityscapesscripts' order: the first label of a class maps back
        index = index_of(label)
        if index is None:
            continue
        lut[label.id] = index
        if not filled[index]:
            back[index], filled[index] = label.id, True
    return ClassSet(name, names, _frozen(lut), _frozen(back), description)


_SCORED_CATEGORIES = tuple(
    c for c in CATEGORIES if any(not label.ignoreInEval for label in category2labels[c])
)
RAIL_TRACK = "rail track"

#: --classes: cityscapes19 (the benchmark's 19 classes), categories (the 7 categories of the
#: official category scores), rail20 (the 19 classes and rail track, label id 10, which the
#: 19-class benchmark does not score: the class railway users need).
CLASS_SETS: dict[str, ClassSet] = {
    "cityscapes19": _class_set(
        "cityscapes19",
        CLASS_NAMES,
        lambda label: label.trainId if 0 <= label.trainId < NUM_CLASSES else None,
        "the 19 classes of the Cityscapes benchmark (train ids)",
    ),
    "categories": _class_set(
        "categories",
        _SCORED_CATEGORIES,
        lambda label: None if label.ignoreInEval else _SCORED_CATEGORIES.index(label.category),
        "the 7 categories (flat, construction, object, nature, sky, human, vehicle)",
    ),
    "rail20": _class_set(
        "rail20",
        (*CLASS_NAMES, RAIL_TRACK),
        lambda label: (
            NUM_CLASSES
            if label.name == RAIL_TRACK
            else (label.trainId if 0 <= label.trainId < NUM_CLASSES else None)
        ),
        "the 19 classes and rail track (label id 10)",
    ),
}


#: The class set of a model or file that records none (every model before --classes).
DEFAULT_CLASS_SET = "cityscapes19"


def get_class_set(name: str) -> ClassSet:
    """The ClassSet of `--classes name`; BadInput listing the names otherwise."""
    if name not in CLASS_SETS:
        raise BadInput(f"unknown class set {name!r}; choose one of {', '.join(CLASS_SETS)}")
    return CLASS_SETS[name]


def class_set_with(num_classes: int) -> ClassSet | None:
    """The class set of `num_classes` outputs (they differ: 19, 7, 20), None if there is none."""
    found = [c for c in CLASS_SETS.values() if c.num_classes == int(num_classes)]
    return found[0] if len(found) == 1 else None


# ---------------------------------------------------------------------------------------------
# The class set a weights file was trained for, recorded in the file
# ---------------------------------------------------------------------------------------------

#: Attribute of a ``.weights.h5`` file's root group naming its class set (train.py writes it).
CLASS_SET_ATTRIBUTE = "class_set"


def record_class_set(weights: str | os.PathLike, name: str) -> None:
    """Write class set `name` into the root attributes of a ``.weights.h5`` file (Keras' loader
    reads only the file's groups and ignores them)."""
    import h5py  # only where a weights file is written (Keras depends on it)

    get_class_set(name)
    with h5py.File(weights, "r+") as handle:
        handle.attrs[CLASS_SET_ATTRIBUTE] = name


def recorded_class_set(weights: str | os.PathLike) -> str | None:
    """The class set recorded in a ``.weights.h5`` file by `record_class_set`; None for a file
    that records none (older runs, plain ``save_weights``, ``.keras`` files) or is not HDF5."""
    import h5py  # only where a weights file is read

    if not str(weights).endswith(".h5"):
        return None
    try:
        with h5py.File(weights, "r") as handle:
            value = handle.attrs.get(CLASS_SET_ATTRIBUTE)
    except OSError:
        return None  # not an HDF5 file: the weights loader names the problem
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None else str(value)
