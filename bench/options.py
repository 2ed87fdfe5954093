"""benchmark.py's command line: the inference options and the subcommands' parsers.

Light: it imports neither TensorFlow nor numpy (nor bench.latency, which does), so
`python benchmark.py --help` stays instant. The output folder and the reference size are
defined here and bench.latency takes them from here; the timing defaults come from
inference.timing, the runtime names and precisions from
inference.runtimes, the class sets from utils.class_options, the corruption names from
datasets.corruptions and the parsing of --severities from datasets.options, as evaluate.py's.
"""

from __future__ import annotations

import argparse
from typing import Any

from datasets.corruptions import CORRUPTIONS
from datasets.options import add_dataset_args, parse_severities
from inference.runtimes import PRECISIONS, RUNTIME_NAMES, RUNTIMES
from inference.timing import MIN_DURATION_S, MIN_ITERS, WARMUP_S
from utils.class_options import add_classes_arg
from utils.cli import (
    HelpFormatter,
    make_parser,
    non_negative_float,
    non_negative_int,
    parse_target_size,
    positive_int,
)
from utils.errors import BadInput

#: Where every command writes unless --output-dir says otherwise: ignored by git, so a run never
#: replaces the committed figures in results/ (regenerated only with --output-dir results).
DEFAULT_OUTPUT_DIR = "runs/benchmark"
#: Cityscapes' full size (H, W): the default input of the benchmarks.
REFERENCE_SIZE = (1024, 2048)


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
    get_info(name)  # BadInput listing the registered names
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise BadInput(
                f"model options are key=value pairs, e.g. "
                f"deeplabv3+:backbone=xception; got {text!r}"
            )
        options[key] = int(value) if value.isdigit() else value
    return name, options


def model_specs(texts: list[str] | None) -> list[tuple[str, dict[str, Any]]] | None:
    """The --models values parsed, or None (the subcommand's default models) when not given."""
    return [parse_model_spec(t) for t in texts] if texts else None


def backends_arg(text: str) -> list[str]:
    """Argparse type: a comma list of backends (inference.runtimes.RUNTIME_NAMES)."""
    items = [b.strip().lower() for b in text.split(",") if b.strip()]
    bad = [b for b in items if b not in RUNTIME_NAMES]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"backends are a comma list of {', '.join(RUNTIME_NAMES)}; got {text!r}"
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
        help="comma list of the runtimes (inference/runtimes): "
        + "; ".join(f"{name}: {entry.description}" for name, entry in RUNTIMES.items())
        + ". On this CPU tf takes about as long as onnxruntime and xla 11-19x longer, so add "
        "them with a larger --budget (default: the CPU runtimes of the exported file side by "
        "side, the fastest marked; one this machine lacks is left out with a note)",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32; fp16 runs tf/xla under Keras' mixed_float16 policy and exports a float16 "
        "ONNX file for the other runtimes (OpenVINO refuses it); bf16 runs tf/xla under "
        "mixed_bfloat16 (the other runtimes refuse it)",
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
        "--corruptions", nargs="+", choices=tuple(CORRUPTIONS), default=[], metavar="NAME",
        help="corruptions of the robustness evaluation (default: all nine of evaluate.py "
        "--corruptions)",
    )  # fmt: skip
    st.add_argument("--severities", type=parse_severities, default=None, metavar="S,S,...",
                    help="severities 1-5 of each corruption (default: all five)")  # fmt: skip
    st.add_argument("--no-corruptions", action="store_true",
                    help="evaluate clean images only")  # fmt: skip
    st.add_argument("--mc-samples", type=non_negative_int, default=8,
                    help="Monte Carlo dropout samples of bayes_segnet's uncertainty (0: none)")  # fmt: skip
    add_classes_arg(st, "trained and scored", default="cityscapes19")
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


def build_parser(description: str) -> argparse.ArgumentParser:
    """The benchmark.py parser: inference options at the top level, then the subcommands."""
    parser = make_parser(description)
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
