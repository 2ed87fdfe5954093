"""Export a model to ONNX for onnxruntime and TensorRT (Jetson), then check the file.

After writing the file it always runs onnx.checker, compares onnxruntime with Keras on
street-like images (max |logit difference| and argmax agreement) and looks for constructs
TensorRT's ONNX parser rejects; it prints a summary (opset, inputs/outputs, op counts, size).

Exit status: 0 when every check passes; 1 when the parity check fails (agreement below 99.9% or
a logit difference above 1e-3 x max(1, max |logit|) for float32; a model whose outputs jump at
pooling ties, bayes_segnet, needs 99.5% agreement and has its relative difference reported; see
deploy/checks.py and docs/jetson.md for float16) or the graph holds a construct TensorRT rejects
(unless --skip-trt-check); 2 for bad
input (unknown model, weights of another model or size, an opset tf2onnx does not write, an
output path that cannot be written), with no file left behind.

Examples:
  python convert_to_onnx.py -m fastscnn -t 1024,2048 -w runs/fastscnn/best.weights.h5
  python convert_to_onnx.py -m deeplabv3+ --backbone mobilenetv2 --nchw --argmax --precision fp16 --trt
  python convert_to_onnx.py -m unet -t 512,1024 --dynamic-batch -o exports/unet_dyn.onnx
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deploy.options import DEFAULT_OPSET
from models.options import add_model_args
from utils.cli import guard, make_parser, positive_int, quiet_tensorflow

DEFAULT_SIZE = (1024, 2048)


def build_parser() -> argparse.ArgumentParser:
    """The convert_to_onnx.py argument parser."""
    parser = make_parser(__doc__)
    add_model_args(parser)
    parser.add_argument(
        "-w",
        "--weights",
        default=None,
        help="trained weights (.weights.h5 or .keras) written by train.py (default: random "
        "initialisation with seed 0, so that the same command writes the same file)",
    )
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument(
        "-b", "--batch", type=positive_int, default=1, help="fixed batch size of the exported graph"
    )
    batch.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="export a dynamic batch axis named 'batch' instead of a fixed one",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help="ONNX opset (13..18; TensorRT 8.5+ parses up to 17, "
        "JetPack 4.6/5.0 (TensorRT 8.2/8.4) need 13)",
    )
    parser.add_argument(
        "--nchw",
        action="store_true",
        help="NCHW input (N,3,H,W) and logits (N,C,H,W), as TensorRT and "
        "DeepStream expect; default NHWC like Keras",
    )
    parser.add_argument(
        "--argmax",
        action="store_true",
        help="put argmax and the train id -> Cityscapes label id mapping in the "
        "graph: output 'label_ids' uint8 (N,H,W) instead of logits",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="fp16 stores weights and computes in float16 (input and output stay "
        "float32/uint8), checked by the float16 parity rule (inference/parity.py)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="ONNX file to write (default: exports/MODEL_HxW[_options].onnx)",
    )
    parser.add_argument(
        "--check-images",
        type=positive_int,
        default=2,
        help="number of synthetic street images for the parity check",
    )
    parser.add_argument(
        "--skip-trt-check",
        action="store_true",
        help="report constructs TensorRT rejects but do not fail on them "
        "(for files meant for onnxruntime only)",
    )
    parser.add_argument(
        "--trt",
        action="store_true",
        help="build a TensorRT engine with TensorRT's Python API (at --precision: TensorRT 10 "
        "sets its FP16 flag for fp16, 11 takes the float16 file's types), check it against "
        "onnxruntime by the parity rule and time it with the timing loop (trtexec's rule); "
        "trtexec too where it is installed; without TensorRT, print what to run on the device",
    )
    return parser


def default_output(args: argparse.Namespace, size: tuple[int, int]) -> Path:
    """exports/MODEL_HxW[_BACKBONE][_osN][_nchw][_argmax][_fp16][_dynamic|_bN].onnx."""
    parts = [args.model.replace("+", "plus"), f"{size[0]}x{size[1]}"]
    if args.backbone:
        parts.append(args.backbone)
    if args.output_stride:
        parts.append(f"os{args.output_stride}")
    parts += [flag for flag in ("nchw", "argmax") if getattr(args, flag)]
    if args.precision != "fp32":
        parts.append(args.precision)
    if args.dynamic_batch:
        parts.append("dynamic")
    elif args.batch != 1:
        parts.append(f"b{args.batch}")
    return Path("exports") / ("_".join(parts) + ".onnx")


@guard
def main(argv: Sequence[str] | None = None) -> int:
    """Export, check, optionally build a TensorRT engine; return the exit status."""
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    # After quiet_tensorflow: deploy imports TensorFlow, Keras and the model files.
    from deploy import export
    from deploy.checks import check_onnx
    from models.loading import check_weights_file
    from models.options import model_options

    size = args.target_size or DEFAULT_SIZE
    output = Path(args.output) if args.output else default_output(args, size)
    # Cheap checks first, so bad input fails before minutes of conversion.
    export.check_opset(args.opset)
    export.check_output_path(output)
    if args.weights is not None:
        check_weights_file(args.weights, args.model)
    else:  # the same random weights every run: the export is the same file byte for byte
        import keras

        keras.utils.set_random_seed(0)

    print(
        f"exporting {args.model} at {size[0]}x{size[1]} (opset {args.opset}) to {output}",
        flush=True,
    )
    result = export.export_onnx(
        args.model,
        output,
        input_size=size,
        batch=None if args.dynamic_batch else args.batch,
        opset=args.opset,
        nchw=args.nchw,
        argmax=args.argmax,
        precision=args.precision,
        weights=args.weights,
        **model_options(args),
    )
    print(result.summary.format())
    for fix in result.fixes:
        print(f"TensorRT rewrite: {fix}")
    with export.discard_on_error(output):  # a check that cannot run (exit 2) leaves no file
        check = check_onnx(output, result.keras_model, num_images=args.check_images)
    print(check.format())
    status = 0
    if check.errors or not check.checker_ok:
        print(f"error: {output} failed the checks above; do not deploy it", file=sys.stderr)
        status = 1
    elif check.trt_problems and not args.skip_trt_check:
        print(
            f"error: TensorRT's ONNX parser would reject {output} (see above); "
            "pass --skip-trt-check to keep it for onnxruntime only",
            file=sys.stderr,
        )
        status = 1

    if args.trt:
        status = max(status, build_engine(output, args.precision))
    return status


def build_engine(onnx_path: Path, precision: str) -> int:
    """Build, check and time a TensorRT engine (deploy.tensorrt), trtexec as a cross-check
    where it exists, or print how to do it on the device; the exit status."""
    # after parsing: keeps --help and usage errors instant
    from deploy import tensorrt
    from inference.runtimes import available

    trtexec = tensorrt.find_trtexec()
    why = available("tensorrt")
    if why is not None:
        if trtexec is None:
            print(f"no TensorRT here: {why}. On the Jetson or GPU node, copy {onnx_path} there")
            print("and run: python convert_to_onnx.py ... --trt, or with trtexec (JetPack):")
            print("  " + " ".join(tensorrt.trtexec_command(onnx_path, precision=precision)))
            print("(on a Jetson trtexec is /usr/src/tensorrt/bin/trtexec; see docs/jetson.md)")
            return 0
        return _trtexec_timing(tensorrt, onnx_path, precision, trtexec)
    report = tensorrt.build_and_check_engine(onnx_path, precision)
    print(report.format())
    status = 0
    if not report.parity.passed:
        print(f"error: the engine breaks the parity rule against onnxruntime: "
              f"{'; '.join(report.parity.errors)}", file=sys.stderr)  # fmt: skip
        status = 1
    if trtexec is not None:
        status = max(status, _trtexec_timing(tensorrt, onnx_path, precision, trtexec))
    return status


def _trtexec_timing(tensorrt, onnx_path: Path, precision: str, trtexec: str) -> int:
    """Build and time the engine with trtexec (the cross-check); its exit status."""
    command = tensorrt.trtexec_command(
        onnx_path, onnx_path.with_suffix(".trtexec.engine"), precision=precision, trtexec=trtexec
    )
    print("running: " + " ".join(command), flush=True)
    timing = tensorrt.run_trtexec(command)
    if timing.returncode != 0:
        print(timing.output_tail, file=sys.stderr)
        print(f"error: trtexec failed with status {timing.returncode}", file=sys.stderr)
        return 1
    stats = ", ".join(f"{k} {v:.3f} ms" for k, v in timing.latency_ms.items())
    print(f"trtexec: GPU compute {stats}; throughput {timing.throughput_qps} inferences/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
