"""Evaluate Cityscapes predictions with the official pixel-level metrics (IoU, iIoU), fast.

Scores a folder of prediction PNGs (label ids, or train ids with --train-ids) against gtFine of a
split, or runs a model over the split first (-m MODEL -w WEIGHTS). The numbers are those of
cityscapesscripts' evalPixelLevelSemanticLabeling (same result keys, equal to 1e-9), computed
with parallel decoding and one histogram per image instead of Python loops.

Writes under -r: resultPixelLevelSemanticLabeling.json (the official keys), evaluation.md (class
and category tables, IoU and nIoU) and confusion_matrix.png.

Examples:
  python evaluate.py --predictions my_preds/ -p $CITYSCAPES_DATASET --split val -r results/eval
  python evaluate.py -m fastscnn -w fastscnn.weights.h5 --synthetic -r results/eval_fastscnn
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets.options import dataset_root
from utils.cli import fail, guard, make_parser, parse_target_size, positive_int


def build_parser() -> argparse.ArgumentParser:
    """The command line (no TensorFlow is imported to build it)."""
    parser = make_parser(__doc__)
    source = parser.add_argument_group("what to evaluate (one of)")
    source.add_argument(
        "--predictions",
        default=None,
        help="folder of prediction PNGs named CITY_SEQ_FRAME*.png (searched "
        "recursively; a predict.py results folder works as it is)",
    )
    source.add_argument(
        "-m",
        "--model",
        default=None,
        help="run this model (a name of models.MODELS, e.g. fastscnn) over the "
        "split and score its predictions",
    )
    data = parser.add_argument_group("dataset")
    data.add_argument(
        "-p",
        "--path",
        default=None,
        help="Cityscapes root holding gtFine/ (default: the CITYSCAPES_DATASET "
        "environment variable)",
    )
    data.add_argument(
        "--synthetic",
        action="store_true",
        help="use the generated Cityscapes-format tree in the cache folder",
    )
    data.add_argument(
        "--split",
        default="val",
        choices=["train", "val"],
        help="ground-truth split to score against",
    )
    data.add_argument(
        "--train-ids",
        action="store_true",
        help="prediction PNGs hold train ids (0..18, 255 = void) instead of label ids",
    )
    model = parser.add_argument_group("model (with -m)")
    model.add_argument(
        "-w", "--weights", default=None, help="trained weights (.weights.h5 or .keras) for -m"
    )
    model.add_argument(
        "--onnx",
        default=None,
        help="run this exported ONNX file through onnxruntime instead of Keras",
    )
    model.add_argument(
        "--backbone",
        default=None,
        help="backbone for models that have a choice (default: the model's own)",
    )
    model.add_argument(
        "--output-stride",
        type=int,
        default=None,
        choices=[8, 16],
        help="deeplabv3+ output stride (default: the model's own)",
    )
    model.add_argument(
        "--head", default=None, help="fastfcn segmentation head (default: the model's own)"
    )
    model.add_argument(
        "-t",
        "--target-size",
        type=parse_target_size,
        default=None,
        help="size H,W the model runs at (default: its training crop); "
        "predictions are resized to the ground truth's size (bilinear on "
        "the class scores) before scoring",
    )
    model.add_argument("--batch", type=positive_int, default=1, help="images per model call")
    out = parser.add_argument_group("output")
    out.add_argument(
        "-r",
        "--results-path",
        default="results/evaluation",
        help="folder for the JSON, markdown tables and confusion-matrix plot",
    )
    out.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="decoding processes (default: the CPUs available)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _progress_bar(total: int, enabled: bool, unit: str = "image") -> Any:
    """A tqdm bar on stderr, or a stand-in with update/close when disabled (tqdm not imported)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, leave=False)


