"""Benchmark the model zoo: inference speed, compute and memory per model and backend.

With no subcommand, times inference of every registered model on generated input (no data set
needed) through the chosen backends, within a total time budget, and writes
runs/benchmark/benchmark.{md,csv,json,png} (--output-dir DIR writes elsewhere; the committed
results/ is regenerated only with --output-dir results, see results/README.md). Subcommands give
the other figures, into the same folder:

  models   parameters and compute (GMACs / GFLOPs) beside the published figures (bench.model_table)
  train    training images/s (bench.train_speed.measure_train_throughput)
  data     input pipeline images/s against the decode ceiling (bench.data)
  fit      learning check: inference- against training-mode mIoU after brief training
           (bench.fit), without and with precise batch norm
  eval     our evaluator against the official cityscapesscripts one (bench.eval_speed)
  study    train, evaluate (accuracy, robustness, calibration), export and time each model:
           study.{md,csv,json,png}, accuracy against latency with the Pareto front (bench.study)

Timing follows trtexec: warm up for --warmup seconds (at least one call), then time calls one
by one until --min-iters calls AND --min-duration seconds are reached; the --budget (whole run,
split evenly over the remaining jobs as it goes) may stop a job earlier, which the table says.
Each job runs in its own process so its peak memory is its own (bench.latency, bench.jobs).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from bench.latency import DEFAULT_OUTPUT_DIR, REFERENCE_SIZE, InferenceConfig
from bench.jobs import BACKENDS
from bench.timing import MIN_DURATION_S, MIN_ITERS, WARMUP_S
from datasets.options import add_dataset_args
from utils.cli import (
    HelpFormatter,
    guard,
    make_parser,
    non_negative_float,
    non_negative_int,
    parse_target_size,
    positive_int,
    quiet_tensorflow,
)
from utils.io import check_writable_dir

# --------------------------------------------------------------------------- argument parsing


def add_output_dir(parser: argparse.ArgumentParser, files: str) -> None:
    """A subcommand's --output-dir; not given, the top-level one (default DEFAULT_OUTPUT_DIR)
    stays, so `benchmark.py --output-dir D models` and `benchmark.py models --output-dir D` agree."""
    parser.add_argument(
        "--output-dir",
        default=argparse.SUPPRESS,
        help=f"folder for {files} (default: {DEFAULT_OUTPUT_DIR}; --output-dir results "
        "regenerates the committed ones)",
    )


def parse_model_spec(text: str) -> tuple[str, dict[str, Any]]:
    """`name` or `name:key=value,key=value` (e.g. `deeplabv3+:backbone=xception`)."""
    from models import get_info  # the registry imports Keras

    name, _, rest = text.partition(":")
    get_info(name)
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(
                f"model options are key=value pairs, e.g. "
                f"deeplabv3+:backbone=xception; got {text!r}"
            )
        options[key] = int(value) if value.isdigit() else value
    return name, options


def model_specs(texts: list[str] | None) -> list[tuple[str, dict[str, Any]]] | None:
    """The --models values parsed, or None (the subcommand's default models) when not given."""
    return [parse_model_spec(t) for t in texts] if texts else None


def backends_arg(text: str) -> list[str]:
    """Argparse type: a comma list of backends."""
    items = [b.strip().lower() for b in text.split(",") if b.strip()]
    bad = [b for b in items if b not in BACKENDS]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"backends are a comma list of {', '.join(BACKENDS)}; got {text!r}"
        )
    return list(dict.fromkeys(items))


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    """Options of the inference benchmark (the default command)."""
    group = parser.add_argument_group("inference benchmark (the default command)")
    group.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="models to time, each NAME or NAME:key=value,... "
        "(e.g. deeplabv3+:backbone=xception); default: every registered "
        "model with its default options",
    )
    group.add_argument(
        "--sizes",
        nargs="+",
        type=parse_target_size,
        default=[REFERENCE_SIZE],
        metavar="H,W",
        help="input sizes; 1024,2048 is Cityscapes' full size",
    )
    group.add_argument(
        "--batch-sizes", nargs="+", type=positive_int, default=[1], metavar="N", help="batch sizes"
    )
    group.add_argument(
        "--backends",
        type=backends_arg,
        default=None,
        help="comma list of tf (Keras model as a TF graph), xla (the same with "
        "jit_compile), onnxruntime (tf2onnx export), openvino (the same ONNX file "
        "through OpenVINO, latency hint, checked against onnxruntime; pip install "
        "openvino==2026.4.1), tensorrt (trtexec, needs an NVIDIA GPU); on this CPU tf "
        "takes about as long as onnxruntime and xla 11-19x longer, so add them with a "
        "larger --budget (default: onnxruntime,openvino side by side, the faster marked; "
        "OpenVINO left out, with a note, where it is not installed)",
    )
    group.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="fp32; fp16/bf16 run tf/xla under Keras' mixed policy and "
        "TensorRT with --fp16/--bf16; onnxruntime runs a float16 export for "
        "fp16 and cannot run bf16",
    )
    group.add_argument(
        "--budget",
        type=non_negative_float,
        default=420.0,
        help="seconds for the whole run, split evenly over the jobs still to "
        "run; a job always times at least one call after its warm-up",
    )
    group.add_argument(
        "--min-iters",
        type=positive_int,
        default=MIN_ITERS,
        help="time at least this many calls per job (trtexec --iterations)",
    )
    group.add_argument(
        "--min-duration",
        type=non_negative_float,
        default=MIN_DURATION_S,
        help="and for at least this many seconds (trtexec --duration)",
    )
    group.add_argument(
        "--warmup",
        type=non_negative_float,
        default=WARMUP_S,
        help="warm-up seconds before timing, at least one call unless 0 (trtexec --warmUp)",
    )
    group.add_argument(
        "--onnx-layout",
        choices=("nhwc", "nchw"),
        default="nhwc",
        help="input and logits layout of the ONNX export for onnxruntime and "
        "TensorRT: nhwc is the models' own; nchw is what TensorRT samples "
        "and DeepStream expect",
    )
    group.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="onnxruntime intra-op threads and OpenVINO's INFERENCE_NUM_THREADS (default: "
        "every core this process may use)",
    )
    group.add_argument(
        "--profile",
        nargs="?",
        choices=("off", "auto", "all"),
        const="all",
        default="auto",
        help="run onnxruntime's profiler for 2 more calls and list the op types "
        "and nodes that take the time: for every onnxruntime job (all), or "
        "for those below 50%% of the dense peak seen so far (auto); --profile alone "
        "means all",
    )
    group.add_argument(
        "--name",
        default="benchmark",
        help="file name stem of the results (NAME.md, .csv, .json, .png)",
    )


