"""Learning-rate range test (Smith, 2017): sweep the rate exponentially and watch the loss.

The sweep trains for a bounded number of steps with the rate growing from `start` to `end`
(`training.schedules.ExponentialSweep`), smooths the loss with a bias-corrected exponential moving
average, stops as soon as the smoothed loss exceeds `diverge` times its best value (or turns
NaN), and restores the model's weights afterwards.

Suggestion: `--max-lr` is the rate at the steepest descent of the smoothed loss (most negative
slope against log10 of the rate) before the loss reaches its minimum, and `--min-lr` is a tenth
of it, the usual range for a triangular cyclic schedule.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from datasets.cityscapes import find_samples
from training.options import MOMENTUM_OPTIMIZERS
from training.schedules import ExponentialSweep
from training.setup import build_setup, input_fn
from utils.errors import BadInput
from utils.io import atomic_path, check_writable_dir, write_json, write_text

__all__ = [
    "FinderResult",
    "find_lr",
    "plot_view",
    "run_lr_finder",
    "save_finder_results",
    "suggest_range",
]


@dataclasses.dataclass
class FinderResult:
    """Rates tried, raw and smoothed losses, and the suggested range."""

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    min_lr: float
    max_lr: float
    diverged: bool


def suggest_range(learning_rates: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(min_lr, max_lr): steepest descent of the smoothed loss before its minimum, and a tenth.

    ValueError with fewer than 2 points.
    """
    lrs = np.asarray(learning_rates, np.float64)
    loss = np.asarray(smoothed, np.float64)
    finite = np.isfinite(loss)
    lrs, loss = lrs[finite], loss[finite]
    if lrs.size < 2:
        raise ValueError(f"the finder needs at least 2 finite losses, got {lrs.size}")
    lowest = int(np.argmin(loss))
    if lowest >= 1:
        slopes = np.diff(loss[: lowest + 1]) / np.diff(np.log10(lrs[: lowest + 1]))
        max_lr = float(lrs[int(np.argmin(slopes)) + 1])
    else:
        max_lr = float(lrs[0])
    return max_lr / 10.0, max_lr


