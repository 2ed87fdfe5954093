"""Evaluate Cityscapes predictions with the official pixel-level metrics (IoU, iIoU), fast.

Scores a folder of prediction PNGs (label ids, or train ids with --train-ids) against gtFine of a
split, or runs a model over the split first (-m MODEL -w WEIGHTS, or --onnx FILE, whose metadata
names the model, through onnxruntime or, with --backend openvino, OpenVINO). Scoring PNGs
needs only gtFine/ under the root, as the official script does; running a model needs
leftImg8bit/ too. The numbers are those of cityscapesscripts' evalPixelLevelSemanticLabeling
(same result keys, equal to 1e-9), computed with parallel decoding and one histogram per image
instead of Python loops.

Writes under -r: resultPixelLevelSemanticLabeling.json (the official keys), evaluation.md (class
and category tables, IoU and nIoU) and confusion_matrix.png.

Examples:
  python evaluate.py --predictions my_preds/ -p $CITYSCAPES_DATASET --split val -r runs/eval
  python evaluate.py -m fastscnn -w fastscnn.weights.h5 --synthetic -r runs/eval_fastscnn
  python evaluate.py --onnx fastscnn.onnx --synthetic
  python evaluate.py --onnx fastscnn.onnx --backend openvino --synthetic
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from datasets.options import add_dataset_args, dataset_root
from models.options import add_model_args, model_options
from utils.cli import fail, guard, make_parser, positive_int, quiet_tensorflow


def build_parser() -> argparse.ArgumentParser:
    """The command line (no TensorFlow is imported to build it)."""
    parser = make_parser(__doc__)
    source = parser.add_argument_group(
        "what to evaluate (--predictions, -m with -w, or --onnx with -m read from its metadata)"
    )
    source.add_argument(
        "--predictions",
        default=None,
        help="folder of prediction PNGs named CITY_SEQ_FRAME*.png (searched "
        "recursively; a predict.py results folder works as it is)",
    )
    add_dataset_args(
        parser,
        coarse=False,
        skip_bad=False,
        path_help="Cityscapes root holding gtFine/ (and leftImg8bit/, for -m)",
    )
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--split",
        default="val",
        choices=["train", "val"],
        help="ground-truth split to score against",
    )
    scoring.add_argument(
        "--train-ids",
        action="store_true",
        help="prediction PNGs hold train ids (0..18, 255 = void) instead of label ids",
    )
    add_model_args(parser, required=False)
    run = parser.add_argument_group(
        "model run (with -m; its outputs are resized to the ground truth's size, bilinear on "
        "the class scores, before scoring)"
    )
    run.add_argument(
        "-w", "--weights", default=None, help="trained weights (.weights.h5 or .keras) for -m"
    )
    run.add_argument(
        "--onnx",
        default=None,
        help="run this exported ONNX file through --backend instead of Keras; without -m, "
        "the model and input size are read from the file's metadata (convert_to_onnx.py writes "
        "them)",
    )
    run.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="runtime of --onnx: onnxruntime, or openvino (the same file compiled for the CPU; "
        "its first batch is checked against onnxruntime by deploy/checks.py's parity rule)",
    )
    run.add_argument("--batch", type=positive_int, default=1, help="images per model call")
    out = parser.add_argument_group("output")
    out.add_argument(
        "-r",
        "--results-path",
        default="runs/evaluation",
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
    """A bar on stderr (tqdm in a terminal, plain lines in a log; none when not `enabled`)."""
    # after parsing: keeps --help and usage errors instant
    from utils.progress import progress_bar

    return progress_bar(total, "evaluate", unit, sys.stderr, disable=not enabled, leave=False)


def evaluate_model(args: argparse.Namespace, root: str, progress: bool) -> dict[str, Any]:
    """Run the model over the split, resize its scores to each ground truth, score them."""
    # Here only: TensorFlow (or onnxruntime) is imported for -m, never for --predictions.
    from datasets.cityscapes import read_image
    from deploy.checks import parity_thresholds
    from evaluation.cityscapes_eval import (
        PixelLevelAccumulator,
        ground_truth_files,
        image_path,
        instance_path,
        pair_stats,
        read_ground_truth,
    )

    # after parsing: keeps --help and usage errors instant
    from inference.segmenter import Segmenter
    from utils.cli import quiet_tensorflow
    from utils.labels import train_to_label_ids
    from utils.resize import resize_map

    quiet_tensorflow()
    if args.weights is None and args.onnx is None:
        raise ValueError(f"-m {args.model} needs -w/--weights (trained weights) or --onnx FILE")
    gts = ground_truth_files(root, args.split)
    images = [image_path(gt) for gt in gts]
    for gt, image in zip(gts, images, strict=True):
        if not image.is_file():
            raise ValueError(f"no image {str(image)!r} for ground truth {gt!r}")
    segmenter = Segmenter(
        args.model,
        weights=args.weights,
        input_size=args.target_size,
        options=model_options(args),
        onnx=args.onnx,
        backend=args.backend,
        parity_limits=lambda precision, scale: parity_thresholds(precision, scale),
    )
    args.model = segmenter.name  # with --onnx alone: the model its metadata names
    accumulator = PixelLevelAccumulator()
    bar = _progress_bar(len(gts), progress)
    try:
        for start in range(0, len(gts), args.batch):
            chunk = list(range(start, min(start + args.batch, len(gts))))
            photos = [read_image(images[i]) for i in chunk]
            for i, result in zip(chunk, segmenter.predict(photos), strict=True):
                gt, inst = read_ground_truth(gts[i])
                train_ids = resize_map(result.train_ids, gt.shape, nearest=True)
                names = (
                    f"model output for {str(images[i])!r}",
                    repr(gts[i]),
                    repr(instance_path(gts[i])),
                )
                accumulator.add(pair_stats(train_to_label_ids(train_ids), gt, inst, names=names))
                bar.update(1)
    finally:
        bar.close()
    return accumulator.result()


def evaluate_predictions(args: argparse.Namespace, root: str, progress: bool) -> dict[str, Any]:
    """Score the prediction PNGs of --predictions against the split's ground truth."""
    # after parsing: keeps --help and usage errors instant
    from evaluation.cityscapes_eval import evaluate_pairs, ground_truth_files, match_predictions

    pairs = match_predictions(args.predictions, ground_truth_files(root, args.split))
    bar = _progress_bar(len(pairs), progress)
    try:
        return evaluate_pairs(
            pairs,
            train_ids=args.train_ids,
            workers=args.workers,
            progress=lambda done: bar.update(1),
        )
    finally:
        bar.close()