def _add_models_command(sub: Any) -> None:
    """`models`: parameters and compute beside the published figures."""
    models = sub.add_parser(
        "models",
        help="parameters and GFLOPs beside published figures",
        formatter_class=HelpFormatter,
        description="List the registered models; with --params, build each "
        "(and its backbone variants) and count parameters and "
        "compute at --size, beside the published figures.",
    )
    models.add_argument(
        "--params",
        action="store_true",
        help="build every model and count its parameters and GMACs/GFLOPs",
    )
    models.add_argument(
        "--size",
        type=parse_target_size,
        default=REFERENCE_SIZE,
        metavar="H,W",
        help="input size for the compute count",
    )
    models.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="models (NAME or NAME:key=value,...); default: every registered "
        "model and its backbone variants",
    )
    add_output_dir(models, "models.{md,csv,json}")


def _add_train_command(sub: Any) -> None:
    """`train`: training images/s per model."""
    train = sub.add_parser(
        "train",
        help="training images/s per model",
        formatter_class=HelpFormatter,
        description="Training throughput (images/s) per model through "
        "bench.train_speed.measure_train_throughput.",
    )
    train.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="models (NAME or NAME:key=value,...); default: every registered model",
    )
    train.add_argument(
        "--size", type=parse_target_size, default=(512, 1024), metavar="H,W", help="crop size"
    )
    train.add_argument("-b", "--batch-size", type=positive_int, default=2, help="batch size")
    train.add_argument("--steps", type=positive_int, default=10, help="timed training steps")
    train.add_argument(
        "--warmup-steps", type=int, default=3, help="untimed steps first (tracing, compilation)"
    )
    train.add_argument("--xla", action="store_true", help="compile the step with XLA")
    train.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 on a GPU (mixed_bfloat16 on a CPU)",
    )
    add_output_dir(train, "benchmark_train.{md,csv,json}")