class _NoBar:
    """What _progress_bar returns when there is no bar."""

    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def evaluate_model(args: argparse.Namespace, root: str, progress: bool) -> dict[str, Any]:
    """Run the model over the split, resize its scores to each ground truth, score them."""
    from models.options import model_options
    from utils.cityscapes_eval import (
        PixelLevelAccumulator,
        frame_key,
        ground_truth_files,
        instance_path,
        pair_stats,
        read_png,
    )
    from utils.cli import quiet_tensorflow
    from utils.inference import Segmenter, resize_map, train_to_label_ids

    quiet_tensorflow()
    if args.weights is None and args.onnx is None:
        raise ValueError("-m needs -w/--weights (trained weights) or --onnx FILE")
    gts = ground_truth_files(root, args.split)
    images = []
    for gt in gts:
        image = (
            Path(root)
            / "leftImg8bit"
            / args.split
            / Path(gt).parent.name
            / f"{frame_key(gt)}_leftImg8bit.png"
        )
        if not image.is_file():
            raise ValueError(f"no image {str(image)!r} for ground truth {gt!r}")
        images.append(image)
    segmenter = Segmenter(
        args.model,
        weights=args.weights,
        input_size=args.target_size,
        options=model_options(args),
        onnx=args.onnx,
    )
    from datasets.cityscapes import read_image

    accumulator = PixelLevelAccumulator()
    bar = _progress_bar(len(gts), progress)
    try:
        for start in range(0, len(gts), args.batch):
            chunk = list(range(start, min(start + args.batch, len(gts))))
            photos = [read_image(images[i]) for i in chunk]
            for i, result in zip(chunk, segmenter.predict(photos), strict=True):
                gt = read_png(gts[i], "ground truth")
                inst = read_png(instance_path(gts[i]), "instance file")
                train_ids = resize_map(result.train_ids, gt.shape, nearest=True)
                accumulator.add(
                    pair_stats(
                        train_to_label_ids(train_ids),
                        gt,
                        inst,
                        names=(
                            f"model output for {str(images[i])!r}",
                            repr(gts[i]),
                            repr(instance_path(gts[i])),
                        ),
                    )
                )
                bar.update(1)
    finally:
        bar.close()
    return accumulator.result()


@guard
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    args = build_parser().parse_args(argv)
    if (args.predictions is None) == (args.model is None):
        fail("give either --predictions FOLDER (prediction PNGs) or -m MODEL -w WEIGHTS")
    if args.model is None and (args.weights or args.onnx or args.target_size):
        fail("-w/--onnx/-t go with -m MODEL; with --predictions the PNGs are scored as they are")
    from utils.cityscapes_eval import (
        RESULT_JSON,
        RESULT_MARKDOWN,
        RESULT_PLOT,
        evaluate_pairs,
        ground_truth_files,
        markdown_report,
        match_predictions,
        plot_confusion,
    )
    from utils.io import check_writable_dir, write_json, write_text

    start = time.perf_counter()
    out = check_writable_dir(args.results_path)
    root = dataset_root(args)
    progress = not args.no_progress and sys.stderr.isatty()
    if args.model is not None:
        result = evaluate_model(args, root, progress)
        source = f"model {args.model}" + (
            f" ({args.onnx})" if args.onnx else f" with weights {args.weights}"
        )
        num_images = len(ground_truth_files(root, args.split))
    else:
        pairs = match_predictions(args.predictions, ground_truth_files(root, args.split))
        bar = _progress_bar(len(pairs), progress)
        try:
            result = evaluate_pairs(
                pairs,
                train_ids=args.train_ids,
                workers=args.workers,
                progress=lambda done: bar.update(1),
            )
        finally:
            bar.close()
        source = f"predictions in {args.predictions}" + (" (train ids)" if args.train_ids else "")
        num_images = len(pairs)
    seconds = time.perf_counter() - start
    notes = [
        f"{source}",
        f"ground truth: gtFine/{args.split} of {root} ({num_images} images)",
        "metrics: cityscapesscripts evalPixelLevelSemanticLabeling (IoU, instance-weighted "
        "nIoU), reproduced by evaluate.py",
        f"mean IoU (classes) {result['averageScoreClasses']:.4f}, "
        f"iIoU {result['averageScoreInstClasses']:.4f}; scored in {seconds:.1f} s",
    ]
    report = markdown_report(result, notes=notes)
    write_json(out / RESULT_JSON, result)
    write_text(out / RESULT_MARKDOWN, report)
    plot_confusion(
        result, out / RESULT_PLOT, title=f"Confusion matrix (row-normalised, %): {source}"
    )
    print(report)
    print(
        f"{num_images} images in {seconds:.2f} s ({num_images / seconds:.1f} images/s); "
        f"wrote {out / RESULT_JSON}, {out / RESULT_MARKDOWN}, {out / RESULT_PLOT}"
    )


if __name__ == "__main__":
    main()
