"""Segment photos with a trained model and write pictures people can look at.

Runs a model (Keras weights, or an exported ONNX file through onnxruntime) over a Cityscapes
split or over any folder/glob of photos. The model runs at its input size (-t; default its
training crop); scores are resized back, so every output is at the photo's own resolution.

Writes under -r, for each photo NAME (CITY_SEQ_FRAME for Cityscapes files, else the file stem):
  labelIds/NAME_labelIds.png   label ids, ready for the official benchmark server and evaluate.py
  color/NAME_color.png         prediction in the Cityscapes palette
  overlay/NAME_overlay.png     prediction blended over the photo
  panel/NAME_panel.png         photo | ground truth (when it exists) | prediction, with a legend
  uncertainty/NAME_uncertainty.png   bayes_segnet with --mc-samples: Monte Carlo uncertainty

Examples:
  python predict.py -m fastscnn -w fastscnn.weights.h5 -p $CITYSCAPES_DATASET --split val
  python predict.py -m fastscnn --onnx fastscnn.onnx --input "photos/*.jpg" -r results/mine
  python predict.py -m bayes_segnet -w bayes.weights.h5 --mc-samples 50 --input photos/
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.options import add_dataset_args
from utils.cli import fail, guard, make_parser, non_negative_float, positive_int, quiet_tensorflow

OUTPUT_KINDS = ("labelIds", "color", "overlay", "panel", "uncertainty")
CITYSCAPES_SUFFIX = "_leftImg8bit"


@dataclass(frozen=True)
class Item:
    """One photo to segment: its file, output name and ground truth (train ids file) if any."""

    image: Path
    name: str
    label: Path | None = None
    label_train_ids: bool = False


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = make_parser(__doc__)
    from models.options import add_model_args  # after quiet_tensorflow: models imports Keras

    add_model_args(parser)
    for action in parser._actions:  # this script's own default for -t
        if action.dest == "target_size":
            action.help = (
                "size H,W the model runs at (default: its training crop, rounded to "
                "the sizes it takes); outputs are at each photo's own size"
            )
    model = parser.add_argument_group("weights")
    model.add_argument(
        "-w",
        "--weights",
        default=None,
        help="trained weights (.weights.h5 or .keras) written by train.py",
    )
    model.add_argument(
        "--onnx",
        default=None,
        help="run this exported .onnx file through onnxruntime instead of Keras "
        "(-m still names the model, for its class layout)",
    )
    model.add_argument(
        "--mc-samples",
        type=positive_int,
        default=None,
        help="bayes_segnet: Monte Carlo dropout samples T (about 50); writes an "
        "uncertainty map too",
    )
    model.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo dropout masks")
    add_dataset_args(parser)
    data = parser.add_argument_group("photos")
    data.add_argument(
        "--split",
        default="val",
        choices=["train", "val", "test", "train_extra"],
        help="Cityscapes split to segment (when --input is not given)",
    )
    data.add_argument(
        "--input",
        default=None,
        help="a folder (searched recursively) or a glob of photos of any kind and "
        "size, instead of a Cityscapes split",
    )
    data.add_argument(
        "--limit", type=positive_int, default=None, help="segment only the first N photos (sorted)"
    )
    run = parser.add_argument_group("output")
    run.add_argument("--batch", type=positive_int, default=1, help="photos per model call")
    run.add_argument(
        "-r",
        "--results-path",
        default="results/predictions",
        help="folder for the outputs (subfolders per kind)",
    )
    run.add_argument(
        "--alpha",
        type=non_negative_float,
        default=0.5,
        help="opacity of the prediction in the overlay, 0..1",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


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


def input_items(spec: str, skip_bad: bool) -> list[Item]:
    """Files of a folder (recursively) or a glob; a file no decoder recognises is named and either
    skipped (`skip_bad`, with a warning) or reported as a ValueError."""
    import cv2

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        where = f"folder {spec!r}"
    elif path.is_file():
        files = [path]
        where = f"file {spec!r}"
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        where = f"glob {spec!r}"
    if not files:
        raise ValueError(
            f"--input {where} matches no files; give a folder of photos or a glob "
            "such as 'photos/*.jpg'"
        )
    items = []
    names: dict[str, Path] = {}
    for file in files:
        if not cv2.haveImageReader(str(file)):
            message = f"--input file {str(file)!r} is not an image OpenCV can read"
            if not skip_bad:
                raise ValueError(f"{message}; remove it or pass --skip-bad")
            print(f"warning: {message}; skipped", file=sys.stderr)
            continue
        name = output_name(file)
        if name in names:
            raise ValueError(
                f"--input files {str(names[name])!r} and {str(file)!r} would write "
                f"outputs of the same name {name!r}; rename one"
            )
        names[name] = file
        items.append(Item(file, name, _ground_truth_beside(file)))
    if not items:
        raise ValueError(f"--input {where} holds no readable images")
    return items


def dataset_items(args: argparse.Namespace) -> list[Item]:
    """The photos of a Cityscapes split (with their ground truth, except for the test split)."""
    from datasets.cityscapes import find_samples
    from datasets.options import dataset_root

    root = dataset_root(args)
    samples = find_samples(root, args.split, coarse=args.coarse, skip_bad=args.skip_bad)
    with_gt = args.split != "test"  # the test split has no real annotations
    return [Item(s.image, s.name, s.label if with_gt else None, s.train_ids) for s in samples]


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive groups of `size` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _write_png(path: Path, rgb_or_gray: np.ndarray) -> None:
    """Write a PNG atomically (RGB arrays are converted to OpenCV's BGR order)."""
    import cv2

    from utils.io import atomic_path

    array = rgb_or_gray
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise OSError(f"could not write {str(path)!r}; check the results folder")


def write_outputs(
    out: Path,
    item: Item,
    photo: np.ndarray,
    train_ids: np.ndarray,
    uncertainty: np.ndarray | None,
    alpha: float,
) -> None:
    """Write every output picture of one photo (see the module docstring for names)."""
    from utils import visualize
    from utils.inference import train_to_label_ids

    ground_truth = None
    if item.label is not None:
        from datasets.cityscapes import read_label

        ground_truth = read_label(item.label, train_ids=item.label_train_ids)
        if ground_truth.shape != train_ids.shape:
            ground_truth = None  # a label of another size cannot be shown beside the photo
    color = visualize.colorize(train_ids)
    _write_png(out / "labelIds" / f"{item.name}_labelIds.png", train_to_label_ids(train_ids))
    _write_png(out / "color" / f"{item.name}_color.png", color)
    _write_png(out / "overlay" / f"{item.name}_overlay.png", visualize.overlay(photo, color, alpha))
    _write_png(
        out / "panel" / f"{item.name}_panel.png",
        visualize.panel(photo, train_ids, ground_truth, title=item.name),
    )
    if uncertainty is not None:
        _write_png(
            out / "uncertainty" / f"{item.name}_uncertainty.png", visualize.heatmap(uncertainty)
        )


@guard
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    quiet_tensorflow()
    args = build_parser().parse_args(argv)
    if args.weights is None and args.onnx is None:
        fail("give trained weights with -w/--weights (or an exported model with --onnx FILE)")
    if args.weights is not None and args.onnx is not None:
        fail("give either -w/--weights (Keras) or --onnx (onnxruntime), not both")
    if not 0.0 <= args.alpha <= 1.0:
        fail(f"--alpha must be between 0 and 1, got {args.alpha}")
    from utils.io import check_writable_dir

    out = check_writable_dir(args.results_path)
    items = input_items(args.input, args.skip_bad) if args.input else dataset_items(args)
    if args.limit:
        items = items[: args.limit]

    from tqdm import tqdm

    from datasets.cityscapes import read_image
    from models.options import model_options
    from utils.inference import Segmenter

    segmenter = Segmenter(
        args.model,
        weights=args.weights,
        input_size=args.target_size,
        options=model_options(args),
        onnx=args.onnx,
        mc_samples=args.mc_samples,
        seed=args.seed,
    )
    done, skipped, model_seconds = 0, 0, 0.0
    start = time.perf_counter()
    bar = tqdm(total=len(items), unit="image", disable=args.no_progress, file=sys.stderr)
    try:
        for batch in _batches(items, args.batch):
            photos, kept = [], []
            for item in batch:
                try:
                    photos.append(read_image(item.image))
                    kept.append(item)
                except ValueError as exc:
                    if not args.skip_bad:
                        raise
                    print(f"warning: {exc}; skipped", file=sys.stderr)
                    skipped += 1
                    bar.update(1)
            if not kept:
                continue
            tick = time.perf_counter()
            results = segmenter.predict(photos)
            model_seconds += time.perf_counter() - tick
            for item, photo, result in zip(kept, photos, results, strict=True):
                write_outputs(out, item, photo, result.train_ids, result.uncertainty, args.alpha)
                done += 1
                bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if done == 0:
        fail(f"no image could be read ({skipped} skipped); nothing was written")
    engine = "onnxruntime" if args.onnx else "Keras"
    size = segmenter.input_size
    print(
        f"{done} images segmented ({skipped} skipped) with {args.model} ({engine}) at "
        f"{size[0]}x{size[1]}: {done / seconds:.2f} images/s overall, "
        f"{1000 * model_seconds / done:.1f} ms/image in the model; outputs in {out}"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
