"""The training benchmark: training images/s, step time and peak memory of one model.

The model, optimizer and step come from training.setup, the set-up a real run uses.
Importing this module imports TensorFlow: scripts import it after ``utils.cli.quiet_tensorflow``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import tensorflow as tf

from models import get_info
from training.config import TrainConfig
from training.setup import build_setup
from utils.errors import BadInput
from utils.machine import peak_rss_mb

__all__ = ["measure_train_throughput"]


def measure_train_throughput(
    model_name: str,
    size: tuple[int, int] = (512, 1024),
    batch_size: int = 2,
    steps: int = 10,
    warmup_steps: int = 3,
    xla: bool = False,
    mixed_precision: bool = False,
    **model_options: Any,
) -> dict[str, Any]:
    """Training images/s of `model_name` on generated input (one device, SGD, aux heads on).

    Args:
        model_name: a models.MODELS name.
        size: (H, W) of the input.
        batch_size: images per step.
        steps: timed steps (after the warm-up).
        warmup_steps: untimed steps first (tracing, XLA compilation, allocator warm-up).
        xla: compile the step with XLA.
        mixed_precision: mixed_float16 on GPU, mixed_bfloat16 on CPU.
        **model_options: build_model options (backbone, output_stride, ...).

    Returns:
        dict with images_per_s, step_time_s (mean), step_time_median_s, peak_memory_mb
        (GPU peak from TensorFlow on GPU, else the process's peak resident memory) and
        memory_kind, the device, precision policy and the settings.
    """
    if batch_size < 1 or steps < 1 or warmup_steps < 0:
        raise BadInput(
            f"batch size and steps must be >= 1 and warm-up >= 0, got "
            f"{batch_size!r}, {steps!r}, {warmup_steps!r}"
        )
    config = TrainConfig(
        model=model_name,
        input_size=tuple(size),
        batch_size=batch_size,
        epochs=1,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=get_info(model_name).recipe.weight_decay,
        mixed_precision=mixed_precision,
        xla=xla,
        model_options=model_options,
    )
    setup = build_setup(config, tf.distribute.get_strategy(), config.learning_rate)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (batch_size, *size, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 19, (batch_size, *size), dtype=np.uint8))
    gpus = tf.config.list_physical_devices("GPU")
    for _ in range(warmup_steps):
        setup.trainer.train_step((images, labels))
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        setup.trainer.train_step((images, labels))  # float() inside waits for the step to finish
        times.append(time.perf_counter() - started)
    if gpus:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        kind, device = "gpu_peak", gpus[0].name
    else:
        peak, kind, device = peak_rss_mb(), "process_peak_rss", "CPU"
    mean = float(np.mean(times))
    return {
        "size": list(size),
        "batch_size": batch_size,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "xla": xla,
        "mixed_precision": mixed_precision,
        "policy": setup.policy,
        "device": device,
        "images_per_s": batch_size / mean,
        "step_time_s": mean,
        "step_time_median_s": float(np.median(times)),
        "peak_memory_mb": peak,
        "memory_kind": kind,
        "aux_heads": len(setup.aux_weights),
        "model_options": dict(model_options),
    }
