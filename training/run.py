"""A training run: settings in; checkpoints, logs and the last validation's scores out.

`run_training` reads as its steps: find where the run starts (the one check of -r and of the
run already in the output folder), plan the data and the schedule, build the model (the shared
set-up of training.setup), resume, then for every epoch train, validate, log and save.
Before each validation and checkpoint, precise batch norm (training.precise_bn) re-estimates the
moving statistics; the chief then validates as evaluate.py scores (training.validation).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from datasets.cityscapes import find_samples
from training.checkpoints import CheckpointSaver, ResumePoint, run_settings
from training.config import TrainConfig
from training.logs import TrainLogs, first_batch, preview
from training.precise_bn import PreciseBatchNorm, precise_bn_batches
from training.preemption import Preempted, StopRequest
from training.progress import EpochProgress
from training.schedules import describe_schedule, make_schedule
from training.setup import TrainingSetup, build_setup, input_fn
from training.validation import Validator
from utils.errors import BadInput
from utils.io import check_writable_dir

__all__ = ["NonFiniteLossError", "TrainResult", "run_training", "scaled_rates"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped before saving that epoch."""

    def __init__(self, epoch: int, step: int, last_checkpoint: str | None) -> None:
        self.epoch, self.step, self.last_checkpoint = epoch, step, last_checkpoint
        kept = (
            f"the last good checkpoint is {last_checkpoint}"
            if last_checkpoint
            else "no checkpoint had been written yet"
        )
        super().__init__(
            f"the training loss became NaN/inf at epoch {epoch}, step {step}; "
            f"training stopped and {kept}; lower the learning rate (-l/--max-lr) "
            "or check the data"
        )


@dataclasses.dataclass
class TrainResult:
    """What a run produced."""

    history: list[dict[str, Any]]
    start_epoch: int
    last_weights: str | None
    best_weights: str | None
    scores: dict[str, Any] | None
    policy: str
    num_replicas: int
    global_batch: int


def scaled_rates(
    config: TrainConfig, num_replicas: int
) -> tuple[float, float | None, float | None]:
    """(learning_rate, min_lr, max_lr) after the documented batch scaling."""
    if config.lr_scaling not in ("linear", "none"):
        raise BadInput(f"lr scaling must be linear or none, got {config.lr_scaling!r}")
    factor = float(num_replicas) if config.lr_scaling == "linear" else 1.0
    return (
        config.learning_rate * factor,
        None if config.min_lr is None else config.min_lr * factor,
        None if config.max_lr is None else config.max_lr * factor,
    )


@dataclasses.dataclass
class _Plan:
    """The data, the batch and the schedule of a run."""

    train_samples: list[Any]
    val_samples: list[Any]
    num_replicas: int
    global_batch: int
    steps: int  # optimizer steps per epoch
    learning_rate: float  # the base rate after scaling
    schedule: keras.optimizers.schedules.LearningRateSchedule


def _plan(
    config: TrainConfig, strategy: tf.distribute.Strategy, root: str | os.PathLike | None
) -> _Plan:
    """Find the samples, size the global batch and the epoch, and make the schedule."""
    train_samples = find_samples(root, "train", coarse=config.coarse)
    val_samples = find_samples(root, "val")
    num_replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * num_replicas
    steps = len(train_samples) // global_batch
    if steps < 1:
        raise BadInput(
            f"the global batch ({config.batch_size} x {num_replicas} replicas = "
            f"{global_batch}) exceeds the {len(train_samples)} training images; "
            "lower -b/--batch"
        )
    if config.steps_per_epoch:
        steps = int(config.steps_per_epoch)  # the training data repeats, so any count works
    lr, min_lr, max_lr = scaled_rates(config, num_replicas)
    schedule = make_schedule(
        config.schedule,
        lr,
        steps * config.epochs,
        min_lr=min_lr,
        max_lr=max_lr,
        power=config.power,
        cycle=config.cycle,
        warmup_steps=int(round(config.warmup_epochs * steps)),
    )
    return _Plan(train_samples, val_samples, num_replicas, global_batch, steps, lr, schedule)