def _add_data_command(sub: Any) -> None:
    """`data`: the input pipeline against the decode ceiling."""
    data = sub.add_parser(
        "data",
        help="input pipeline images/s against the decode ceiling",
        formatter_class=HelpFormatter,
        description="Time the tf.data training pipeline (bench.data.benchmark_pipeline).",
    )
    add_dataset_args(data, coarse=False, skip_bad=False)
    data.add_argument(
        "--size", type=parse_target_size, default=REFERENCE_SIZE, metavar="H,W", help="crop size"
    )
    data.add_argument("-b", "--batch-size", type=positive_int, default=4, help="batch size")
    data.add_argument(
        "--num-images",
        type=positive_int,
        default=40,
        help="images to read (the split's files are cycled if it has fewer)",
    )
    data.add_argument("--split", default="train", help="split to read")
    data.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="threads of the ceiling and parallel calls of the pipeline (default: the CPU count)",
    )
    data.add_argument(
        "--repeats",
        type=positive_int,
        default=5,
        help="measure ceilings and pipeline in turn this many times; report the fastest of each",
    )
    add_output_dir(data, "benchmark_data.{md,json}")


def _add_fit_command(sub: Any) -> None:
    """`fit`: the learning check (inference against training mode after brief training)."""
    fit = sub.add_parser(
        "fit",
        help="learning check: inference- against training-mode mIoU after brief training",
        formatter_class=HelpFormatter,
        description="Train a model briefly (train.py's pipeline) and score a split in "
        "inference mode without and with precise batch norm, and in training mode "
        "(bench.fit.measure_fit). Data: -p/--path or CITYSCAPES_DATASET, else a generated "
        "synthetic tree (20 images of 512x1024 per split).",
    )
    add_dataset_args(fit, coarse=False, skip_bad=False)
    fit.add_argument(
        "--models", nargs="+", default=["fastscnn"], metavar="MODEL",
        help="models (NAME or NAME:key=value,...)",
    )  # fmt: skip
    fit.add_argument(
        "--size", type=parse_target_size, default=(256, 512), metavar="H,W", help="crop size"
    )
    fit.add_argument("-b", "--batch-size", type=positive_int, default=4, help="batch size")
    fit.add_argument("--steps", type=positive_int, default=300, help="optimizer steps")
    fit.add_argument("--optimizer", default="adam", help="optimizer (train.py's names)")
    fit.add_argument("-l", "--learning-rate", type=float, default=1e-3, help="constant rate")
    fit.add_argument(
        "--bn-momentum", type=float, nargs="+", default=None, metavar="M",
        help="batch-norm momenta to try, one row each (default: the model's own)",
    )  # fmt: skip
    fit.add_argument(
        "--precise-bn", type=non_negative_int, default=256, metavar="N",
        help="training images of the precise batch-norm estimate (0: none, the 'precise' "
        "scores are then the moving statistics')",
    )  # fmt: skip
    fit.add_argument("--split", default="val", choices=["train", "val"], help="split scored")
    fit.add_argument("--seed", type=int, default=0, help="seed of weights and augmentation")
    add_output_dir(fit, "benchmark_fit.{md,csv,json}")


