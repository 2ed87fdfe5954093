"""Photos in, pictures out: what predict.py segments and the pictures it writes for each photo.

Writes under a results folder, for each photo NAME (CITY_SEQ_FRAME for Cityscapes files, else
the file stem): ``labelIds/NAME_labelIds.png`` (label ids, for the official server and
evaluate.py), ``color/NAME_color.png``, ``overlay/NAME_overlay.png``, ``panel/NAME_panel.png``
and, with Monte Carlo dropout, ``uncertainty/NAME_uncertainty.png``.
"""

from __future__ import annotations

import dataclasses
import glob
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from datasets.cityscapes import find_samples, read_image, read_label
from inference.segmenter import Segmenter
from utils import visualize
from utils.errors import BadInput
from utils.io import atomic_path
from utils.labels import DEFAULT_CLASS_SET, ClassSet, get_class_set

CITYSCAPES_SUFFIX = "_leftImg8bit"


@dataclasses.dataclass(frozen=True)
class Item:
    """One photo to segment: its file, output name and ground truth (train ids file) if any."""

    image: Path
    name: str
    label: Path | None = None
    label_train_ids: bool = False


@dataclasses.dataclass
class Tally:
    """What :func:`segment_items` did: photos written and skipped, seconds in the model."""

    done: int = 0
    skipped: int = 0
    model_seconds: float = 0.0
    seconds: float = 0.0


def output_name(path: Path) -> str:
    """CITY_SEQ_FRAME for a Cityscapes leftImg8bit file (what the server matches), else the stem."""
    stem = path.stem
    if stem.endswith(CITYSCAPES_SUFFIX) and len(stem.split("_")) >= 4:
        return stem[: -len(CITYSCAPES_SUFFIX)]
    return stem


def _ground_truth_beside(image: Path) -> Path | None:
    """gtFine/SPLIT/CITY/NAME_gtFine_labelIds.png for a leftImg8bit/SPLIT/CITY/NAME file, if any."""
    parts = image.resolve().parts
    if CITYSCAPES_SUFFIX not in image.stem or "leftImg8bit" not in parts[:-1]:
        return None
    index = len(parts) - 1 - parts[::-1].index("leftImg8bit")
    rest = parts[index + 1 :]
    if len(rest) != 3:
        return None
    split, city = rest[0], rest[1]
    name = output_name(image)
    for kind in ("gtFine", "gtCoarse"):
        label = Path(*parts[:index], kind, split, city, f"{name}_{kind}_labelIds.png")
        if label.is_file():
            return label
    return None


#: File extensions `--input` treats as photos (compared case-insensitively); other files in a
#: folder or glob (notes, JSON, videos) are passed over and counted.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class InputFiles:
    """What `--input` matched: the photos to segment, the files passed over for their extension
    (not an image's) and the image files skipped because no decoder recognises them."""

    items: list[Item]
    passed_over: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)


def is_image_name(path: Path) -> bool:
    """Whether `path` has an image's extension (IMAGE_EXTENSIONS, any case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _matching_files(spec: str) -> tuple[list[Path], str]:
    """(files, how to name `spec` in messages) of a folder (recursively), a file or a glob."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return files, f"folder {spec!r}"
    if path.is_file():
        return [path], f"file {spec!r}"
    files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    return files, f"glob {spec!r}"


def input_items(spec: str, skip_bad: bool, warn: Callable[[str], None] | None = None) -> InputFiles:
    """The photos of a folder (recursively), a file or a glob.

    Files whose extension is not an image's (IMAGE_EXTENSIONS) are passed over and listed in
    `passed_over`; a folder or glob with no image file at all is a BadInput naming it. An image
    file no decoder recognises is named and either skipped (`skip_bad`: reported through `warn`
    and listed in `skipped`) or reported as a BadInput.
    """
    files, where = _matching_files(spec)
    if not files:
        raise BadInput(
            f"--input {where} matches no files; give a folder of photos or a glob "
            "such as 'photos/*.jpg'"
        )
    images = [f for f in files if is_image_name(f)]
    passed_over = [f for f in files if not is_image_name(f)]
    if not images:
        extensions = ", ".join(IMAGE_EXTENSIONS)
        raise BadInput(
            f"--input {where} holds no image file ({len(passed_over)} other file"
            f"{'' if len(passed_over) == 1 else 's'}, e.g. {str(passed_over[0])!r}); "
            f"give photos ending in {extensions}"
        )
    found = InputFiles(items=[], passed_over=passed_over)
    names: dict[str, Path] = {}
    for file in images:
        if not cv2.haveImageReader(str(file)):
            message = f"--input file {str(file)!r} is not an image OpenCV can read"
            if not skip_bad:
                raise BadInput(f"{message}; remove it or pass --skip-bad")
            if warn is not None:
                warn(f"{message}; skipped")
            found.skipped.append(file)
            continue
        name = output_name(file)
        if name in names:
            raise BadInput(
                f"--input files {str(names[name])!r} and {str(file)!r} would write "
                f"outputs of the same name {name!r}; rename one"
            )
        names[name] = file
        found.items.append(Item(file, name, _ground_truth_beside(file)))
    if not found.items:
        raise BadInput(
            f"--input {where} holds no readable images ({len(found.skipped)} skipped); "
            "check the files named above"
        )
    return found


