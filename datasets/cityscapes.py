"""Cityscapes on disk: discovery of image/label pairs and reading them, checked.

Labels are returned as sparse train ids (uint8, 0..18, 255 = ignore), mapped from the label ids
on disk through `utils.labels.ID_TO_TRAIN_ID`; ``*_labelTrainIds.png`` files are used as they are
when they exist. PNGs are decoded by imagecodecs (`utils.io.read_png`), which releases the GIL.
Augmentation is in `datasets.augment`, the tf.data pipeline in `datasets.pipeline`.

Usage: ``python -m datasets.cityscapes [-p ROOT | --synthetic] [--split S]`` reads every pair of
a split and prints the class distribution.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets.options import add_dataset_args, dataset_root
from utils.cli import guard, make_parser
from utils.errors import BadInput
from utils.io import read_png
from utils.labels import (
    CLASS_NAMES,
    ID_TO_TRAIN_ID,
    IGNORE,
    MAX_LABEL_ID,
    NUM_CLASSES,
    VALID_LABEL_IDS,
    VALID_TRAIN_IDS,
)
from utils.machine import available_cores

SPLITS = ("train", "val", "test", "train_extra")

cv2.setNumThreads(
    1
)  # tf.data parallelises across files; one thread per call avoids oversubscription

#: uint8[256] for cv2.LUT: 1 where a value may not appear in a label-id / train-id file.
_INVALID_IDS = (~VALID_LABEL_IDS).astype(np.uint8)
_INVALID_TRAIN_IDS = (~VALID_TRAIN_IDS).astype(np.uint8)
#: Cityscapes' label ids are 0..MAX_LABEL_ID without gaps, so a maximum check finds any unknown id.
_IDS_CONTIGUOUS = bool(VALID_LABEL_IDS[: MAX_LABEL_ID + 1].all())
#: The fix a BadFileError for an unreadable file names.
_FIX = "re-extract it from the data set's archive or replace it"


class BadFileError(BadInput):
    """A data file that cannot be used: missing, unreadable, corrupt, truncated or of the wrong
    content. `path` names it; the message names it too, with the fix."""

    def __init__(self, message: str, path: str | os.PathLike) -> None:
        super().__init__(message)
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.path)


def skip_bad_hint(error: BadInput) -> BadInput:
    """`error` with ", or pass --skip-bad to skip bad files" added when it is a BadFileError: what
    a command that has --skip-bad says (the library's messages name only the file's own fix)."""
    if not isinstance(error, BadFileError) or "--skip-bad" in str(error):
        return error
    return BadFileError(f"{error}, or pass --skip-bad to skip bad files", error.path)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image with its annotation files."""

    image: Path
    label: Path
    instance: Path | None
    name: str  #: CITY_SEQ_FRAME
    train_ids: bool  #: the label file already holds train ids (``*_labelTrainIds.png``)


# ----------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------


def _pairs(root: Path, split: str, kind: str) -> list[Sample]:
    """Match leftImg8bit/split images with kind/split annotations by CITY_SEQ_FRAME."""
    image_dir, label_dir = root / "leftImg8bit" / split, root / kind / split
    if not image_dir.is_dir():
        raise BadInput(
            f"split folder {str(image_dir)!r} does not exist; check the split name "
            f"({', '.join(SPLITS)}) and the dataset root"
        )
    if not label_dir.is_dir():
        raise BadInput(
            f"annotation folder {str(label_dir)!r} does not exist; download and "
            f"unpack {kind} into the dataset root"
        )
    suffix = "_leftImg8bit.png"
    images = {p.name[: -len(suffix)]: p for p in image_dir.glob(f"*/*{suffix}")}
    if not images:
        raise BadInput(
            f"split folder {str(image_dir)!r} holds no *{suffix} files; "
            "is the dataset unpacked completely?"
        )
    labels: dict[str, Path] = {}
    train_id_files: dict[str, Path] = {}
    for pattern, target in (
        (f"*/*_{kind}_labelIds.png", labels),
        (f"*/*_{kind}_labelTrainIds.png", train_id_files),
    ):
        for p in label_dir.glob(pattern):
            target[p.name[: p.name.index(f"_{kind}_")]] = p
    names_with_labels = set(labels) | set(train_id_files)
    for name in sorted(set(images) - names_with_labels):
        raise BadInput(
            f"image {str(images[name])!r} has no label file "
            f"{name}_{kind}_labelIds.png in {str(label_dir)!r}"
        )
    for name in sorted(names_with_labels - set(images)):
        label = train_id_files.get(name) or labels[name]
        raise BadInput(f"label {str(label)!r} has no image {name}{suffix} in {str(image_dir)!r}")
    samples = []
    for name in sorted(images):
        label = train_id_files.get(name) or labels[name]
        instance = label_dir / name.split("_")[0] / f"{name}_{kind}_instanceIds.png"
        samples.append(
            Sample(
                image=images[name],
                label=label,
                instance=instance if instance.exists() else None,
                name=name,
                train_ids=name in train_id_files,
            )
        )
    return samples


