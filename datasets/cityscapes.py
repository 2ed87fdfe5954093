"""Cityscapes on disk: discovery of image/label pairs, label-id mapping and the tf.data pipeline.

Labels inside the pipeline are sparse train ids (uint8, 0..18, 255 = ignore) mapped on the fly
from the label ids on disk through a lookup table built from ``cityscapesscripts.helpers.labels``;
``*_labelTrainIds.png`` files are used as they are when they exist. Images stay uint8 until they
reach the model, which normalises them in its first layer.

PNGs are decoded by imagecodecs (`utils.io.read_png`) and augmented with OpenCV on uint8 arrays
(crop before resizing; flip and a colour-matrix jitter on the smaller of the source window and
the crop), in one ``tf.numpy_function`` call per image that tf.data runs in parallel: both
libraries release the GIL, so they use every core.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from utils.io import read_png, reuse_freed_buffers
from utils.machine import available_cores

NUM_CLASSES = 19
IGNORE = 255
PREFETCH_BATCHES = 2  #: batches the pipeline prepares ahead of the model
_TENSOR_ALIGN = 64  #: bytes; TensorFlow's tensor alignment (EIGEN_MAX_ALIGN_BYTES)
SPLITS = ("train", "val", "test", "train_extra")
log = logging.getLogger(__name__)

cv2.setNumThreads(
    1
)  # tf.data parallelises across files; one thread per call avoids oversubscription


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image with its annotation files."""

    image: Path
    label: Path
    instance: Path | None
    name: str  #: CITY_SEQ_FRAME
    train_ids: bool  #: the label file already holds train ids (``*_labelTrainIds.png``)


