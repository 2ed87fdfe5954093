"""Runs of the training, data and evaluation benchmarks, each written as summary files.

Each run calls its benchmark (training throughput, the input pipeline against the decode
ceiling, our evaluator against the official one), writes STEM.{json,csv,md} with the machine,
command and load, and returns the result with the text table to show.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.latency import LoadMeter, base_meta
from bench.report import machine_lines, write_summary
from bench.rows import spec_label
from utils.errors import BadInput
from utils.io import check_writable_dir, write_text

DATA_NOTES = """
## Reading the figures

- **pipeline**: `datasets.pipeline.build_dataset(training=True)` at the given size in steady
  state: decode, label check and mapping, random scale and crop, flip, colour jitter, batching.
- **decode ceiling**: the same files' image and label PNGs decoded and nothing else, with the
  pipeline's own decoder (imagecodecs) in as many threads as the pipeline has parallel calls.
  `share_of_ceiling` is the pipeline against it (the issue's target: 0.85).
- **opencv / tf ceilings**: the same with OpenCV's and with TensorFlow's PNG decoders, which are
  slower here; a pipeline above 1.0 of one of them is faster than that decoder alone.
- Every images/s figure is the fastest of the alternating runs listed in
  `all_runs_images_per_s`; `*_cpu_ms_per_image` is the process CPU time per image of that run
  (all threads), which tells how much work an image costs independently of how well the cores
  were kept busy.
- `*_ms_one_thread`: the pipeline's steps on one thread over the same files, each image freshly
  decoded as in training (image decode, label decode and check, augmentation). Their sum is
  the least CPU an image can cost; the pipeline's CPU time beyond it is tf.data's per-image
  work (about 1.5 ms: the numpy_function call and copying each image into its batch) and the
  cost of handing full frames between threads, whose memory then is no longer in the cache.
"""


def run_train(
    specs: list[tuple[str, dict[str, Any]]] | None,
    size: tuple[int, int],
    batch_size: int,
    steps: int,
    warmup_steps: int,
    xla: bool,
    mixed_precision: bool,
    output_dir: str | os.PathLike,
    command: str = "",
) -> tuple[list[dict[str, Any]], str]:
    """Training images/s per model; writes benchmark_train.{md,csv,json}.

    Args:
        specs: (name, options) per model; None: every registered model.
        size: (H, W) crop; batch_size, steps and warmup_steps: of each model's timed run.
        xla: compile the step with XLA; mixed_precision: mixed_float16 (bfloat16 on a CPU).
        output_dir: folder of the result files; command: what reproduces the run.

    Returns:
        The rows and their text table.
    """
    # The training step and the registry import TensorFlow and Keras.
    from bench.train_speed import measure_train_throughput
    from models import MODELS

    out_dir = check_writable_dir(output_dir)
    t_start, load = time.monotonic(), LoadMeter()
    rows = []
    for name, opts in specs or [(n, {}) for n in MODELS]:
        row: dict[str, Any] = {
            "model": spec_label(name, opts),
            "height": size[0],
            "width": size[1],
            "batch": batch_size,
            "xla": xla,
            "mixed_precision": mixed_precision,
        }
        try:
            row.update(
                measure_train_throughput(
                    name, size, batch_size, steps, warmup_steps, xla, mixed_precision, **opts
                )
            )
            row.setdefault("status", "ok")
        except BadInput as exc:  # e.g. --xla with --mixed-precision on a CPU
            row["status"] = f"error: {exc}"
        rows.append(row)
    meta = base_meta(command, t_start, load)
    table = write_summary(out_dir, "benchmark_train", "Training throughput", meta, rows)
    return rows, table


FIT_NOTES = """
## Reading the figures

One model trained for `steps` optimizer steps (train.py's pipeline and augmentation), then the
`split` scored three ways with the same weights, at full resolution with the official class
mIoU (as train.py validates and evaluate.py scores):

- **moving**: inference mode with the batch-norm moving statistics as training left them (what a
  run without precise batch norm, `--precise-bn 0`, saves);
- **precise**: inference mode after precise batch norm (`precise_bn_images` training images;
  what train.py saves by default);
- **training_mode**: each validation batch normalised with its own statistics.

`moving` far below `training_mode` means the moving statistics do not fit the weights: the
model predicts the majority class at inference time. `precise` close to `training_mode` is what a
working run gives. Synthetic data is easier than real frames: this checks the mechanism, not
Cityscapes accuracy.
"""


def run_fit(
    specs: list[tuple[str, dict[str, Any]]],
    root: Path,
    synthetic: bool,
    momenta: list[float | None],
    output_dir: str | os.PathLike,
    command: str = "",
    log: Any = None,
    **fit: Any,
) -> tuple[list[dict[str, Any]], str]:
    """The learning check per model and batch-norm momentum; writes benchmark_fit.{md,csv,json}.

    Args:
        specs: (name, options) per model.
        root: the data set; synthetic: whether it was generated.
        momenta: batch-norm momenta to try (None: the model's own).
        output_dir: folder of the result files; command: what reproduces the run.
        log: receives progress lines.
        **fit: size, batch_size, steps, precise_images, optimizer, learning_rate, split, seed
            of bench.fit.measure_fit.
    """
    # The training set-up imports TensorFlow and Keras.
    from bench.fit import measure_fit

    out_dir = check_writable_dir(output_dir)
    t_start, load = time.monotonic(), LoadMeter()
    rows = []
    for name, opts in specs:
        for momentum in momenta:
            row: dict[str, Any] = {"model": spec_label(name, opts), "root": str(root)}
            row["synthetic"] = synthetic
            row.update(measure_fit(name, root, bn_momentum=momentum, log=log, **fit, **opts))
            rows.append(row)
    meta = base_meta(command, t_start, load)
    table = write_summary(
        out_dir, "benchmark_fit", "Learning check: inference against training mode", meta, rows
    )
    page = out_dir / "benchmark_fit.md"
    write_text(page, page.read_text() + FIT_NOTES)
    return rows, table


def run_data(
    root: Path,
    synthetic: bool,
    size: tuple[int, int],
    batch_size: int,
    output_dir: str | os.PathLike,
    command: str = "",
    **pipeline: Any,
) -> tuple[dict[str, Any], str]:
    """tf.data pipeline images/s against the decode ceiling; writes benchmark_data.{md,csv,json}.

    Args:
        root: the data set; synthetic: whether it was generated.
        size: (H, W) crop; batch_size: of the pipeline.
        output_dir: folder of the result files; command: what reproduces the run.
        **pipeline: num_images, split, workers, repeats of benchmark_pipeline.

    Returns:
        The result row and its text table.
    """
    # The pipeline imports TensorFlow.
    from bench.data import benchmark_pipeline

    out_dir = check_writable_dir(output_dir)
    t_start, load = time.monotonic(), LoadMeter()
    result = benchmark_pipeline(root, size, batch_size, **pipeline)
    row = {"root": str(root), "synthetic": synthetic, **result}
    meta = base_meta(command, t_start, load)
    title = "Input pipeline throughput"
    table = write_summary(out_dir, "benchmark_data", title, meta, [row])
    page = out_dir / "benchmark_data.md"
    write_text(page, page.read_text() + DATA_NOTES)
    return row, table


def run_eval(
    root: Path,
    synthetic: bool,
    output_dir: str | os.PathLike,
    command: str = "",
    **evaluation: Any,
) -> tuple[dict[str, Any], str]:
    """Our evaluator against the official one; writes benchmark_eval.{md,csv,json}.

    Args:
        root: the data set; synthetic: whether it was generated.
        output_dir: folder of the result files; command: what reproduces the run.
        **evaluation: num_files, split, predictions, workers, official, repeats of
            benchmark_evaluation.

    Returns:
        The result row and its text table.
    """
    # The evaluation benchmark imports the evaluator, cityscapesscripts' helpers and OpenCV.
    from bench.eval_speed import benchmark_evaluation, speed_markdown

    out_dir = check_writable_dir(output_dir)
    t_start, load = time.monotonic(), LoadMeter()
    result = benchmark_evaluation(root, **evaluation)
    row = {"root": str(root), "synthetic": synthetic, **result}
    meta = base_meta(command, t_start, load)
    title = "Evaluation: ours against cityscapesscripts"
    table = write_summary(out_dir, "benchmark_eval", title, meta, [row])
    # The page people read: the figures in words, then the machine, versions, command and load.
    page = speed_markdown(result)
    write_text(out_dir / "benchmark_eval.md", page + "\n" + "\n".join(machine_lines(meta)) + "\n")
    return row, table