def _resume(
    point: ResumePoint | None,
    setup: TrainingSetup,
    saver: CheckpointSaver,
    checkpoint: tf.train.Checkpoint,
    steps: int,
    say: Callable[[str], None],
) -> tuple[int, int]:
    """Load the resume point, if any, and return where training starts: (finished epochs,
    steps already trained of the next; (0, 0) for a new run).

    Says which settings changed (-r with new ones) and which the checkpoint does not record."""
    if point is None:
        return 0, 0
    saver.restore(point, setup.model, setup.inference, checkpoint)
    if point.state is None:  # a bare weights file: the schedule restarts at its epoch's step
        setup.optimizer.iterations.assign(point.epoch * steps)
    step = int(setup.optimizer.iterations.numpy())
    into = f", step {point.step + 1} of {steps}" if point.step else ""
    say(f"Resuming from {point.weights} at epoch {point.epoch + 1}{into} (optimizer step {step})")
    if point.check.changed:
        say(f"settings changed from the checkpoint's: {'; '.join(point.check.changed)}")
    expected = point.epoch * steps + point.step
    if step != expected:
        say(
            f"warning: the checkpoint is at optimizer step {step}, not {expected} "
            f"({point.epoch} x the {steps} steps per epoch of this command"
            f"{f' + {point.step}' if point.step else ''}): the schedule goes on from step {step}"
        )
    if "settings" not in point.meta:
        say(f"note: {point.weights.name} records no settings (a bare weights file): not checked")
    elif point.check.unknown:
        say(
            f"note: {point.weights.name} does not record {', '.join(point.check.unknown)} "
            "(a checkpoint of an older version): not checked"
        )
    return point.epoch, min(point.step, steps - 1)


@dataclasses.dataclass
class _Partial:
    """The steps of an epoch trained so far: loss sums and seconds (kept across a stop)."""

    steps: int = 0
    seconds: float = 0.0
    totals: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"loss": 0.0, "main_loss": 0.0, "aux_loss": 0.0}
    )

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> _Partial:
        """What a preempted.state's meta.json recorded (empty when there is none)."""
        partial = (meta or {}).get("partial") or {}
        result = cls()
        if partial:
            result.steps = int(partial["steps"])
            result.seconds = float(partial["seconds"])
            result.totals.update({k: float(v) for k, v in partial["totals"].items()})
        return result


def _train_epoch(
    run: _Run,
    iterator: Iterator[Any],
    epoch: int,
    partial: _Partial,
    progress: EpochProgress,
) -> dict[str, Any]:
    """The epoch's remaining steps (after `partial.steps`); its log row (mean losses, rate,
    time, images/s).

    Raises NonFiniteLossError, naming the last good checkpoint, when the loss turns NaN/inf,
    and Preempted, after saving the state of the step, when a worker was asked to stop.
    """
    plan, trainer = run.plan, run.setup.trainer
    totals = partial.totals
    started = time.perf_counter() - partial.seconds
    for step in range(partial.steps, plan.steps):
        rate = trainer.learning_rate()
        values = trainer.train_step(next(iterator), stop=run.stop.requested)
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(epoch + 1, step + 1, run.saver.last_weights)
        for key in totals:
            totals[key] += values[key]
        elapsed = time.perf_counter() - started
        images_per_s = (
            (step + 1 - partial.steps) * plan.global_batch / max(elapsed - partial.seconds, 1e-9)
        )
        progress.step(step + 1, totals["loss"] / (step + 1), rate, images_per_s)
        if values["stop"] and step + 1 < plan.steps:
            progress.stopped()
            run.stop_at(epoch, _Partial(step + 1, elapsed, totals))
        run.stopping = values["stop"]  # at the last step: stop after the epoch's checkpoint
    epoch_time = time.perf_counter() - started
    resumed_time = max(epoch_time - partial.seconds, 1e-9)
    row: dict[str, Any] = {k: v / plan.steps for k, v in totals.items()}
    row.update(
        epoch=epoch + 1,
        learning_rate=trainer.learning_rate(),
        epoch_time_s=epoch_time,
        images_per_s=(plan.steps - partial.steps) * plan.global_batch / resumed_time,
    )
    return row


def _validate(validator: Validator, samples: Sequence[Any], row: dict[str, Any]) -> dict[str, Any]:
    """Score the validation set and add its loss, mIoU and pixel accuracy to the epoch's row."""
    scores = validator.evaluate(samples)
    row.update(
        val_loss=scores["loss"],
        val_mean_iou=scores["mean_iou"],
        val_pixel_accuracy=scores["pixel_accuracy"],
    )
    return scores