def dataset_items(root: str | Path, split: str, coarse: bool = False) -> list[Item]:
    """The photos of a Cityscapes split (with their ground truth, except for the test split)."""
    samples = find_samples(root, split, coarse=coarse)
    with_gt = split != "test"  # the test split has no real annotations
    return [Item(s.image, s.name, s.label if with_gt else None, s.train_ids) for s in samples]


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive groups of `size` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _write_png(path: Path, rgb_or_gray: np.ndarray) -> None:
    """Write a PNG atomically (RGB arrays are converted to OpenCV's BGR order)."""
    array = rgb_or_gray
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise BadInput(f"could not write {str(path)!r}; check the results folder")


def write_outputs(
    out: Path,
    item: Item,
    photo: np.ndarray,
    train_ids: np.ndarray,
    uncertainty: np.ndarray | None,
    alpha: float,
    skip_bad: bool = False,
    warn: Callable[[str], None] | None = None,
    class_set: ClassSet | None = None,
) -> None:
    """Write every output picture of one photo (see the module docstring for names).

    `train_ids` are class indices of `class_set` (default: the 19 benchmark classes); the label
    ids, colours and ground truth follow it. An unreadable ground-truth label raises its
    BadInput, or with `skip_bad` is reported through `warn` and the panel is drawn without it.
    """
    class_set = class_set or get_class_set(DEFAULT_CLASS_SET)
    default = class_set.name == DEFAULT_CLASS_SET
    ground_truth = None
    if item.label is not None and (default or not item.label_train_ids):
        try:
            ground_truth = read_label(item.label, train_ids=item.label_train_ids, map_ids=default)
            if not default:
                ground_truth = class_set.from_label_ids[ground_truth]
        except BadInput as exc:
            if not skip_bad:
                raise
            if warn is not None:
                warn(f"{exc}; the panel of {item.name} is drawn without ground truth")
        if ground_truth is not None and ground_truth.shape != train_ids.shape:
            ground_truth = None  # a label of another size cannot be shown beside the photo
    palette = class_set.palette
    color = visualize.colorize(train_ids, palette)
    _write_png(out / "labelIds" / f"{item.name}_labelIds.png", class_set.label_ids(train_ids))
    _write_png(out / "color" / f"{item.name}_color.png", color)
    _write_png(out / "overlay" / f"{item.name}_overlay.png", visualize.overlay(photo, color, alpha))
    _write_png(
        out / "panel" / f"{item.name}_panel.png",
        visualize.panel(
            photo,
            train_ids,
            ground_truth,
            title=item.name,
            names=class_set.names,
            palette=palette,
        ),
    )
    if uncertainty is not None:
        _write_png(
            out / "uncertainty" / f"{item.name}_uncertainty.png", visualize.heatmap(uncertainty)
        )


def segment_items(
    segmenter: Segmenter,
    items: Sequence[Item],
    out: Path,
    batch: int = 1,
    alpha: float = 0.5,
    skip_bad: bool = False,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """Segment `items` in batches and write their outputs under `out`.

    An unreadable photo raises its ValueError, or with `skip_bad` is reported through `warn`
    and counted as skipped; `progress(n)` is called as n more photos are done or skipped.
    """
    tally = Tally()
    start = time.perf_counter()
    for group in _batches(items, batch):
        photos, kept = [], []
        for item in group:
            try:
                photos.append(read_image(item.image))
                kept.append(item)
            except BadInput as exc:
                if not skip_bad:
                    raise
                if warn is not None:
                    warn(f"{exc}; skipped")
                tally.skipped += 1
                if progress is not None:
                    progress(1)
        if not kept:
            continue
        tick = time.perf_counter()
        results = segmenter.predict(photos)
        tally.model_seconds += time.perf_counter() - tick
        for item, photo, result in zip(kept, photos, results, strict=True):
            write_outputs(
                out,
                item,
                photo,
                result.train_ids,
                result.uncertainty,
                alpha,
                skip_bad,
                warn,
                class_set=segmenter.class_set,
            )
            tally.done += 1
            if progress is not None:
                progress(1)
    tally.seconds = time.perf_counter() - start
    return tally