def find_samples(
    root: str | os.PathLike, split: str = "train", coarse: bool = False
) -> list[Sample]:
    """Image/label pairs of `split`, sorted by name; with `coarse`, add gtCoarse train_extra.

    Args:
        root: Cityscapes root (see `datasets.options.resolve_root`).
        split: train, val or test (fine annotations) or train_extra (coarse).
        coarse: add the coarse train_extra images (the seed's ``-c``); only for split train.

    Raises BadInput naming the folder or file for a missing split, an empty split, an image
    without its label and a label without its image.
    """
    root = Path(root)
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    kind = "gtCoarse" if split == "train_extra" else "gtFine"
    samples = _pairs(root, split, kind)
    if coarse and split == "train":
        samples += _pairs(root, "train_extra", "gtCoarse")
    return samples


def shard_samples(samples: Sequence[Sample], num_shards: int, index: int) -> list[Sample]:
    """Every `num_shards`-th sample starting at `index`: disjoint shards that cover all files."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}); got {index!r}")
    return list(samples[index::num_shards])


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 image (H, W, 3); BadFileError naming the file if it is unreadable.

    PNGs (all of Cityscapes) are decoded by `utils.io.read_png`; other formats (a user's JPEG
    photos for predict.py) by OpenCV. Grey, grey+alpha, RGBA and 16-bit PNGs become RGB uint8.
    """
    path = str(path)
    if not path.lower().endswith(".png"):
        image = cv2.imread(path, cv2.IMREAD_COLOR_RGB)
        if image is None:
            raise BadFileError(
                f"cannot read image {path!r}: missing, corrupt or not an image; {_FIX}", path
            )
        return image
    try:
        image = read_png(path, "image")
    except BadInput as exc:
        raise BadFileError(f"{exc}; {_FIX}", path) from None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[..., 0]), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    return image


def read_label(
    sample_or_path: Sample | str | os.PathLike, train_ids: bool | None = None, map_ids: bool = True
) -> np.ndarray:
    """Train ids (H, W) uint8 from a label file; BadFileError naming the file for bad content.

    A ``*_labelTrainIds.png`` (or `train_ids=True`) is read as it is; a ``*_labelIds.png`` goes
    through the id -> train-id table (unless `map_ids` is False: then the checked label ids are
    returned, for a caller that maps fewer pixels later). Ids Cityscapes does not have are an
    error, not ignore.
    """
    if isinstance(sample_or_path, Sample):
        path, train_ids = str(sample_or_path.label), sample_or_path.train_ids
    else:
        path = str(sample_or_path)
        if train_ids is None:
            train_ids = path.endswith("_labelTrainIds.png")
    try:
        label = read_png(path, "label")
    except BadInput as exc:
        raise BadFileError(f"{exc}; {_FIX}", path) from None
    if label.ndim != 2 or label.dtype != np.uint8:
        raise BadFileError(
            f"label {path!r} must be a single-channel 8-bit PNG; got shape "
            f"{label.shape} dtype {label.dtype}; {_FIX}",
            path,
        )
    valid = VALID_TRAIN_IDS if train_ids else VALID_LABEL_IDS
    # Fast path: one maximum (label ids) or lookup-table pass (train ids) flags unknown values;
    # only then find which.
    if train_ids or not _IDS_CONTIGUOUS:
        unknown = cv2.LUT(label, _INVALID_TRAIN_IDS if train_ids else _INVALID_IDS).max()
    else:
        unknown = cv2.minMaxLoc(label)[1] > MAX_LABEL_ID
    if unknown:
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
        bad = present[~valid[present]]
        kind = "train ids (0-18, 255)" if train_ids else "Cityscapes label ids (0-33)"
        raise BadFileError(
            f"label {path!r} holds values {bad.tolist()[:8]} that are not "
            f"{kind}; regenerate it with cityscapesscripts",
            path,
        )
    return label if train_ids or not map_ids else cv2.LUT(label, ID_TO_TRAIN_ID)


