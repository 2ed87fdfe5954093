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
  python convert_to_onnx.py -m deeplabv3+ --backbone mobilenetv2 --nchw --argmax --fp16 --trt
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
        "--fp16",
        action="store_true",
        help="store weights and compute in float16 (input and output stay "
        "float32/uint8); checked with looser thresholds",
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
        help="build a TensorRT engine with TensorRT's Python API (TensorRT 10: --fp16 sets its "
        "FP16 flag; 11: --fp16 exports float16, the engine takes the file's types), check it "
        "against onnxruntime and time it as trtexec does; trtexec too where it is installed; "
        "without TensorRT, print what to run on the device",
    )
    return parser


def default_output(args: argparse.Namespace, size: tuple[int, int]) -> Path:
    """exports/MODEL_HxW[_BACKBONE][_osN][_nchw][_argmax][_fp16][_dynamic|_bN].onnx."""
    parts = [args.model.replace("+", "plus"), f"{size[0]}x{size[1]}"]
    if args.backbone:
        parts.append(args.backbone)
    if args.output_stride:
        parts.append(f"os{args.output_stride}")
    parts += [flag for flag in ("nchw", "argmax", "fp16") if getattr(args, flag)]
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
        fp16=args.fp16,
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
        status = max(status, build_engine(output, args.fp16))
    return status


def build_engine(onnx_path: Path, fp16: bool) -> int:
    """Build, check and time a TensorRT engine with TensorRT's Python API (trtexec as a
    cross-check where it exists), or print how to do it on the device."""
    # after parsing: keeps --help and usage errors instant
    import numpy as np

    from deploy import tensorrt
    from deploy.checks import sample_images
    from deploy.graph import summarize_onnx
    from inference.onnx_backend import onnx_session, run_onnx

    trtexec = tensorrt.find_trtexec()
    try:
        tensorrt.import_tensorrt()
    except ValueError as exc:
        if trtexec is None:
            print(f"no TensorRT here: {exc}. On the Jetson or GPU node, copy {onnx_path} there")
            print("and run: python convert_to_onnx.py ... --trt, or with trtexec (JetPack):")
            print("  " + " ".join(tensorrt.trtexec_command(onnx_path, fp16=fp16)))
            print("(on a Jetson trtexec is /usr/src/tensorrt/bin/trtexec; see docs/jetson.md)")
            return 0
        return _trtexec_timing(tensorrt, onnx_path, fp16, trtexec)
    build = tensorrt.build_engine(onnx_path, fp16=fp16)
    print(
        f"TensorRT {build.tensorrt_version} engine {build.path} ({build.precision}, {build.how}): "
        f"{build.size_bytes / 2**20:.1f} MiB, built in {build.build_seconds:.0f} s"
    )
    runner = tensorrt.EngineRunner(build.path, batch=1)
    meta = summarize_onnx(onnx_path).metadata
    size = tuple(int(v) for v in meta["input_size"].split(","))
    nchw = meta.get("layout", "NHWC") == "NCHW"
    images = sample_images(1, size)
    reference = run_onnx(onnx_session(onnx_path, ["CPUExecutionProvider"]), images)
    feed = np.ascontiguousarray(images.transpose(0, 3, 1, 2) if nchw else images)
    got = runner.infer(feed.astype(runner.host[runner.inputs[0]].dtype))[runner.outputs[0]]
    if nchw and got.ndim == 4:
        got = got.transpose(0, 2, 3, 1)
    difference, agreement = tensorrt.compare_outputs(reference, got)
    print(
        f"TensorRT against onnxruntime (CPU) on one image: max |difference| {difference:.3g}, "
        f"argmax agreement {100 * agreement:.3f}%"
    )
    timing = runner.time()
    compute, latency = timing.compute_ms, timing.latency_ms
    print(
        f"TensorRT timing, {timing.runs} runs after 200 ms of warm-up: GPU compute median "
        f"{compute['median']:.3f} ms (p90 {compute['p90']:.3f}, p99 {compute['p99']:.3f}); "
        f"latency with copies median {latency['median']:.3f} ms (in {timing.copy_in_ms:.3f}, "
        f"out {timing.copy_out_ms:.3f}); {timing.images_per_s:.1f} images/s"
    )
    status = 0 if agreement >= 0.995 else 1
    if status:
        print(f"error: the engine agrees with onnxruntime on {100 * agreement:.2f}% of pixels "
              "only (99.5% needed)", file=sys.stderr)  # fmt: skip
    if trtexec is not None:
        status = max(status, _trtexec_timing(tensorrt, onnx_path, fp16, trtexec))
    return status


def _trtexec_timing(tensorrt, onnx_path: Path, fp16: bool, trtexec: str) -> int:
    """Build and time the engine with trtexec (the cross-check); its exit status."""
    command = tensorrt.trtexec_command(
        onnx_path, onnx_path.with_suffix(".trtexec.engine"), fp16=fp16, trtexec=trtexec
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