def id_to_train_id_lut() -> np.ndarray:
    """uint8[256]: label id -> train id (255 for ignored classes and ids Cityscapes lacks)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.id < 256:
            lut[label.id] = label.trainId if 0 <= label.trainId < NUM_CLASSES else IGNORE
    return lut


def train_id_to_id_lut() -> np.ndarray:
    """uint8[256]: train id -> label id (the official evaluation's input); 255 -> 0 (unlabeled)."""
    lut = np.zeros(256, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.trainId < NUM_CLASSES and label.id >= 0:
            lut[label.trainId] = label.id
    return lut


def valid_label_ids() -> np.ndarray:
    """bool[256]: which values may appear in a ``*_labelIds.png`` file."""
    valid = np.zeros(256, dtype=bool)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.id < 256:
            valid[label.id] = True
    return valid


def class_names() -> list[str]:
    """The 19 train-id class names in train-id order."""
    names = {lab.trainId: lab.name for lab in CITYSCAPES_LABELS if 0 <= lab.trainId < NUM_CLASSES}
    return [names[i] for i in range(NUM_CLASSES)]


_ID_TO_TRAIN = id_to_train_id_lut()
_VALID_IDS = valid_label_ids()
_VALID_TRAIN_IDS = np.zeros(256, dtype=bool)
_VALID_TRAIN_IDS[list(range(NUM_CLASSES)) + [IGNORE]] = True
_INVALID_IDS = (~_VALID_IDS).astype(np.uint8)
_INVALID_TRAIN_IDS = (~_VALID_TRAIN_IDS).astype(np.uint8)
_MAX_ID = int(np.flatnonzero(_VALID_IDS).max())
#: Cityscapes' label ids are 0.._MAX_ID without gaps, so a maximum check finds any unknown id.
_IDS_CONTIGUOUS = bool(_VALID_IDS[: _MAX_ID + 1].all())


# ----------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------


def resolve_root(
    path: str | os.PathLike | None = None,
    synthetic: bool = False,
    num_synthetic: int = 20,
    synthetic_size: Sequence[int] = (1024, 2048),
) -> Path:
    """The dataset root: `path`, else $CITYSCAPES_DATASET, else (with `synthetic`) a generated tree.

    Raises ValueError when neither is given (naming both and --synthetic) and when the root lacks
    ``leftImg8bit`` or ``gtFine``.
    """
    if synthetic:
        from datasets.synthetic import ensure_synthetic_tree

        return ensure_synthetic_tree(num=num_synthetic, size=synthetic_size)
    if path is None:
        path = os.environ.get("CITYSCAPES_DATASET") or None
    if path is None:
        raise ValueError(
            "no dataset given: pass -p/--path CITYSCAPES_ROOT or set the "
            "CITYSCAPES_DATASET environment variable (or use --synthetic for "
            "generated data that needs no download)"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"dataset root {str(root)!r} does not exist; pass the folder that holds "
            "leftImg8bit/ and gtFine/"
        )
    missing = [d for d in ("leftImg8bit", "gtFine") if not (root / d).is_dir()]
    if missing:
        raise ValueError(
            f"dataset root {str(root)!r} has no {' or '.join(missing)} folder; "
            "pass the Cityscapes root that holds leftImg8bit/ and gtFine/"
        )
    return root


def _pairs(root: Path, split: str, kind: str) -> list[Sample]:
    """Match leftImg8bit/split images with kind/split annotations by CITY_SEQ_FRAME."""
    image_dir, label_dir = root / "leftImg8bit" / split, root / kind / split
    if not image_dir.is_dir():
        raise ValueError(
            f"split folder {str(image_dir)!r} does not exist; check the split name "
            f"({', '.join(SPLITS)}) and the dataset root"
        )
    if not label_dir.is_dir():
        raise ValueError(
            f"annotation folder {str(label_dir)!r} does not exist; download and "
            f"unpack {kind} into the dataset root"
        )
    suffix = "_leftImg8bit.png"
    images = {p.name[: -len(suffix)]: p for p in image_dir.glob(f"*/*{suffix}")}
    if not images:
        raise ValueError(
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
        raise ValueError(
            f"image {str(images[name])!r} has no label file "
            f"{name}_{kind}_labelIds.png in {str(label_dir)!r}"
        )
    for name in sorted(names_with_labels - set(images)):
        label = train_id_files.get(name) or labels[name]
        raise ValueError(f"label {str(label)!r} has no image {name}{suffix} in {str(image_dir)!r}")
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
    root: str | os.PathLike, split: str = "train", coarse: bool = False, skip_bad: bool = False
) -> list[Sample]:
    """Image/label pairs of `split`, sorted by name; with `coarse`, add gtCoarse train_extra.

    Args:
        root: Cityscapes root (see resolve_root).
        split: train, val or test (fine annotations) or train_extra (coarse).
        coarse: add the coarse train_extra images (the seed's ``-c``); only for split train.
        skip_bad: accepted for symmetry with the pipeline; discovery problems always raise.

    Raises ValueError naming the folder or file for a missing split, an empty split, an image
    without its label and a label without its image.
    """
    del skip_bad
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    kind = "gtCoarse" if split == "train_extra" else "gtFine"
    samples = _pairs(root, split, kind)
    if coarse and split == "train":
        samples += _pairs(root, "train_extra", "gtCoarse")
    return samples


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 image (H, W, 3); ValueError naming the file if it is unreadable.

    PNGs (all of Cityscapes) are decoded by `utils.io.read_png`; other formats (a user's JPEG
    photos for predict.py) by OpenCV. Grey, grey+alpha, RGBA and 16-bit PNGs become RGB uint8.
    """
    path = str(path)
    if not path.lower().endswith(".png"):
        image = cv2.imread(path, cv2.IMREAD_COLOR_RGB)
        if image is None:
            raise ValueError(
                f"cannot read image {path!r}: missing, corrupt or not an image; "
                "replace the file or pass --skip-bad"
            )
        return image
    try:
        image = read_png(path, "image")
    except ValueError as exc:
        raise ValueError(f"{exc}; replace the file or pass --skip-bad") from None
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
    """Train ids (H, W) uint8 from a label file; ValueError naming the file for bad content.

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
    except ValueError as exc:
        raise ValueError(f"{exc}; replace the file or pass --skip-bad") from None
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(
            f"label {path!r} must be a single-channel 8-bit PNG; got shape "
            f"{label.shape} dtype {label.dtype}"
        )
    valid = _VALID_TRAIN_IDS if train_ids else _VALID_IDS
    # Fast path: one maximum (label ids) or lookup-table pass (train ids) flags unknown values;
    # only then find which.
    if train_ids or not _IDS_CONTIGUOUS:
        unknown = cv2.LUT(label, _INVALID_TRAIN_IDS if train_ids else _INVALID_IDS).max()
    else:
        unknown = cv2.minMaxLoc(label)[1] > _MAX_ID
    if unknown:
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
        bad = present[~valid[present]]
        kind = "train ids (0-18, 255)" if train_ids else "Cityscapes label ids (0-33)"
        raise ValueError(
            f"label {path!r} holds values {bad.tolist()[:8]} that are not "
            f"{kind}; regenerate it with cityscapesscripts"
        )
    return label if train_ids or not map_ids else cv2.LUT(label, _ID_TO_TRAIN)


def load_pair(sample: Sample, map_ids: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, train ids) of a sample, checked to have the same size (`map_ids`: see
    `read_label`)."""
    image, label = read_image(sample.image), read_label(sample, map_ids=map_ids)
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"label {str(sample.label)!r} is {label.shape[1]}x{label.shape[0]} but "
            f"its image is {image.shape[1]}x{image.shape[0]}"
        )
    return image, label


# ----------------------------------------------------------------------------------------------
# Augmentation (uint8, OpenCV)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation settings."""

    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True
    photometric: bool = True
    brightness: float = 0.2  #: +- fraction of 255 added
    contrast: float = 0.2  #: +- fraction of the contrast scale
    saturation: float = 0.2  #: +- fraction of the saturation (mixing towards grey)


def _empty_aligned(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised C-contiguous uint8 array whose data starts on a 64-byte boundary.

    TensorFlow wraps a numpy_function's result without copying it only when the data is
    aligned to its 64-byte tensor alignment; numpy's buffers are 16-byte aligned, so an
    ordinary array of a full frame is copied once more under the GIL.
    """
    size = int(np.prod(shape))
    buf = np.empty(size + _TENSOR_ALIGN, np.uint8)
    start = -buf.ctypes.data % _TENSOR_ALIGN
    return buf[start : start + size].reshape(shape)


def _fill_border(array: np.ndarray, y: int, x: int, h: int, w: int, value: int) -> None:
    """Set everything of `array` outside the window (y, x, h, w) to `value`."""
    array[:y] = value
    array[y + h :] = value
    array[y : y + h, :x] = value
    array[y : y + h, x + w :] = value


def scale_crop(
    image: np.ndarray,
    label: np.ndarray,
    crop: tuple[int, int],
    scale: float,
    rng: np.random.Generator,
    flip: bool = False,
    colour: np.ndarray | None = None,
    label_lut: np.ndarray | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale by `scale` and take a random `crop`, cropping BEFORE resizing: only the source
    window that lands in the crop is resized (bilinear for the image, nearest for the label).
    Where the scaled image is smaller than the crop, the rest is padded: 0 for the image, 255
    (ignore) for the label.

    `flip` mirrors the content horizontally, `colour` (a (3, 4) matrix, see `jitter_matrix`)
    maps the image's colours and `label_lut` (uint8[256]) maps label ids to train ids; each is
    applied to whichever of the source window and the resized crop has fewer pixels (they
    commute with cropping and resizing, up to rounding and clipping for the colours).

    The result is resized straight into its final (64-byte aligned) arrays and the per-pixel
    steps then work in place, so a full frame is written once. With `overwrite` the caller
    gives up `image` and `label`: the per-pixel steps may also work in place on their source
    window (never pass arrays that something else still reads, such as cached tensors).
    """
    h, w = label.shape
    ch, cw = crop

    def window(size: int, out: int) -> tuple[int, int, int]:
        """(source start, source length, output length) along one axis."""
        length = round(out / scale)
        if length <= size:
            return int(rng.integers(0, size - length + 1)), max(1, length), out
        return 0, size, max(1, min(out, round(size * scale)))

    def pixelwise(img: np.ndarray, lab: np.ndarray, in_place: bool) -> tuple[np.ndarray, ...]:
        if flip:
            img = cv2.flip(img, 1, dst=img if in_place else None)
            lab = cv2.flip(lab, 1, dst=lab if in_place else None)
            in_place = True  # the flipped copies are ours
        if colour is not None:
            img = cv2.transform(img, colour, dst=img if in_place else None)
        if label_lut is not None:
            lab = cv2.LUT(lab, label_lut, dst=lab if in_place else None)
        return img, lab

    y0, src_h, out_h = window(h, ch)
    x0, src_w, out_w = window(w, cw)
    img_win = image[y0 : y0 + src_h, x0 : x0 + src_w]
    lab_win = label[y0 : y0 + src_h, x0 : x0 + src_w]
    img_out, lab_out = _empty_aligned((ch, cw, 3)), _empty_aligned((ch, cw))
    py = px = 0
    if (out_h, out_w) != (ch, cw):
        py = int(rng.integers(0, ch - out_h + 1))
        px = int(rng.integers(0, cw - out_w + 1))
        _fill_border(img_out, py, px, out_h, out_w, 0)
        _fill_border(lab_out, py, px, out_h, out_w, IGNORE)
    img_dst = img_out[py : py + out_h, px : px + out_w]
    lab_dst = lab_out[py : py + out_h, px : px + out_w]
    resize = (src_h, src_w) != (out_h, out_w)
    before = resize and src_h * src_w <= out_h * out_w  # zooming in: per-pixel work first
    if before:
        img_win, lab_win = pixelwise(img_win, lab_win, overwrite)
    if resize:
        cv2.resize(img_win, (out_w, out_h), dst=img_dst, interpolation=cv2.INTER_LINEAR)
        cv2.resize(lab_win, (out_w, out_h), dst=lab_dst, interpolation=cv2.INTER_NEAREST_EXACT)
    else:
        img_dst[...] = img_win
        lab_dst[...] = lab_win
    if not before:
        pixelwise(img_dst, lab_dst, True)
    return img_out, lab_out


def jitter_matrix(rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """A (3, 4) float32 colour matrix for `cv2.transform`: saturation, contrast and brightness.

    Saturation mixes each channel towards the grey level (ITU-R BT.601 luma weights), contrast
    scales about mid-grey 128 and brightness adds a constant; together they are one affine map,
    which OpenCV applies to uint8 with saturation about 5x faster than a lookup table here.
    """
    brightness = rng.uniform(-aug.brightness, aug.brightness) * 255
    contrast = 1 + rng.uniform(-aug.contrast, aug.contrast)
    saturation = 1 + rng.uniform(-aug.saturation, aug.saturation)
    luma = np.array([0.299, 0.587, 0.114])
    mix = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), luma)
    offset = 128 * (1 - contrast) + brightness
    return np.hstack([contrast * mix, np.full((3, 1), offset)]).astype(np.float32)


def augment_pair(
    image: np.ndarray,
    label: np.ndarray,
    crop: tuple[int, int],
    seed: int,
    aug: Augment = Augment(),
    label_lut: np.ndarray | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale + crop, horizontal flip and colour jitter, repeatable for a given seed.

    `label_lut`: map the label through this table too (label ids -> train ids), on whichever
    of the source window and the crop is smaller. `overwrite`: see `scale_crop`.
    """
    rng = np.random.default_rng(seed)
    scale = float(np.exp(rng.uniform(np.log(aug.min_scale), np.log(aug.max_scale))))
    flip = aug.flip and rng.random() < 0.5
    colour = jitter_matrix(rng, aug) if aug.photometric else None
    return scale_crop(
        image,
        label,
        crop,
        scale,
        rng,
        flip=flip,
        colour=colour,
        label_lut=label_lut,
        overwrite=overwrite,
    )


def resize_pair(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Resize for evaluation: bilinear for the image, nearest for the label."""
    if size is None or image.shape[:2] == tuple(size):
        return image, label
    h, w = size
    return (
        cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
        cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT),
    )


# ----------------------------------------------------------------------------------------------
# tf.data
# ----------------------------------------------------------------------------------------------


def shard_samples(samples: Sequence[Sample], num_shards: int, index: int) -> list[Sample]:
    """Every `num_shards`-th sample starting at `index`: disjoint shards that cover all files."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}); got {index!r}")
    return list(samples[index::num_shards])


def build_dataset(
    samples: Sequence[Sample],
    batch_size: int,
    crop_size: Sequence[int] | None,
    training: bool,
    seed: int | None = None,
    cache: bool = False,
    shard: tuple[int, int] | None = None,
    repeat: bool = False,
    drop_remainder: bool | None = None,
    epoch: int = 0,
    augment: Augment = Augment(),
    skip_bad: bool = False,
    num_parallel_calls: int | None = None,
) -> Any:
    """A tf.data pipeline of ``(images uint8 (N, H, W, 3), train ids uint8 (N, H, W))``.

    Args:
        samples: from find_samples.
        batch_size: images per batch (per worker).
        crop_size: (H, W) of the output. Training crops to it after random scaling; evaluation
            resizes to it (None keeps the files' size).
        training: shuffle and augment (scale 0.5-2.0, crop with ignore padding, flip, jitter).
        seed: makes shuffling and augmentation repeatable; None draws a fresh one.
        cache: keep decoded images in memory after the first pass (small data sets only).
        shard: (num_workers, worker_index): this worker's disjoint share of the files.
        repeat: repeat forever (epoch after epoch, reshuffled).
        drop_remainder: default True when training, False otherwise.
        epoch: epoch number mixed into the seed, so epoch k of a resumed run sees the same order
            and augmentation as epoch k of an uninterrupted one.
        augment: augmentation settings.
        skip_bad: log unreadable or invalid files and leave them out instead of raising.
        num_parallel_calls: images decoded and augmented at once (default: the CPU cores this
            process may use).

    Errors in a file surface when its batch is read, as a ValueError-bearing
    tf.errors.InvalidArgumentError whose message names the file.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {batch_size!r}")
    samples = list(samples)
    if shard is not None:
        samples = shard_samples(samples, *shard)
    if not samples:
        raise ValueError("no samples to read (empty split or shard)")
    if training and crop_size is None:
        raise ValueError("training needs a crop size (H, W)")
    crop = tuple(int(v) for v in crop_size) if crop_size is not None else None
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    parallel = num_parallel_calls or available_cores()
    by_index = samples
    reuse_freed_buffers()  # decoded and resized images reuse memory instead of faulting it in

    def load(index: np.ndarray, map_ids: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sample = by_index[int(index)]
        try:
            image, label = load_pair(sample, map_ids=map_ids)
        except ValueError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s: %s", sample.name, exc)
            return np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8), np.bool_(False)
        return image, label, np.bool_(True)

    def transform(
        image: np.ndarray,
        label: np.ndarray,
        item_seed: np.ndarray,
        label_lut: Any = None,
        overwrite: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        if training:
            return augment_pair(
                image, label, crop, int(item_seed), augment, label_lut, overwrite=overwrite
            )
        return resize_pair(image, label, crop)

    def load_transform(
        index: np.ndarray, item_seed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Training maps label ids to train ids after cropping, on fewer pixels.
        raw_ids = training and not by_index[int(index)].train_ids
        image, label, ok = load(index, map_ids=not raw_ids)
        if not ok:  # skipped with skip_bad: zero arrays of the output shape; the filter drops them
            size = crop or (1, 1)
            return np.zeros((*size, 3), np.uint8), np.zeros(size, np.uint8), ok
        # The freshly decoded arrays are this call's own: augmentation may work in place on them.
        lut = _ID_TO_TRAIN if raw_ids else None
        return (*transform(image, label, item_seed, lut, overwrite=True), ok)

    shape = list(crop) if crop is not None else [None, None]

    def tf_load(index: Any) -> tuple[Any, Any, Any]:
        image, label, ok = tf.numpy_function(
            load, [index], [tf.uint8, tf.uint8, tf.bool], stateful=False
        )
        return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None]), ok

    def tf_transform(image: Any, label: Any, item_seed: Any) -> tuple[Any, Any]:
        image, label = tf.numpy_function(
            transform, [image, label, item_seed], [tf.uint8, tf.uint8], stateful=False
        )
        return tf.ensure_shape(image, shape + [3]), tf.ensure_shape(label, shape)

    def tf_load_transform(index: Any, item_seed: Any) -> tuple[Any, ...]:
        image, label, ok = tf.numpy_function(
            load_transform, [index, item_seed], [tf.uint8, tf.uint8, tf.bool], stateful=False
        )
        pair = tf.ensure_shape(image, shape + [3]), tf.ensure_shape(label, shape)
        # Without skip_bad every file gives its pair or an error: no filter stage to pass.
        return (*pair, ok) if skip_bad else pair

    indices = tf.data.Dataset.range(len(samples))
    if training:
        indices = indices.shuffle(
            len(samples), seed=_mix(seed, epoch, 1), reshuffle_each_iteration=True
        )
    seeds = tf.data.Dataset.random(seed=_mix(seed, epoch, 2))
    if cache:
        # Decode once and keep the decoded pairs; augment on every pass (two Python calls).
        ds = indices.map(tf_load, num_parallel_calls=parallel, deterministic=True)
        ds = ds.filter(_is_ok).map(_drop_flag).cache()
        ds = tf.data.Dataset.zip(ds, seeds).map(_attach_seed)
        if repeat:
            ds = ds.repeat()
        ds = ds.map(tf_transform, num_parallel_calls=parallel, deterministic=True)
    else:
        # Decode and augment in one Python call: the full-size decoded arrays never become
        # tensors, which saves copying them in and out of TensorFlow.
        ds = tf.data.Dataset.zip(indices, seeds)
        if repeat:
            ds = ds.repeat()
        ds = ds.map(tf_load_transform, num_parallel_calls=parallel, deterministic=True)
        if skip_bad:
            ds = ds.filter(_is_ok).map(_drop_flag)
    if drop_remainder is None:
        drop_remainder = training
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    # Fixed parallelism and prefetch instead of tf.data's autotuner: on 2 cores the autotuner
    # settled, in about a third of the runs, on a state where only 1.25 cores worked (31 instead
    # of 47 images/s at 1024x2048); with fixed values every run used both cores.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(PREFETCH_BATCHES)


def _is_ok(image: Any, label: Any, ok: Any) -> Any:
    """Filter predicate: the file decoded (only False with skip_bad)."""
    return ok


def _drop_flag(image: Any, label: Any, ok: Any) -> tuple[Any, Any]:
    """Drop the decode flag."""
    return image, label


def _attach_seed(pair: tuple[Any, Any], item_seed: Any) -> tuple[Any, Any, Any]:
    """Flatten ((image, label), seed) into (image, label, seed)."""
    return pair[0], pair[1], item_seed


def _mix(seed: int, epoch: int, stream: int) -> int:
    """A 31-bit seed derived from (seed, epoch, stream)."""
    return int(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), stream]).generate_state(1)[0]
        >> 1
    )