def load_pair(sample: Sample, map_ids: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, train ids) of a sample, checked to have the same size (`map_ids`: see
    `read_label`)."""
    image, label = read_image(sample.image), read_label(sample, map_ids=map_ids)
    if image.shape[:2] != label.shape:
        raise BadFileError(
            f"label {str(sample.label)!r} is {label.shape[1]}x{label.shape[0]} but "
            f"its image is {image.shape[1]}x{image.shape[0]}; re-extract both from the data set's "
            "archive",
            sample.label,
        )
    return image, label


# ----------------------------------------------------------------------------------------------
# Command line: check a data set
# ----------------------------------------------------------------------------------------------


def check_split(
    root: str | os.PathLike,
    split: str,
    coarse: bool = False,
    workers: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Read every image and label of a split (in parallel) and count the train-id pixels.

    Raises BadFileError naming the first bad file (unreadable, size mismatch, unknown ids);
    with `skip_bad` the bad files' messages are listed under "bad_files" instead.
    """
    samples = find_samples(root, split, coarse=coarse)
    counts = np.zeros(256, dtype=np.int64)
    bad: list[str] = []

    def read(sample: Sample) -> np.ndarray | BadFileError:
        try:
            _, label = load_pair(sample)
        except BadFileError as exc:
            if not skip_bad:
                raise
            return exc
        return np.bincount(label.ravel(), minlength=256)

    with ThreadPoolExecutor(workers or available_cores()) as pool:
        for hist in pool.map(read, samples):
            if isinstance(hist, BadFileError):
                bad.append(str(hist))
            else:
                counts += hist
    return {
        "split": split,
        "images": len(samples) - len(bad),
        "pixels_per_train_id": counts[:NUM_CLASSES],
        "ignored_pixels": int(counts[IGNORE]),
        "bad_files": bad,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m datasets.cityscapes [-p ROOT] [--split S]`: check that a data set reads cleanly."""
    parser = make_parser(
        "Check a Cityscapes tree: find every image/label pair of a split, "
        "decode them all and print the class distribution."
    )
    add_dataset_args(parser, coarse=True)
    parser.add_argument("--split", default="train", choices=SPLITS, help="split to check")
    args = parser.parse_args(argv)

    @guard
    def run() -> None:
        root = dataset_root(args)
        try:
            stats = check_split(root, args.split, coarse=args.coarse, skip_bad=args.skip_bad)
        except BadFileError as exc:
            raise skip_bad_hint(exc) from None
        for message in stats["bad_files"]:
            print(f"skipped: {message}", file=sys.stderr)
        total = max(1, int(stats["pixels_per_train_id"].sum()) + stats["ignored_pixels"])
        skipped = f" ({len(stats['bad_files'])} bad files skipped)" if stats["bad_files"] else ""
        print(f"{root}: split {args.split}: {stats['images']} images read without error{skipped}")
        for name, count in zip(CLASS_NAMES, stats["pixels_per_train_id"], strict=True):
            print(f"  {name:<14} {100 * count / total:6.2f} %")
        print(f"  {'(ignored)':<14} {100 * stats['ignored_pixels'] / total:6.2f} %")

    run()


if __name__ == "__main__":
    main()