def _precise_bn(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Re-estimate the batch-norm statistics from training batches; record the cost in `row`."""
    plan = run.plan
    batches = precise_bn_batches(run.config.precise_bn, len(plan.train_samples), plan.global_batch)
    iterator = iter(run.dataset(plan.train_samples, epoch, True))
    result = run.precise.update(iterator, batches)
    row.update(precise_bn_images=result.images, precise_bn_s=result.seconds)


@dataclasses.dataclass
class _Run:
    """A run once it is set up: what every epoch trains, validates, logs and saves."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    plan: _Plan
    setup: TrainingSetup
    saver: CheckpointSaver
    checkpoint: tf.train.Checkpoint
    logs: TrainLogs
    verbose: bool  # show the progress bar (the chief, when a log is wanted)
    preview_batch: tuple[np.ndarray, np.ndarray] | None  # on the chief
    validator: Validator | None  # on the chief: the other workers do not validate
    precise: PreciseBatchNorm | None  # None with --precise-bn 0
    stop: StopRequest  # raised by SIGTERM: stop after the current step, state saved
    stopping: bool = False  # every worker agreed to stop (at an epoch's last step)

    def meta(self) -> dict[str, Any]:
        """What every checkpoint's meta.json records beside the epoch."""
        return {
            "optimizer_step": int(self.setup.optimizer.iterations.numpy()),
            "steps_per_epoch": self.plan.steps,
            "global_batch": self.plan.global_batch,
            "policy": self.setup.policy,
            "settings": self.saver.settings,
        }

    def stop_at(self, epoch: int, partial: _Partial) -> None:
        """Save the state after `partial.steps` steps of epoch `epoch` (0-based), wait until
        every worker (the chief writing) is done, and raise Preempted."""
        meta = self.meta()
        meta["partial"] = dataclasses.asdict(partial)
        state = self.saver.save_preempted(epoch, partial.steps, self.checkpoint, meta)
        _barrier(self.strategy)
        raise Preempted(
            epoch + 1, partial.steps, self.plan.steps, str(state), self.stop.signal_name
        )

    def dataset(
        self, samples: Sequence[Any], epoch: int, training: bool, skip_steps: int = 0
    ) -> Any:
        """The distributed dataset of `samples` for `epoch` (every worker reads its shard),
        without the batches of its first `skip_steps` steps."""
        config = self.config
        return self.strategy.distribute_datasets_from_function(
            input_fn(
                samples,
                self.plan.global_batch,
                config.input_size,
                training,
                config.seed,
                epoch,
                config.skip_bad,
                skip_steps,
                classes=config.classes,
            )
        )

    def epoch(
        self, epoch: int, progress: EpochProgress, partial: _Partial
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Train epoch `epoch` (0-based) from step `partial.steps`, validate when due, log and
        save: (row, scores|None)."""
        config, plan, setup = self.config, self.plan, self.setup
        progress.start_epoch(epoch + 1)
        iterator = iter(self.dataset(plan.train_samples, epoch, True, partial.steps))
        row = _train_epoch(self, iterator, epoch, partial, progress)
        del iterator
        if self.precise is not None:  # before the validation and the checkpoint
            _precise_bn(self, epoch, row)
        scores = panel = None
        due = (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs
        if due and self.validator is not None:
            scores = _validate(self.validator, plan.val_samples, row)
            if self.preview_batch is not None:
                panel = preview(setup.inference, *self.preview_batch)
        progress.finish(row)
        self.logs.write(row, panel)
        self.saver.save(epoch + 1, row, setup.inference, self.checkpoint, self.meta())
        if scores is not None:
            self.logs.write_scores(scores, epoch + 1)
        if self.stopping and epoch + 1 < config.epochs:
            _barrier(self.strategy)
            raise Preempted(
                epoch + 1,
                plan.steps,
                plan.steps,
                str(self.saver.last_weights),
                self.stop.signal_name,
            )
        return row, scores


def _barrier(strategy: tf.distribute.Strategy) -> None:
    """Return when every replica of every worker has got here (an all-reduce of ones)."""

    @tf.function  # collectives run eagerly are slow (and TensorFlow warns about them)
    def all_ones() -> tf.Tensor:
        ones = strategy.run(lambda: tf.ones(()))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

    all_ones().numpy()


def run_training(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    worker_index: int = 0,
    root: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    stop: StopRequest | None = None,
) -> TrainResult:
    """Train `config.model` on Cityscapes at `root`, validating, logging and checkpointing.

    Args:
        config: the run's settings.
        strategy: created with training.distribute.make_strategy before anything else.
        worker_index: this worker (0 is the chief, which alone writes files and prints).
        root: Cityscapes root (from datasets.cityscapes.resolve_root).
        log: receives the lines a CLI prints (notes; the epochs' progress goes to standard
            output, training.progress); None to stay quiet.
        stop: raised (by SIGTERM: train.py installs it) to stop after the current step with
            the state saved (training.preemption); None: never.

    Raises:
        ValueError: bad settings, an unusable resume file or output folder.
        OSError: an output folder that cannot be written.
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        Preempted: `stop` was raised; the state of the step it stopped after is saved.
    """
    chief = worker_index == 0
    say = log if (log is not None and chief) else (lambda _line: None)
    output_dir = Path(config.output_dir)
    saver = CheckpointSaver(output_dir, config.model, chief)
    point = saver.find_resume(config.resume, run_settings(config, root))
    if chief:
        check_writable_dir(output_dir)
    plan = _plan(config, strategy, root)
    setup = build_setup(config, strategy, plan.schedule)
    checkpoint = tf.train.Checkpoint(model=setup.model, optimizer=setup.optimizer)
    start_epoch, start_step = _resume(point, setup, saver, checkpoint, plan.steps, say)
    logs = TrainLogs(output_dir, chief, start_epoch)
    height, width = config.input_size
    schedule_text, schedule_warnings = describe_schedule(
        plan.schedule, plan.steps * config.epochs, plan.steps
    )
    say(
        f"{config.model}: {len(plan.train_samples)} training and {len(plan.val_samples)} "
        f"validation images at {height}x{width}, global batch {plan.global_batch} "
        f"({config.batch_size} x {plan.num_replicas} replicas), {plan.steps} steps/epoch, "
        f"{setup.policy}, {schedule_text} ({config.lr_scaling} scaling)"
    )
    for warning in schedule_warnings:
        say(f"warning: {warning}")
    preview_batch = (
        first_batch(plan.val_samples, config.input_size, config.skip_bad) if chief else None
    )
    verbose = chief and log is not None
    validator = (
        Validator(
            setup.inference,
            config.input_size,
            config.num_classes,
            config.batch_size,
            config.skip_bad,
            say,
            classes=config.classes,
        )
        if chief
        else None
    )
    precise = PreciseBatchNorm(setup.inference, strategy) if config.precise_bn else None
    if precise is not None:
        batches = precise_bn_batches(config.precise_bn, len(plan.train_samples), plan.global_batch)
        say(
            f"precise batch norm: the statistics of {len(precise.layers)} layers re-estimated "
            f"from {batches * plan.global_batch} training images before each validation and "
            "checkpoint (--precise-bn 0: off)"
        )
    run = _Run(
        config,
        strategy,
        plan,
        setup,
        saver,
        checkpoint,
        logs,
        verbose,
        preview_batch,
        validator,
        precise,
        stop or StopRequest(),
    )
    progress = EpochProgress(config.epochs, plan.steps, verbose, config.log_every)
    partial = _Partial.from_meta(point.meta if point is not None and point.step else None)
    partial.steps = start_step
    history: list[dict[str, Any]] = []
    scores = None
    for epoch in range(start_epoch, config.epochs):
        row, epoch_scores = run.epoch(epoch, progress, partial)
        partial = _Partial()
        history.append(row)
        scores = epoch_scores if epoch_scores is not None else scores
    if plan.num_replicas > 1 and history:
        _check_replicas_agree(strategy, setup.model, say)
    if start_epoch >= config.epochs:
        say(
            f"the run in {output_dir} has already trained {start_epoch} of {config.epochs} "
            "epochs; raise -e/--epochs to train further"
        )
    return TrainResult(
        history,
        start_epoch,
        saver.last_weights,
        saver.best_weights,
        scores,
        setup.policy,
        plan.num_replicas,
        plan.global_batch,
    )


#: What a collective op raises when another worker of a multi-worker run has died (TensorFlow's
#: health check aborts the collectives with UnavailableError; a restarted peer gives
#: FailedPrecondition, a timed-out one DeadlineExceeded).
PEER_FAILURES = (
    tf.errors.UnavailableError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.FailedPreconditionError,
)


def weights_fingerprint(model: keras.Model) -> tf.Tensor:
    """Per variable, the float64 sum and sum of squares of its values: a vector that differs
    between two copies of the model as soon as any weight does (to rounding of the sums)."""
    values = [tf.cast(tf.convert_to_tensor(v.value), tf.float64) for v in model.weights]
    return tf.stack([f(x) for x in values for f in (tf.reduce_sum, _sum_of_squares)])


def _sum_of_squares(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(x))


def _check_replicas_agree(strategy: tf.distribute.Strategy, model: keras.Model, say) -> None:
    """Gather every replica's weights fingerprint (all workers take part) and say whether all
    replicas end with the same weights, as synchronous data parallelism promises."""

    @tf.function  # collectives run eagerly are slow (and TensorFlow warns about them)
    def gather() -> tf.Tensor:
        mine = strategy.run(lambda: tf.expand_dims(weights_fingerprint(model), 0))
        return strategy.gather(mine, axis=0)

    gathered = gather().numpy()
    replicas = gathered.shape[0]
    differ = int(np.sum(np.any(gathered != gathered[:1], axis=1)))
    if differ:
        say(
            f"warning: {differ} of {replicas} replicas end with weights that differ from "
            f"replica 0's (largest fingerprint difference {np.max(np.abs(gathered - gathered[:1])):.3g})"
        )
    else:
        say(f"all {replicas} replicas end with identical weights")