# ----------------------------------------------------------------------------------------------
# Data benchmark
# ----------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def benchmark_pipeline(
    root: str | os.PathLike,
    size: Sequence[int] = (1024, 2048),
    batch_size: int = 1,
    num_images: int = 40,
    split: str = "train",
    workers: int | None = None,
    repeats: int = 5,
) -> dict[str, Any]:
    """Training-pipeline images/s against the decode-only ceiling on the same files and cores.

    The ceiling decodes each image and label PNG (nothing else) with a pool of `workers`
    threads and the pipeline's decoder (`utils.io.read_png`; it releases the GIL). Two more
    ceilings decode the same files with OpenCV and with TensorFlow's decoder in tf.data, for
    comparison. The pipeline is build_dataset(training=True) at `size` with `workers` parallel
    calls: two warm-up batches, then `num_images` timed images, read to the end (an iterator
    dropped while its Python calls are in flight can deadlock on the GIL). Files are cycled if
    the split has fewer. The four are measured in turn `repeats` times and the fastest of each
    is reported (the machine may be shared), with every run listed, and the process CPU time
    per image of the fastest run. A one-thread breakdown (decode, label check, augmentation)
    shows where the pipeline's time beyond decoding goes.
    """
    import tensorflow as tf

    workers = workers or available_cores()
    samples = find_samples(root, split)
    files = [samples[i % len(samples)] for i in range(num_images)]
    warm = 2 * batch_size

    def decode(sample: Sample) -> None:
        read_png(sample.image)
        read_png(sample.label)

    def cv2_decode(sample: Sample) -> None:
        cv2.imread(str(sample.image), cv2.IMREAD_COLOR_RGB)
        cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)

    def timed(run: Any) -> tuple[float, float]:
        """(images/s, CPU ms per image) of `run`, which processes `num_images` images."""
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return num_images / wall, 1000 * cpu / num_images

    def threaded(function: Any) -> tuple[float, float]:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(function, files[: min(len(files), workers * 2)]))  # warm the cache
            return timed(lambda: list(pool.map(function, files)))

    # TensorFlow's own PNG decoder, for comparison (in tf.data a corrupt file then fails
    # without its name, so the pipeline does not use it).
    def tf_decode(image_path: Any, label_path: Any) -> tuple[Any, Any]:
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        return image, tf.io.decode_png(tf.io.read_file(label_path), channels=1)

    paths = tf.data.Dataset.from_tensor_slices(
        ([str(f.image) for f in files], [str(f.label) for f in files])
    )
    tf_decoded = paths.map(tf_decode, num_parallel_calls=workers).prefetch(workers)

    def tf_ceiling() -> tuple[float, float]:
        for _ in tf_decoded.take(workers):
            pass
        return timed(lambda: [None for _ in tf_decoded])

    def pipeline() -> tuple[float, float]:
        # Steady state, as in training: `warm` images warm the threads and buffers, then the
        # clock runs over the remaining `num_images`. The consumer only counts.
        cycled = [files[i % len(files)] for i in range(warm + num_images)]
        ds = build_dataset(
            cycled,
            batch_size,
            size,
            training=True,
            seed=0,
            drop_remainder=False,
            num_parallel_calls=workers,
        )
        batches = iter(ds)
        seen = 0
        while seen < warm:
            seen += int(next(batches)[0].shape[0])
        return timed(lambda: [None for _ in batches])

    runs: dict[str, list[tuple[float, float]]] = {
        "ceiling": [],
        "opencv": [],
        "tf": [],
        "pipeline": [],
    }
    for _ in range(max(1, repeats)):
        runs["ceiling"].append(threaded(decode))
        runs["opencv"].append(threaded(cv2_decode))
        runs["tf"].append(tf_ceiling())
        runs["pipeline"].append(pipeline())
    best = {name: max(values) for name, values in runs.items()}
    return {
        "size": f"{int(size[0])}x{int(size[1])}",
        "batch_size": batch_size,
        "images": num_images,
        "workers": workers,
        "repeats": max(1, repeats),
        "decode_ceiling_images_per_s": best["ceiling"][0],
        "pipeline_images_per_s": best["pipeline"][0],
        "share_of_ceiling": best["pipeline"][0] / best["ceiling"][0],
        "opencv_decode_ceiling_images_per_s": best["opencv"][0],
        "share_of_opencv_decode_ceiling": best["pipeline"][0] / best["opencv"][0],
        "tf_decode_ceiling_images_per_s": best["tf"][0],
        "share_of_tf_decode_ceiling": best["pipeline"][0] / best["tf"][0],
        "all_runs_images_per_s": "; ".join(
            f"{name} " + " / ".join(f"{v[0]:.1f}" for v in values) for name, values in runs.items()
        ),
        "decode_ceiling_cpu_ms_per_image": best["ceiling"][1],
        "pipeline_cpu_ms_per_image": best["pipeline"][1],
        **stage_times(files, size),
        "peak_rss_mb": _peak_rss_mb(),
    }


