"""Learning-rate schedules stepped once per optimizer step (Keras LearningRateSchedules).

Both schedules are serializable (`get_config` / `from_config`, registered with Keras), so an
optimizer saved with one of them restores the same schedule, and the schedule position is the
optimizer's own `iterations` counter: resuming the optimizer resumes the schedule.
`describe_schedule` says, for a run's header, which rates a schedule really takes, and warns
of a run too short for its cycle or its warm-up.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from utils.errors import BadInput

__all__ = [
    "ExponentialSweep",
    "PolynomialWarmup",
    "TriangularCyclic",
    "describe_schedule",
    "make_schedule",
]


def _check_lrs(min_lr: float, max_lr: float) -> None:
    """BadInput unless 0 <= min_lr <= max_lr."""
    if not min_lr >= 0:
        raise BadInput(f"the minimum learning rate must be >= 0, got {min_lr!r}")
    if not max_lr >= min_lr:
        raise BadInput(
            f"the minimum learning rate {min_lr!r} is above the maximum {max_lr!r}; "
            "swap --min-lr and --max-lr"
        )


@keras.saving.register_keras_serializable(package="segbench")
class PolynomialWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `min_lr` to `max_lr`, then polynomial decay back to `min_lr`.

    At step s (0-based), with W warm-up steps and T total steps:
    s < W: lr = min_lr + (max_lr - min_lr) * s / W;
    s >= W: lr = min_lr + (max_lr - min_lr) * (1 - min(s - W, T - W) / (T - W)) ** power.
    After T steps the rate stays at `min_lr`. A warm-up as long as the run or longer (W >= T)
    is allowed (describe_schedule warns of it): the rate rises for the whole run.

    Args:
        max_lr: peak learning rate, reached at the end of the warm-up.
        total_steps: step at which the decay reaches `min_lr` (the run's optimizer steps).
        min_lr: learning rate at the start of the warm-up and at the end of the decay.
        power: exponent of the decay (0.9 in DeepLab, Fast-SCNN and HRNet).
        warmup_steps: steps of linear warm-up (0 for none).
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        min_lr: float = 0.0,
        power: float = 0.9,
        warmup_steps: int = 0,
    ) -> None:
        _check_lrs(min_lr, max_lr)
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
        if not power > 0:
            raise BadInput(f"power must be > 0, got {power!r}")
        self.max_lr = float(max_lr)
        self.min_lr = float(min_lr)
        self.total_steps = int(total_steps)
        self.power = float(power)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        span = self.max_lr - self.min_lr
        warmup = float(max(self.warmup_steps, 1))
        warm = self.min_lr + span * step / warmup
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        decayed = self.min_lr + span * tf.pow(1.0 - progress, self.power)
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "min_lr": self.min_lr,
            "power": self.power,
            "warmup_steps": self.warmup_steps,
        }


@keras.saving.register_keras_serializable(package="segbench")
class TriangularCyclic(keras.optimizers.schedules.LearningRateSchedule):
    """Triangular cyclic learning rate (Smith, 2017): up from `min_lr` to `max_lr`, then down.

    The direction is decided by the integer position inside the cycle (step mod 2 * half_cycle),
    never by comparing floats: rising for positions [0, half_cycle), falling after.

    Args:
        min_lr: lowest learning rate, at the start of every cycle.
        max_lr: highest learning rate, half a cycle in.
        half_cycle: steps from `min_lr` to `max_lr` (the seed's --cycle).
    """

    def __init__(self, min_lr: float, max_lr: float, half_cycle: int) -> None:
        _check_lrs(min_lr, max_lr)
        if int(half_cycle) < 1:
            raise BadInput(f"the half cycle (--cycle) must be >= 1 step, got {half_cycle!r}")
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.half_cycle = int(half_cycle)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.int64)
        position = tf.math.floormod(step, 2 * self.half_cycle)
        rising = position < self.half_cycle
        distance = tf.where(rising, position, 2 * self.half_cycle - position)
        fraction = tf.cast(distance, tf.float32) / float(self.half_cycle)
        return self.min_lr + (self.max_lr - self.min_lr) * fraction

    def get_config(self) -> dict[str, Any]:
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "half_cycle": self.half_cycle}


@keras.saving.register_keras_serializable(package="segbench")
class ExponentialSweep(keras.optimizers.schedules.LearningRateSchedule):
    """Learning-rate finder sweep: lr = start * (end / start) ** (step / (steps - 1)).

    Args:
        start: learning rate of the first step (> 0).
        end: learning rate of the last step (> start).
        steps: number of steps of the sweep (>= 2).
    """

    def __init__(self, start: float, end: float, steps: int) -> None:
        if not start > 0:
            raise BadInput(f"the finder's start learning rate must be > 0, got {start!r}")
        if not end > start:
            raise BadInput(f"the finder's end learning rate must exceed {start!r}, got {end!r}")
        if int(steps) < 2:
            raise BadInput(f"the finder needs at least 2 steps, got {steps!r}")
        self.start = float(start)
        self.end = float(end)
        self.steps = int(steps)

    def __call__(self, step: Any) -> tf.Tensor:
        fraction = tf.cast(step, tf.float32) / float(self.steps - 1)
        return self.start * tf.pow(self.end / self.start, fraction)

    def get_config(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "steps": self.steps}


def make_schedule(
    kind: str,
    learning_rate: float,
    total_steps: int,
    min_lr: float | None = None,
    max_lr: float | None = None,
    power: float = 0.9,
    cycle: int | None = None,
    warmup_steps: int = 0,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """The schedule train.py uses, with its defaults resolved.

    Args:
        kind: "polynomial" or "cyclic".
        learning_rate: the base rate (-l): the polynomial peak unless `max_lr` is given; the
            cyclic maximum unless `max_lr` is given.
        total_steps: optimizer steps of the whole run (polynomial decay length).
        min_lr: polynomial end / cyclic minimum (defaults: 0 / learning_rate / 10).
        max_lr: polynomial peak / cyclic maximum (default: learning_rate).
        power: polynomial exponent.
        cycle: cyclic half-cycle in steps (default: total_steps // 8, at least 1: four cycles).
        warmup_steps: polynomial linear warm-up steps.
    """
    if not learning_rate > 0:
        raise BadInput(f"the learning rate must be > 0, got {learning_rate!r}")
    peak = float(max_lr) if max_lr is not None else float(learning_rate)
    if kind == "polynomial":
        low = float(min_lr) if min_lr is not None else 0.0
        return PolynomialWarmup(
            peak, total_steps, min_lr=low, power=power, warmup_steps=warmup_steps
        )
    if kind == "cyclic":
        low = float(min_lr) if min_lr is not None else peak / 10.0
        half = int(cycle) if cycle is not None else max(1, int(total_steps) // 8)
        return TriangularCyclic(low, peak, half)
    raise BadInput(f"unknown schedule {kind!r}; choose polynomial or cyclic")


def _rate(schedule: keras.optimizers.schedules.LearningRateSchedule, step: int) -> float:
    """The schedule's learning rate at optimizer step `step` (0-based)."""
    return float(schedule(step))


def _steps_text(total_steps: int, steps_per_epoch: int) -> str:
    """'12 (3 epochs x 4 steps)': a run's optimizer steps, for a warning."""
    epochs = total_steps / steps_per_epoch
    epoch_word = "epoch" if epochs == 1 else "epochs"
    step_word = "step" if steps_per_epoch == 1 else "steps"
    return f"{total_steps} ({epochs:.3g} {epoch_word} x {steps_per_epoch} {step_word})"


def describe_schedule(
    schedule: keras.optimizers.schedules.LearningRateSchedule,
    total_steps: int,
    steps_per_epoch: int,
) -> tuple[str, list[str]]:
    """What the rates of `schedule` are over a run of `total_steps` optimizer steps, for the
    run's header ("lr 0.045 -> 0 poly 0.9", "lr 0.001-0.01 cyclic, 8-step cycles (4 epochs)"),
    and the warnings of a run too short for it: a cyclic schedule that does not complete one
    cycle, a polynomial warm-up at least as long as the run. Rates as the optimizer gets them
    (after any batch scaling); the warnings name the steps and the rate the run reaches.
    """
    warnings: list[str] = []
    if isinstance(schedule, PolynomialWarmup):
        low, peak, warm = schedule.min_lr, schedule.max_lr, schedule.warmup_steps
        decay = f"-> {low:g} poly {schedule.power:g}"
        if warm:
            text = f"lr {low:g} -> {peak:g} in {warm} warm-up steps, then {decay} by step "
            text += str(total_steps)
        else:
            text = f"lr {peak:g} {decay} over {total_steps} steps"
        if warm and total_steps <= warm:
            warnings.append(
                f"the warm-up is {warm} optimizer steps (--warmup-epochs "
                f"{warm / steps_per_epoch:.3g} x {steps_per_epoch}) but the run has only "
                f"{_steps_text(total_steps, steps_per_epoch)}: the rate rises from {low:g} to "
                f"{_rate(schedule, total_steps - 1):g}, never reaches the peak {peak:g} and "
                "never decays; lower --warmup-epochs or raise -e"
            )
        return text, warnings
    if isinstance(schedule, TriangularCyclic):
        low, peak, half = schedule.min_lr, schedule.max_lr, schedule.half_cycle
        cycle = 2 * half
        text = (
            f"lr {low:g}-{peak:g} cyclic, {cycle}-step cycles "
            f"({cycle / steps_per_epoch:.3g} epochs; {half} steps up, {half} down)"
        )
        if total_steps < cycle:
            end = _rate(schedule, total_steps - 1)
            reach = (
                f"rises from {low:g} to {end:g} only, never reaching {peak:g}"
                if total_steps <= half
                else f"reaches {peak:g} but ends at {end:g}, not back at {low:g}"
            )
            warnings.append(
                f"one cycle of the cyclic schedule is {cycle} optimizer steps (--cycle {half} "
                f"up and {half} down) but the run has only "
                f"{_steps_text(total_steps, steps_per_epoch)}: the rate {reach}; "
                + (
                    f"use --cycle {total_steps // 2} or less, or raise -e"
                    if total_steps >= 2
                    else "raise -e or --steps-per-epoch"
                )
            )
        return text, warnings
    return f"lr {type(schedule).__name__}", warnings
