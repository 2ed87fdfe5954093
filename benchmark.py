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

from bench.options import DEFAULT_OUTPUT_DIR, model_specs
from bench.options import build_parser as _build_parser
from utils.cli import guard, quiet_tensorflow
from utils.errors import BadInput
from utils.io import check_writable_dir

__all__ = ["DEFAULT_OUTPUT_DIR", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line (bench.options): inference options at the top level, then the
    subcommands; no TensorFlow or numpy is imported to build it."""
    return _build_parser(__doc__)


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
    from bench.latency import InferenceConfig, run_inference
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
        raise BadInput(
            f"unknown optimizer {args.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    for momentum in args.bn_momentum or []:
        if not 0.0 <= momentum < 1.0:
            raise BadInput(f"--bn-momentum values must be in [0, 1), got {momentum!r}")
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

    severities = list(args.severities) if args.severities else None  # parse_severities: 1-5
    if args.no_corruptions and (args.corruptions or severities):
        raise BadInput(
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
