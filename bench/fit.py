"""The learning check: does a briefly trained model work in inference mode?

Trains one model for a number of steps with the training pipeline of train.py (training.setup,
augmentation on), then scores a split three ways with the same weights, as train.py validates
(training.validation: full-resolution official mIoU):

- inference mode with the moving statistics as training left them (what a run without precise
  batch norm would save);
- inference mode after precise batch norm (training.precise_bn: what train.py saves);
- training mode: every validation batch normalised with its own statistics (the weights'
  potential, which inference mode should reach).

A model whose inference-mode mIoU is far below its training-mode mIoU has batch-norm statistics
that do not match its weights: it predicts the majority class at inference time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from datasets.cityscapes import find_samples
from models import get_info
from training.config import TrainConfig
from training.precise_bn import PreciseBatchNorm, precise_bn_batches
from training.setup import build_setup, input_fn
from training.validation import Validator

__all__ = ["measure_fit"]


def measure_fit(
    model_name: str,
    root: str | Path,
    size: tuple[int, int] = (256, 512),
    batch_size: int = 4,
    steps: int = 300,
    precise_images: int = 256,
    bn_momentum: float | None = None,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    split: str = "val",
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    **model_options: Any,
) -> dict[str, Any]:
    """Train `model_name` briefly on `root`'s train split; mIoU on `split` three ways.

    Returns a flat dict: the settings, the training time and last loss, and for each of
    `moving` (inference mode, moving statistics as trained), `precise` (inference mode after
    precise batch norm from `precise_images` training images) and `training_mode` (batch
    statistics) the mean IoU and pixel accuracy.
    """
    say = log or (lambda _line: None)
    info = get_info(model_name)
    config = TrainConfig(
        model=model_name,
        input_size=tuple(size),
        batch_size=batch_size,
        epochs=1,
        optimizer=optimizer,
        learning_rate=learning_rate,
        momentum=0.9,
        weight_decay=info.recipe.weight_decay,
        seed=seed,
        model_options=model_options,
        bn_momentum=bn_momentum,
        precise_bn=precise_images,
    )
    strategy = tf.distribute.get_strategy()
    setup = build_setup(config, strategy, learning_rate)
    train_samples = find_samples(root, "train")
    eval_samples = find_samples(root, split)

    def batches(epoch: int) -> Any:
        make = input_fn(train_samples, batch_size, config.input_size, True, seed, epoch)
        return iter(strategy.distribute_datasets_from_function(make))

    momentum = info.batch_norm.momentum if bn_momentum is None else bn_momentum
    say(
        f"{model_name}: {steps} steps of {batch_size} at {size[0]}x{size[1]}, bn momentum {momentum}"
    )
    iterator, loss, started = batches(0), float("nan"), time.perf_counter()
    for step in range(steps):
        loss = setup.trainer.train_step(next(iterator))["loss"]
        if (step + 1) % max(1, steps // 10) == 0:
            say(f"  step {step + 1}/{steps}: loss {loss:.3f}")
    train_s = time.perf_counter() - started
    del iterator
    validator = Validator(setup.inference, size, config.num_classes, batch_size)
    moving = validator.evaluate(eval_samples)
    precise = PreciseBatchNorm(setup.inference, strategy)
    count = precise_bn_batches(precise_images, len(train_samples), batch_size)
    result = precise.update(batches(1), count if precise_images > 0 else 0)
    precise_scores = validator.evaluate(eval_samples)
    # Last: a training-mode forward pass moves the moving statistics.
    training_mode = Validator(
        setup.inference, size, config.num_classes, batch_size, training=True
    ).evaluate(eval_samples)
    row: dict[str, Any] = {
        "bn_momentum": momentum,
        "steps": steps,
        "batch": batch_size,
        "height": size[0],
        "width": size[1],
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "train_images": len(train_samples),
        "split": split,
        "eval_images": len(eval_samples),
        "train_s": train_s,
        "last_loss": loss,
        "precise_bn_images": result.images,
        "precise_bn_s": result.seconds,
    }
    for key, scores in (
        ("moving", moving),
        ("precise", precise_scores),
        ("training_mode", training_mode),
    ):
        row[f"miou_{key}"] = scores["mean_iou"]
        row[f"acc_{key}"] = scores["pixel_accuracy"]
    return row