def check_args(args: argparse.Namespace) -> None:
    """One source of predictions, and only the options that go with it."""
    runs_model = args.model is not None or args.onnx is not None
    if (args.predictions is None) == (not runs_model):
        fail(
            "give either --predictions FOLDER (prediction PNGs), -m MODEL -w WEIGHTS (a Keras "
            "model) or --onnx FILE (an exported model; -m is read from its metadata)"
        )
    if args.predictions is not None and (args.weights or args.target_size):
        fail(
            "-w/-t go with -m MODEL or --onnx FILE; with --predictions the PNGs are scored as they are"
        )
    if args.backend != "onnxruntime" and args.onnx is None:
        fail(f"--backend {args.backend} runs an exported model: give --onnx FILE")
    if args.model is None and args.weights:
        fail("-w/--weights needs -m MODEL (the weights hold no model name); or give --onnx FILE")


@guard(
    on_interrupt="nothing was written (the results are written once scoring ends); rerun to score again"
)
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    args = build_parser().parse_args(argv)
    check_args(args)
    # Here, not at the top: numpy, OpenCV and the decoders stay out of --help.
    from evaluation.cityscapes_eval import ground_truth_files
    from evaluation.report import (
        RESULT_JSON,
        RESULT_MARKDOWN,
        RESULT_PLOT,
        markdown_report,
        plot_confusion,
    )

    # after parsing: keeps --help and usage errors instant
    from utils.io import check_writable_dir, write_json, write_text

    start = time.perf_counter()
    out = check_writable_dir(args.results_path)
    runs_model = args.predictions is None  # -m and/or --onnx (check_args)
    if runs_model:
        quiet_tensorflow()  # before anything imports it: an error stays the only line on stderr
        why = "-m/--onnx runs the model on its images; --predictions needs only gtFine/"
        root = dataset_root(args, why=why)
    else:
        root = dataset_root(args, require=("gtFine",))  # as the official script: gtFine only
    progress = not args.no_progress
    if runs_model:
        result = evaluate_model(args, root, progress)
        source = f"model {args.model}" + (
            f" ({args.onnx}{', OpenVINO' if args.backend == 'openvino' else ''})"
            if args.onnx
            else f" with weights {args.weights}"
        )
    else:
        result = evaluate_predictions(args, root, progress)
        source = f"predictions in {args.predictions}" + (" (train ids)" if args.train_ids else "")
    seconds = time.perf_counter() - start
    num_images = len(ground_truth_files(root, args.split))
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