def find_lr(
    step: Callable[[], float],
    learning_rate: Callable[[], float],
    steps: int,
    smoothing: float = 0.98,
    diverge: float = 4.0,
    progress: Callable[[int, float, float], None] | None = None,
) -> FinderResult:
    """Run the sweep: call `step()` (one optimizer step returning the loss) up to `steps` times.

    Args:
        step: trains one step with the sweep's current rate and returns the loss.
        learning_rate: the rate the next step will use (read before each step).
        steps: maximum number of steps.
        smoothing: EMA factor of the loss (bias-corrected).
        diverge: stop when the smoothed loss exceeds this multiple of its lowest value.
        progress: called with (step, rate, smoothed loss) after each step.
    """
    if steps < 2:
        raise BadInput(f"the finder needs at least 2 steps, got {steps!r}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    lrs, losses, smoothed = [], [], []
    average, best, diverged = 0.0, math.inf, False
    for i in range(steps):
        rate = learning_rate()
        loss = float(step())
        if not math.isfinite(loss):
            diverged = True
            break
        average = smoothing * average + (1 - smoothing) * loss
        value = average / (1 - smoothing ** (i + 1))
        lrs.append(rate)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if progress is not None:
            progress(i + 1, rate, value)
        if i > 0 and value > diverge * best:
            diverged = True
            break
    if len(lrs) < 2:  # the loss was NaN/inf at once: the sweep started too high
        raise BadInput(
            f"the loss of the learning-rate sweep was not finite at step {len(lrs) + 1} "
            f"(learning rate {float(rate):g}); start the sweep lower with --min-lr"
        )
    min_lr, max_lr = suggest_range(lrs, smoothed)
    return FinderResult(lrs, losses, smoothed, min_lr, max_lr, diverged)


#: The loss axis of the plot ends at this multiple of the first loss: above it the sweep has
#: diverged, and a linear axis up to the diverged tail's losses (160 against a start of 5 in one
#: run) flattened the part that matters.
LOSS_AXIS_CAP = 3.0


def plot_view(result: FinderResult) -> tuple[tuple[float, float], tuple[float, float]]:
    """((first rate, last rate), (lowest loss, highest loss)) of the plot's useful part.

    The loss range runs from a little below the lowest loss (smoothed, or the raw losses' 5th
    percentile: single low steps do not stretch the log axis) to LOSS_AXIS_CAP times the first
    loss (at least the highest smoothed loss before its minimum); the rates end where the
    smoothed loss leaves that range after its minimum: the diverged tail is cut off.
    """
    lrs = np.asarray(result.learning_rates, np.float64)
    smoothed = np.asarray(result.smoothed, np.float64)
    losses = np.asarray(result.losses, np.float64)
    lowest = int(np.argmin(smoothed))
    top = max(LOSS_AXIS_CAP * float(smoothed[0]), 1.05 * float(np.max(smoothed[: lowest + 1])))
    above = np.flatnonzero(smoothed[lowest:] > top)
    last = lowest + int(above[0]) if above.size else lrs.size - 1
    shown = losses[: last + 1]
    shown = shown[shown > 0]
    floor = float(np.min(smoothed))
    if shown.size:
        floor = min(floor, float(np.percentile(shown, 5)))
    return (float(lrs[0]), float(lrs[last])), (0.9 * floor, top)


def save_finder_results(
    result: FinderResult, stem: str | os.PathLike, title: str
) -> tuple[Path, Path, Path]:
    """Write `stem`.png (plot), `stem`.csv (rate, loss, smoothed) and `stem`.json, atomically.

    The plot has log axes for both rate and loss, clipped to the useful part (`plot_view`), the
    suggested range shaded and its steepest-descent point marked, and the legend below the axes
    where it covers no curve.
    """
    import matplotlib  # only when the plot is drawn: matplotlib is slow to import

    matplotlib.use("Agg")
    # matplotlib only when drawing
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    stem = Path(stem)
    png, csv_path, json_path = (Path(f"{stem}.png"), Path(f"{stem}.csv"), Path(f"{stem}.json"))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["learning_rate", "loss", "smoothed_loss"])
    writer.writerows(zip(result.learning_rates, result.losses, result.smoothed, strict=True))
    (left, right), (bottom, top) = plot_view(result)
    figure, axes = plt.subplots(figsize=(7, 4.8))
    axes.plot(result.learning_rates, result.losses, color="tab:blue", alpha=0.3, label="loss")
    axes.plot(result.learning_rates, result.smoothed, color="tab:blue", label="smoothed loss")
    axes.axvspan(
        result.min_lr,
        result.max_lr,
        color="tab:green",
        alpha=0.15,
        label=f"suggested: --min-lr {result.min_lr:.2g} --max-lr {result.max_lr:.2g}",
    )
    at_max = float(
        np.interp(np.log10(result.max_lr), np.log10(result.learning_rates), result.smoothed)
    )
    axes.plot(
        [result.max_lr],
        [at_max],
        "o",
        color="tab:red",
        label=f"steepest descent at {result.max_lr:.2g} (--max-lr)",
    )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, top)
    plain = ticker.FuncFormatter(lambda value, _position: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain if top / bottom < 20 else ticker.NullFormatter())
    axes.tick_params(axis="y", which="minor", labelsize=7)
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss (log scale)")
    cut = [f"{len(result.learning_rates)} steps"]
    if result.diverged:
        cut.append("stopped: the loss diverged")
    cut.append(f"loss axis cut at {LOSS_AXIS_CAP:g}x the first loss")
    axes.set_title(f"{title}: learning-rate range test\n{'; '.join(cut)}", fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    figure.tight_layout()
    with atomic_path(png) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    write_text(csv_path, buffer.getvalue())
    write_json(
        json_path,
        {
            "title": title,
            "min_lr": result.min_lr,
            "max_lr": result.max_lr,
            "diverged": result.diverged,
            "steps": len(result.learning_rates),
        },
    )
    return png, csv_path, json_path


def run_lr_finder(
    config: Any,
    strategy: Any,
    optimizer_name: str,
    root: str | os.PathLike,
    steps: int = 100,
    start: float = 1e-6,
    end: float = 1e2,
    worker_index: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[FinderResult, tuple[Path, Path, Path] | None]:
    """Run the range test for `config.model` with `optimizer_name` on the training split.

    Args:
        config: training.config.TrainConfig (model, size, batch, momentum, precision, seed,
            output_dir; the schedule settings and `resume` are not used).
        strategy: the tf.distribute strategy.
        optimizer_name: one of training.trainer.OPTIMIZERS.
        root: Cityscapes root.
        steps: the sweep's maximum number of steps.
        start: first learning rate (the CLI's --min-lr, default 1e-6 as in the seed).
        end: last learning rate (the CLI's --max-lr, default 1e2 as in the seed).
        worker_index: 0 (the chief) writes the files and prints.
        log: receives progress lines.

    Returns:
        The result and, on the chief, the (png, csv, json) paths written under
        `config.output_dir`/lr_finder/.
    """
    chief = worker_index == 0
    if chief:
        check_writable_dir(config.output_dir)
    sweep = ExponentialSweep(start, end, steps)
    samples = find_samples(root, "train", coarse=config.coarse)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    if global_batch > len(samples):
        raise BadInput(
            f"the global batch {global_batch} exceeds the {len(samples)} training "
            "images; lower -b/--batch"
        )
    setup = build_setup(config, strategy, sweep, optimizer_name)
    model, trainer = setup.model, setup.trainer
    initial = [np.array(v) for v in model.weights]
    dist = strategy.distribute_datasets_from_function(
        input_fn(
            samples,
            global_batch,
            tuple(config.input_size),
            True,
            config.seed,
            skip_bad=config.skip_bad,
            classes=config.classes,
        )
    )
    iterator: Iterator[Any] = iter(dist)
    if chief and log:
        height, width = config.input_size
        log(
            f"learning-rate range test: {optimizer_name} trains {config.model} for at most "
            f"{steps} steps of {global_batch} images at {height}x{width} with the rate growing "
            f"from {start:g} to {end:g}, and stops early when the loss diverges (the bar shows "
            "the time left); the weights are put back afterwards and the suggested "
            "--min-lr/--max-lr printed"
        )
    progbar = keras.utils.Progbar(
        steps, verbose=1 if (chief and log) else 0, stateful_metrics=["lr", "smoothed_loss"]
    )

    def progress(i: int, rate: float, value: float) -> None:
        progbar.update(i, [("lr", rate), ("smoothed_loss", value)])

    try:
        result = find_lr(
            lambda: trainer.train_step(next(iterator))["loss"],
            trainer.learning_rate,
            steps,
            progress=progress,
        )
    finally:
        for variable, value in zip(model.weights, initial, strict=True):
            variable.assign(tf.constant(value))
    if chief and log:  # a sweep that stopped early leaves the bar unfinished: end its line
        progbar.update(len(result.learning_rates), finalize=True)
    if not chief:
        return result, None
    title = f"{config.model}-{optimizer_name}"
    if optimizer_name in MOMENTUM_OPTIMIZERS:
        title += f"-momentum{config.momentum:g}"
    paths = save_finder_results(result, Path(config.output_dir) / "lr_finder" / title, title)
    return result, paths