def _add_eval_command(sub: Any) -> None:
    """`eval`: our evaluator against the official one."""
    ev = sub.add_parser(
        "eval",
        help="our evaluator against the official cityscapesscripts one",
        formatter_class=HelpFormatter,
        description="Time and compare the evaluation (benchmark_evaluation "
        "from the evaluation module).",
    )
    add_dataset_args(ev, coarse=False, skip_bad=False)
    ev.add_argument(
        "--num-files",
        type=positive_int,
        default=300,
        help="ground-truth files to evaluate (the first of the split, sorted); with "
        "--synthetic a tree of this many full-size scenes per split is generated once and cached",
    )
    ev.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="time ours, the ceiling and the official script in turn this many times; "
        "report the fastest of each",
    )
    ev.add_argument("--split", default="val", help="split to evaluate")
    ev.add_argument(
        "--predictions",
        default=None,
        help="folder of label-id PNG predictions (default: noisy ground truth "
        "written into a temporary folder)",
    )
    ev.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes of our evaluator and the ceiling (default: the CPUs)",
    )
    ev.add_argument(
        "--no-official",
        action="store_true",
        help="skip the official cityscapesscripts run (about 0.3 s per image)",
    )
    add_output_dir(ev, "benchmark_eval.{md,csv,json}")


def _add_study_command(sub: Any) -> None:
    """`study`: the comparison the suite exists for."""
    st = sub.add_parser(
        "study",
        help="train, evaluate, export and time each model; one table and plot",
        formatter_class=HelpFormatter,
        description="For each model: train it with its recipe (or take its weights from "
        "--weights-dir), evaluate it on the val split (official mIoU and iIoU, corruptions, "
        "calibration, safety classes), export it to ONNX and time it on every backend present; "
        "then write study.{md,csv,json} and study.png (mIoU against latency, Pareto front) into "
        "--output-dir. Each stage runs as its own command into OUTPUT/study/MODEL/ and is "
        "skipped when found finished, so rerunning an interrupted study continues it. "
        "scripts/slurm_study.sh runs it as a SLURM job array, one model per task.",
        epilog="Examples:\n"
        "  python benchmark.py study --synthetic --models fastscnn bisenetv2 --corruptions fog "
        "--severities 1,3\n"
        "  python benchmark.py study -p $CITYSCAPES_DATASET --models pidnet ddrnet "
        "--output-dir runs/study_full\n"
        "  python benchmark.py study -p $CITYSCAPES_DATASET --weights-dir trained/ --no-corruptions",
    )
    add_dataset_args(st, coarse=False, skip_bad=False)
    st.add_argument(
        "--models", nargs="+", default=None, metavar="MODEL",
        help="models (NAME or NAME:key=value,..., e.g. pidnet:variant=m); default: every "
        "registered model with its default options",
    )  # fmt: skip
    st.add_argument(
        "--weights-dir", default=None, metavar="DIR",
        help="take trained weights from DIR (MODEL.weights.h5, MODEL.keras or a train.py folder "
        "MODEL/last.weights.h5, or an earlier study's OUTPUT/study/ folder; MODEL with options as pidnet_variant-m) instead of training",
    )  # fmt: skip
    st.add_argument("-e", "--epochs", type=positive_int, default=None,
                    help="training epochs (default: the recipe's; --synthetic: 2)")  # fmt: skip
    st.add_argument("--crop", type=parse_target_size, default=None, metavar="H,W",
                    help="training crop (default: the recipe's; --synthetic: --size)")  # fmt: skip
    st.add_argument("-b", "--batch-size", type=positive_int, default=None,
                    help="training batch (default: the recipe's; --synthetic: 2)")  # fmt: skip
    st.add_argument(
        "--size", type=parse_target_size, default=None, metavar="H,W",
        help="input size of evaluation, export and timing (default: 1024,2048, Cityscapes' "
        "full size; --synthetic: 128,256, also the generated images' size)",
    )  # fmt: skip
    st.add_argument(
        "--backends", type=backends_arg, default=None,
        help="backends to time (default: onnxruntime, OpenVINO where installed, TensorRT where "
        "its Python package is installed)",
    )  # fmt: skip
    st.add_argument("--budget", type=non_negative_float, default=60.0,
                    help="seconds of timing per model, over its backends")  # fmt: skip
    st.add_argument(
        "--corruptions", nargs="+", default=[], metavar="NAME",
        help="corruptions of the robustness evaluation (default: all nine of evaluate.py "
        "--corruptions)",
    )  # fmt: skip
    st.add_argument("--severities", default=None, metavar="S,S,...",
                    help="severities 1-5 of each corruption (default: all five)")  # fmt: skip
    st.add_argument("--no-corruptions", action="store_true",
                    help="evaluate clean images only")  # fmt: skip
    st.add_argument("--mc-samples", type=non_negative_int, default=8,
                    help="Monte Carlo dropout samples of bayes_segnet's uncertainty (0: none)")  # fmt: skip
    st.add_argument("--classes", default="cityscapes19",
                    choices=("cityscapes19", "categories", "rail20"),
                    help="class set trained and scored")  # fmt: skip
    st.add_argument("--seed", type=int, default=0, help="seed of training and corruptions")
    st.add_argument("--task", type=non_negative_int, default=None, metavar="I",
                    help="run only model I (0-based) of --models and write no report (one task "
                    "of a job array)")  # fmt: skip
    st.add_argument("--report-only", action="store_true",
                    help="run nothing: write the report from the stages found finished")  # fmt: skip
    st.add_argument("--list", action="store_true",
                    help="print the study's models, one per line, and exit (prepares a "
                    "--synthetic tree first)")  # fmt: skip
    add_output_dir(st, "study.{md,csv,json,png} and the stages under study/")


