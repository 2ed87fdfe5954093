"""Evaluate Cityscapes predictions with the official pixel-level metrics (IoU, iIoU), fast.

Scores a folder of prediction PNGs (label ids, or train ids with --train-ids) against gtFine of a
split, or runs a model over the split first (-m MODEL -w WEIGHTS, or --onnx FILE, whose metadata
names the model, through onnxruntime or another runtime of --backend). Scoring PNGs
needs only gtFine/ under the root, as the official script does; running a model needs
leftImg8bit/ too. The numbers are those of cityscapesscripts' evalPixelLevelSemanticLabeling
(same result keys, equal to 1e-9), computed with parallel decoding and one histogram per image
instead of Python loops.

Writes under -r: resultPixelLevelSemanticLabeling.json (the official keys, and classSet),
evaluation.md (class and category tables, IoU and nIoU) and confusion_matrix.png. Running a model
adds calibration.json: the expected calibration error of its softmax confidence (15 bins, pixels
at the ground truth's resolution), recall and precision of the safety classes (person, rider,
car, truck, bus, bicycle, motorcycle, traffic light, traffic sign, pole) and, for bayes_segnet
with --mc-samples, how well its Monte Carlo uncertainty finds its errors (AUROC, area under the
risk-coverage curve). --corruptions adds robustness.json and robustness.png: the mIoU under each
corruption and severity, their mean and the relative robustness (mean / clean), as the
Cityscapes-C benchmark (Kamann and Rother, CVPR 2020). --classes scores another class set with
the same formulas: categories (the 7 categories as classes) or rail20 (rail track added).

Examples:
  python evaluate.py --predictions my_preds/ -p $CITYSCAPES_DATASET --split val -r runs/eval
  python evaluate.py -m fastscnn -w fastscnn.weights.h5 --synthetic -r runs/eval_fastscnn
  python evaluate.py --onnx fastscnn.onnx --synthetic
  python evaluate.py --onnx fastscnn.onnx --backend openvino --synthetic
  python evaluate.py --onnx fastscnn.onnx --synthetic --corruptions fog rain --severities 1,3,5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from datasets.corruptions import CORRUPTIONS, SEVERITIES
from datasets.options import add_dataset_args, dataset_root, parse_severities
from inference.runtimes import REFERENCE_RUNTIME, add_backend_arg, title
from models.options import add_model_args, model_options
from utils.class_options import add_classes_arg
from utils.cli import fail, guard, make_parser, positive_int, quiet_tensorflow
from utils.errors import BadInput


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
    add_classes_arg(
        scoring,
        "scored with the official formulas (default: the class set the model's file records, "
        "else cityscapes19; --predictions: cityscapes19)",
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
    add_backend_arg(run)
    run.add_argument("--batch", type=positive_int, default=1, help="images per model call")
    run.add_argument(
        "--mc-samples",
        type=positive_int,
        default=None,
        help="bayes_segnet: Monte Carlo dropout samples T (about 50); its mean softmax is "
        "scored and its uncertainty is judged against the error map in calibration.json "
        "(default: none, a single deterministic pass)",
    )
    run.add_argument(
        "--seed", type=int, default=0, help="seed of the Monte Carlo dropout masks (default: 0)"
    )
    robust = parser.add_argument_group(
        "robustness (with -m or --onnx: the val images corrupted in memory, fixed seeds)"
    )
    robust.add_argument(
        "--corruptions",
        nargs="*",
        choices=tuple(CORRUPTIONS),
        default=None,
        metavar="NAME",
        help="also evaluate under these corruptions (no name: all of "
        f"{', '.join(CORRUPTIONS)}); writes robustness.json and robustness.png "
        "(default: none, clean images only)",
    )
    robust.add_argument(
        "--severities",
        type=parse_severities,
        default=SEVERITIES,
        help="severities 1-5 of each corruption, separated by commas (default: 1,2,3,4,5)",
    )
    robust.add_argument(
        "--corruption-seed",
        type=int,
        default=0,
        metavar="N",
        help="base seed of the corruptions: the same seed corrupts every image the same way "
        "(default: 0)",
    )
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


def evaluate_model(args: argparse.Namespace, root: str, progress: bool) -> Any:
    """Run the model over the split (clean, then under each corruption) and score it
    (inference.scoring: official metrics, calibration, safety classes, robustness)."""
    # Here only: TensorFlow (or onnxruntime) is imported for -m, never for --predictions.
    from evaluation.cityscapes_eval import ground_truth_files

    # after parsing: keeps --help and usage errors instant
    from inference.scoring import score_segmenter
    from inference.segmenter import Segmenter
    from utils.cli import quiet_tensorflow

    quiet_tensorflow()
    if args.weights is None and args.onnx is None:
        raise BadInput(f"-m {args.model} needs -w/--weights (trained weights) or --onnx FILE")
    corruptions = tuple(args.corruptions or CORRUPTIONS) if args.corruptions is not None else ()
    num_images = len(ground_truth_files(root, args.split))  # the folder's error first
    segmenter = Segmenter(
        args.model,
        weights=args.weights,
        input_size=args.target_size,
        options=model_options(args),
        onnx=args.onnx,
        runtime=args.backend,
        mc_samples=args.mc_samples,
        seed=args.seed,
        classes=args.classes,
    )
    args.model = segmenter.name  # with --onnx alone: the model its metadata names
    args.classes = segmenter.class_set.name
    runs = 1 + len(corruptions) * len(args.severities)
    bar = _progress_bar(num_images * runs, progress, unit="run" if runs > 1 else "image")
    try:
        return score_segmenter(
            segmenter,
            root,
            args.split,
            corruptions,
            args.severities,
            seed=args.corruption_seed,
            batch=args.batch,
            progress=bar.update,
        )
    finally:
        bar.close()


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
            class_set=args.classes or "cityscapes19",
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
    if args.predictions is not None and args.corruptions is not None:
        fail(
            "--corruptions runs the model on corrupted images: give -m MODEL -w WEIGHTS or "
            "--onnx FILE instead of --predictions"
        )
    if args.predictions is not None and args.mc_samples is not None:
        fail("--mc-samples runs bayes_segnet: give -m bayes_segnet -w WEIGHTS, not --predictions")
    if args.train_ids and args.classes not in (None, "cityscapes19"):
        fail(
            f"--train-ids reads the 19 benchmark classes' train ids; score {args.classes} from "
            "label-id PNGs (drop --train-ids)"
        )
    if args.backend != REFERENCE_RUNTIME and args.onnx is None:
        fail(f"--backend {args.backend} runs an exported model: give --onnx FILE")
    if args.model is None and args.weights:
        fail("-w/--weights needs -m MODEL (the weights hold no model name); or give --onnx FILE")
    if args.corruptions:
        args.corruptions = list(dict.fromkeys(args.corruptions))  # each once, in order


def _source(args: argparse.Namespace) -> str:
    """What was scored, in words."""
    if args.predictions is not None:
        return f"predictions in {args.predictions}" + (" (train ids)" if args.train_ids else "")
    return f"model {args.model}" + (
        f" ({args.onnx}"
        + ("" if args.backend == REFERENCE_RUNTIME else f", {title(args.backend)}")
        + ")"
        if args.onnx
        else f" with weights {args.weights}"
    )


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
    scores = None
    if runs_model:
        scores = evaluate_model(args, root, progress)
        result = scores.result
    else:
        result = evaluate_predictions(args, root, progress)
    source = _source(args)
    seconds = time.perf_counter() - start
    num_images = len(ground_truth_files(root, args.split))
    runs = (
        ""
        if scores is None or scores.robustness is None
        else (
            f" ({1 + len(scores.corrupted)} runs of the model over them: clean and each "
            "corruption and severity)"
        )
    )
    notes = [
        f"{source}",
        f"ground truth: gtFine/{args.split} of {root} ({num_images} images){runs}",
        f"class set: {result['classSet']}",
        "metrics: cityscapesscripts evalPixelLevelSemanticLabeling (IoU, instance-weighted "
        "nIoU), reproduced by evaluate.py",
        f"mean IoU (classes) {result['averageScoreClasses']:.4f}, "
        f"iIoU {result['averageScoreInstClasses']:.4f}; scored in {seconds:.1f} s",
    ]
    report = markdown_report(result, notes=notes)
    written = [out / RESULT_JSON, out / RESULT_MARKDOWN, out / RESULT_PLOT]
    if scores is not None:
        report += "\n" + _write_model_extras(scores, out, source, written)
    write_json(out / RESULT_JSON, result)
    write_text(out / RESULT_MARKDOWN, report)
    plot_confusion(
        result, out / RESULT_PLOT, title=f"Confusion matrix (row-normalised, %): {source}"
    )
    print(report)
    print(
        f"{num_images} images in {seconds:.2f} s ({num_images / seconds:.1f} images/s); "
        f"wrote {', '.join(str(p) for p in written)}"
    )


def _write_model_extras(scores: Any, out: Any, source: str, written: list) -> str:
    """Write calibration.json (and robustness.json/.png); return their evaluation.md sections."""
    # after parsing: keeps --help and usage errors instant
    from evaluation.calibration import CALIBRATION_JSON
    from evaluation.report import calibration_markdown
    from evaluation.robustness import (
        ROBUSTNESS_JSON,
        ROBUSTNESS_PLOT,
        plot_robustness,
        robustness_markdown,
    )
    from utils.io import write_json

    write_json(out / CALIBRATION_JSON, scores.calibration)
    written.append(out / CALIBRATION_JSON)
    sections = calibration_markdown(scores.calibration)
    if scores.robustness is not None:
        write_json(out / ROBUSTNESS_JSON, scores.robustness)
        plot_robustness(
            scores.robustness,
            out / ROBUSTNESS_PLOT,
            title=f"mIoU under corruptions (Cityscapes-C style): {source}",
        )
        written += [out / ROBUSTNESS_JSON, out / ROBUSTNESS_PLOT]
        sections += "\n" + robustness_markdown(scores.robustness)
    return sections


if __name__ == "__main__":
    main()