def stage_times(files: Sequence[Sample], size: Sequence[int]) -> dict[str, float]:
    """Mean ms per image of the pipeline's steps on one thread: image decode, label decode and
    check, augmentation (`augment_pair` with the pipeline's settings)."""
    crop = (int(size[0]), int(size[1]))
    totals = {"image": 0.0, "label": 0.0, "augment": 0.0}
    for seed, sample in enumerate(files):
        t0 = time.perf_counter()
        image = read_image(sample.image)
        t1 = time.perf_counter()
        label = read_label(sample, map_ids=False)  # as the pipeline: ids mapped after cropping
        t2 = time.perf_counter()
        lut = None if sample.train_ids else _ID_TO_TRAIN
        augment_pair(image, label, crop, seed, label_lut=lut, overwrite=True)
        t3 = time.perf_counter()
        totals["image"] += t1 - t0
        totals["label"] += t2 - t1
        totals["augment"] += t3 - t2
    return {f"{name}_ms_one_thread": 1000 * value / len(files) for name, value in totals.items()}


# ----------------------------------------------------------------------------------------------
# Command line: check a data set
# ----------------------------------------------------------------------------------------------


def check_split(
    root: str | os.PathLike, split: str, coarse: bool = False, workers: int | None = None
) -> dict[str, Any]:
    """Read every image and label of a split (in parallel) and count the train-id pixels.

    Raises ValueError naming the first bad file (unreadable, size mismatch, unknown ids).
    """
    samples = find_samples(root, split, coarse=coarse)
    counts = np.zeros(256, dtype=np.int64)

    def read(sample: Sample) -> np.ndarray:
        _, label = load_pair(sample)
        return np.bincount(label.ravel(), minlength=256)

    with ThreadPoolExecutor(workers or available_cores()) as pool:
        for hist in pool.map(read, samples):
            counts += hist
    return {
        "split": split,
        "images": len(samples),
        "pixels_per_train_id": counts[:NUM_CLASSES],
        "ignored_pixels": int(counts[IGNORE]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m datasets.cityscapes [-p ROOT] [--split S]`: check that a data set reads cleanly."""
    from datasets.options import add_dataset_args, dataset_root
    from utils.cli import guard, make_parser

    parser = make_parser(
        "Check a Cityscapes tree: find every image/label pair of a split, "
        "decode them all and print the class distribution."
    )
    add_dataset_args(parser)
    parser.add_argument("--split", default="train", choices=SPLITS, help="split to check")
    args = parser.parse_args(argv)

    @guard
    def run() -> None:
        root = dataset_root(args)
        stats = check_split(root, args.split, coarse=args.coarse)
        total = max(1, int(stats["pixels_per_train_id"].sum()) + stats["ignored_pixels"])
        print(f"{root}: split {args.split}: {stats['images']} images read without error")
        for name, count in zip(class_names(), stats["pixels_per_train_id"], strict=True):
            print(f"  {name:<14} {100 * count / total:6.2f} %")
        print(f"  {'(ignored)':<14} {100 * stats['ignored_pixels'] / total:6.2f} %")

    run()


if __name__ == "__main__":
    main()