def build_parser() -> argparse.ArgumentParser:
    """The benchmark.py parser: inference options at the top level, then the subcommands."""
    parser = make_parser(__doc__)
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help="folder for the result files of every command (results/ holds the committed "
        "ones: pass --output-dir results only to regenerate them)",
    )
    add_timing_args(parser)
    sub = parser.add_subparsers(
        dest="command",
        metavar="{models,train,data,fit,eval,study}",
        help="other figures (default: the inference benchmark)",
    )

    _add_models_command(sub)
    _add_train_command(sub)
    _add_data_command(sub)
    _add_fit_command(sub)
    _add_eval_command(sub)
    _add_study_command(sub)
    return parser


# --------------------------------------------------------------------------- the commands


def command_line(argv: list[str] | None) -> str:
    """The command that reproduces a result."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "benchmark.py", *(shlex.quote(a) for a in args)])


class ProgressBars:
    """Progress bars (utils.progress) on stderr for the phases of the inference benchmark (its progress callback)."""

    UNITS = {"build + export": "model", "time": "job"}

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar: Any = None

    def __call__(self, phase: str, done: int, total: int, label: str) -> None:
        """Open the phase's bar on its first call, move it to `done`, close it at `total`."""
        # after parsing: keeps --help and usage errors instant
        from utils.progress import progress_bar

        if phase != self.phase:
            self.close()
            self.phase = phase
            unit = self.UNITS.get(phase, "step")
            self.bar = progress_bar(total, phase, unit, sys.stderr)
        self.bar.update(done - self.bar.n)
        if label:
            self.bar.set_postfix_str(label)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Close the open bar, if any."""
        if self.bar is not None:
            self.bar.close()
        self.bar, self.phase = None, None


def inference(args: argparse.Namespace, argv: list[str] | None) -> None:
    """The default command: time inference, write the files, print the table."""
    # TensorFlow is loaded already (quiet_tensorflow): silence the Python deprecation warnings
    # the exporter triggers.
    import tensorflow as tf

    # after parsing: keeps --help and usage errors instant
    from bench.latency import run_inference
    from bench.report import text_summary

    tf.get_logger().setLevel("ERROR")
    config = InferenceConfig(
        output_dir=args.output_dir,
        name=args.name,
        models=model_specs(args.models),
        sizes=args.sizes,
        batch_sizes=args.batch_sizes,
        backends=args.backends,
        precision=args.precision,
        budget_s=args.budget,
        min_iters=args.min_iters,
        min_duration_s=args.min_duration,
        warmup_s=args.warmup,
        onnx_layout=args.onnx_layout,
        threads=args.threads,
        profile=args.profile,
        command=command_line(argv),
    )
    bars = ProgressBars()
    try:
        report = run_inference(
            config, progress=bars, note=lambda text: print(f"note: {text}", file=sys.stderr)
        )
    finally:
        bars.close()
    print(text_summary(report, Path(args.output_dir) / args.name))


def models(args: argparse.Namespace, argv: list[str] | None) -> None:
    """`models`: list the registry; with --params, count parameters and compute."""
    # after parsing: keeps --help and usage errors instant
    from bench import model_table as bench_models

    specs = model_specs(args.models)
    if not args.params:
        print("\n".join(bench_models.describe_models(specs or bench_models.default_specs())))
        return
    rows = bench_models.run_models(specs, args.size, args.output_dir, command_line(argv))
    print(bench_models.text_summary(rows))
    print(f"results in {Path(args.output_dir)}/models.{{md,csv,json}}")


def train(args: argparse.Namespace, argv: list[str] | None) -> None:
    """`train`: training images/s per model."""
    # after parsing: keeps --help and usage errors instant
    from bench.runs import run_train

    _, table = run_train(
        model_specs(args.models),
        args.size,
        args.batch_size,
        args.steps,
        args.warmup_steps,
        args.xla,
        args.mixed_precision,
        args.output_dir,
        command_line(argv),
    )
    _print_summary(table, args.output_dir, "benchmark_train")


def data(args: argparse.Namespace, argv: list[str] | None) -> None:
    """`data`: the input pipeline against the decode ceiling."""
    # after parsing: keeps --help and usage errors instant
    from bench.runs import run_data
    from datasets.options import dataset_root

    check_writable_dir(args.output_dir)  # before a --synthetic tree is generated
    _, table = run_data(
        dataset_root(args),
        bool(args.synthetic),
        args.size,
        args.batch_size,
        args.output_dir,
        command_line(argv),
        num_images=args.num_images,
        split=args.split,
        workers=args.workers,
        repeats=args.repeats,
    )
    _print_summary(table, args.output_dir, "benchmark_data")


def fit(args: argparse.Namespace, argv: list[str] | None) -> None:
    """`fit`: the learning check."""
    # after parsing: keeps --help and usage errors instant
    import os

    from bench.runs import run_fit
    from datasets.options import dataset_root
    from training.options import OPTIMIZERS

    if args.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {args.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    for momentum in args.bn_momentum or []:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"--bn-momentum values must be in [0, 1), got {momentum!r}")
    check_writable_dir(args.output_dir)  # before a synthetic tree is generated
    if args.path is None and not os.environ.get("CITYSCAPES_DATASET"):
        args.synthetic = True
    root = dataset_root(args, num_synthetic=20, synthetic_size=(512, 1024))
    _, table = run_fit(
        model_specs(args.models),
        root,
        bool(args.synthetic),
        args.bn_momentum or [None],
        args.output_dir,
        command_line(argv),
        log=print,
        size=args.size,
        batch_size=args.batch_size,
        steps=args.steps,
        precise_images=args.precise_bn,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        split=args.split,
        seed=args.seed,
    )
    _print_summary(table, args.output_dir, "benchmark_fit")


def evaluation(args: argparse.Namespace, argv: list[str] | None) -> None:
    """`eval`: our evaluator against the official one."""
    # after parsing: keeps --help and usage errors instant
    from bench.runs import run_eval
    from datasets.options import dataset_root

    check_writable_dir(args.output_dir)  # before a --synthetic tree is generated
    _, table = run_eval(
        dataset_root(args, num_synthetic=max(20, args.num_files)),
        bool(args.synthetic),
        args.output_dir,
        command_line(argv),
        num_files=args.num_files,
        split=args.split,
        predictions=args.predictions,
        workers=args.workers,
        official=not args.no_official,
        repeats=args.repeats,
    )
    _print_summary(table, args.output_dir, "benchmark_eval")


def study(args: argparse.Namespace, argv: list[str] | None) -> int:
    """`study`: train, evaluate, export and time each model; the table and the plot."""
    # after parsing: keeps --help and usage errors instant
    from bench.study import StudyConfig, run_study, study_root, text_summary, write_report

    severities = None
    if args.severities:
        try:
            severities = [int(s) for s in args.severities.split(",") if s.strip()]
        except ValueError:
            severities = []
        if not severities or any(not 1 <= s <= 5 for s in severities):
            raise ValueError(
                f"--severities takes numbers 1 to 5 like 1,3,5; got {args.severities!r}"
            )
    if args.no_corruptions and (args.corruptions or severities):
        raise ValueError(
            "--no-corruptions evaluates clean images only: drop --corruptions/--severities"
        )
    from bench.model_table import default_specs

    specs = model_specs(args.models) or list(dict.fromkeys((n, ()) for n, _ in default_specs()))
    config = StudyConfig(
        output_dir=args.output_dir,
        models=[(n, dict(o)) for n, o in specs],
        root=args.path,
        synthetic=bool(args.synthetic),
        weights_dir=args.weights_dir,
        epochs=args.epochs,
        crop=args.crop,
        batch=args.batch_size,
        size=args.size,
        backends=args.backends,
        budget_s=args.budget,
        corruptions=None if args.no_corruptions else list(args.corruptions),
        severities=severities,
        mc_samples=args.mc_samples,
        classes=args.classes,
        seed=args.seed,
        command=command_line(argv),
    )
    check_writable_dir(args.output_dir)
    if args.list:  # what scripts/slurm_study.sh submits: checked and prepared here
        from bench.study import given_weights, study_models

        models = study_models(config)
        for model in models:
            given_weights(config, model)
        study_root(config)
        print("\n".join(m.label for m in models))
        return 0
    if args.report_only:
        paths = write_report(config)
        failures: list[str] = []
    else:
        failures, paths = run_study(
            config, log=lambda line: print(line, flush=True), task=args.task,
            report=args.task is None,
        )  # fmt: skip
    if paths:
        print(text_summary(config))
        print(f"results in {Path(args.output_dir)}/study.{{md,csv,json,png}}")
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failures else 0


def _print_summary(table: str, output_dir: str, stem: str) -> None:
    """Print a subcommand's table and where its files went."""
    print(table)
    print(f"results in {Path(output_dir)}/{stem}.{{md,csv,json}}")


COMMANDS = {
    "models": models,
    "train": train,
    "data": data,
    "fit": fit,
    "eval": evaluation,
    "study": study,
    None: inference,
}


#: What Ctrl-C leaves: every command writes its files only when it completes (the inference
#: benchmark's exports live in a temporary folder); a generated --synthetic tree is cached.
INTERRUPT_HINT = (
    "no result file was written (each command writes its files when it completes; a generated "
    "--synthetic tree is cached and reused): rerun the command to measure again; fewer --models "
    "or a smaller --budget make a shorter run"
)


@guard(on_interrupt=INTERRUPT_HINT)
def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen benchmark."""
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    return COMMANDS[args.command](args, argv) or 0


if __name__ == "__main__":
    sys.exit(main())
