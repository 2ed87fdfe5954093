"""Segment photos with a trained model and write pictures people can look at.

Runs a model (Keras weights, or an exported ONNX file through onnxruntime or OpenVINO) over a Cityscapes
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
  python predict.py -m fastscnn --onnx fastscnn.onnx --input "photos/*.jpg" -r runs/mine
  python predict.py --onnx fastscnn.onnx --backend openvino --input photos/ -r runs/mine
  python predict.py -m bayes_segnet -w bayes.weights.h5 --mc-samples 50 --input photos/
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from datasets.options import add_dataset_args
from inference.runtimes import REFERENCE_RUNTIME, add_backend_arg
from models.options import add_model_args
from utils.class_options import add_classes_arg
from utils.cli import fail, guard, make_parser, non_negative_float, positive_int, quiet_tensorflow


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = make_parser(__doc__)
    add_model_args(
        parser,
        target_size_help="size H,W the model runs at (default: its training crop, rounded to "
        "the sizes it takes); outputs are at each photo's own size",
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
        help="run this exported .onnx file through --backend instead of Keras "
        "(-m still names the model, for its class layout)",
    )
    add_backend_arg(model)
    model.add_argument(
        "--mc-samples",
        type=positive_int,
        default=None,
        help="bayes_segnet: Monte Carlo dropout samples T (about 50); writes an "
        "uncertainty map too",
    )
    model.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo dropout masks")
    add_classes_arg(
        model,
        "the outputs name and colour its classes, and label ids come from its table "
        "(default: the class set the weights or ONNX file records, else cityscapes19)",
    )
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
        help="a folder (searched recursively) or a glob of photos of any size "
        "(.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp, any case; other files are passed "
        "over and counted), instead of a Cityscapes split",
    )
    data.add_argument(
        "--limit", type=positive_int, default=None, help="segment only the first N photos (sorted)"
    )
    run = parser.add_argument_group("output")
    run.add_argument("--batch", type=positive_int, default=1, help="photos per model call")
    run.add_argument(
        "-r",
        "--results-path",
        default="runs/predictions",
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


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@guard(
    on_interrupt="the outputs of the photos finished so far are complete; a rerun segments "
    "every photo again"
)
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    args = build_parser().parse_args(argv)
    if args.weights is None and args.onnx is None:
        fail("give trained weights with -w/--weights (or an exported model with --onnx FILE)")
    if args.weights is not None and args.onnx is not None:
        fail("give either -w/--weights (Keras) or --onnx FILE (an export), not both")
    if args.backend != REFERENCE_RUNTIME and args.onnx is None:
        fail(f"--backend {args.backend} runs an exported model: give --onnx FILE")
    if not 0.0 <= args.alpha <= 1.0:
        fail(f"--alpha must be between 0 and 1, got {args.alpha}")
    quiet_tensorflow()
    # After quiet_tensorflow: the segmenter imports Keras and the model files.
    from datasets.cityscapes import BadFileError, skip_bad_hint
    from datasets.options import dataset_root
    from inference import photos
    from inference.runtimes import parity_line, title
    from inference.segmenter import Segmenter
    from models.options import model_options
    from utils.io import check_writable_dir
    from utils.progress import progress_bar

    out = check_writable_dir(args.results_path)
    skipped_before = 0  # unreadable images found while listing --input
    if args.input:
        found = photos.input_items(args.input, args.skip_bad, warn=_warn)
        if found.passed_over:
            count = len(found.passed_over)
            print(
                f"note: passed over {count} file{'' if count == 1 else 's'} in --input that "
                f"{'is' if count == 1 else 'are'} not an image (not "
                f"{'/'.join(photos.IMAGE_EXTENSIONS)}), e.g. {str(found.passed_over[0])!r}",
                file=sys.stderr,
            )
        items, skipped_before = found.items, len(found.skipped)
    else:
        items = photos.dataset_items(dataset_root(args), args.split, coarse=args.coarse)
    if args.limit:
        items = items[: args.limit]
    segmenter = Segmenter(
        args.model,
        weights=args.weights,
        input_size=args.target_size,
        options=model_options(args),
        onnx=args.onnx,
        mc_samples=args.mc_samples,
        seed=args.seed,
        runtime=args.backend,
        classes=args.classes,
    )
    try:
        with progress_bar(len(items), "predict", "image", sys.stderr, args.no_progress) as bar:
            tally = photos.segment_items(
                segmenter,
                items,
                out,
                batch=args.batch,
                alpha=args.alpha,
                skip_bad=args.skip_bad,
                warn=_warn,
                progress=bar.update,
            )
    except BadFileError as exc:  # the outputs of the photos before it are complete
        raise (exc if args.skip_bad else skip_bad_hint(exc)) from None
    skipped = skipped_before + tally.skipped
    if tally.done == 0:
        fail(f"no image could be read ({skipped} skipped); nothing was written")
    engine = title(segmenter.backend) if args.onnx else "Keras"
    if segmenter.parity is not None:
        print(parity_line(segmenter.parity, segmenter.backend))
    size = segmenter.input_size
    print(
        f"{tally.done} images segmented ({skipped} skipped) with {segmenter.name} ({engine}) "
        f"at {size[0]}x{size[1]}, classes {segmenter.class_set.name}: "
        f"{tally.done / tally.seconds:.2f} images/s overall, "
        f"{1000 * tally.model_seconds / tally.done:.1f} ms/image in the model; outputs in {out}"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
