"""The set-up every training loop shares: the model, its optimizer and step, the input pipeline.

training.run (the run), training.lr_finder (the learning-rate range test) and bench.train (the
throughput benchmark) build their model, optimizer and Trainer here, so the three train the
same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from datasets.pipeline import build_dataset
from models import build_model, get_info
from training.config import TrainConfig
from training.trainer import Trainer, apply_precision, freeze_backbone, make_optimizer

__all__ = ["TrainingSetup", "build_setup", "build_training_model", "input_fn"]


@dataclasses.dataclass
class TrainingSetup:
    """A model ready to train: built under the run's precision policy and seed."""

    model: keras.Model  # returns [main, aux...] logits when the model has auxiliary heads
    inference: keras.Model  # main output only, sharing the model's layers
    optimizer: keras.optimizers.Optimizer
    trainer: Trainer
    policy: str  # the dtype policy the model was built under
    aux_weights: tuple[float, ...]


def build_training_model(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
) -> tuple[keras.Model, keras.Model, tuple[float, ...]]:
    """(training model with aux heads, inference model sharing its layers, aux weights)."""
    info = get_info(config.model)
    aux = bool(info.aux_weights)
    with strategy.scope():
        model = build_model(
            config.model,
            (*config.input_size, 3),
            config.num_classes,
            aux=aux or None,
            weights=config.weights,
            bn_momentum=config.bn_momentum,
            **config.model_options,
        )
        if config.freeze_backbone:
            freeze_backbone(model, config.model)
        if isinstance(model.outputs, list) and len(model.outputs) > 1:
            inference = keras.Model(model.inputs, model.outputs[0], name=model.name)
        else:
            inference = model
    return model, inference, info.aux_weights if aux else ()


def build_setup(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    learning_rate: Any,
    optimizer: str | None = None,
) -> TrainingSetup:
    """Build `config`'s model (precision policy and seed from the config), optimizer and Trainer.

    Args:
        config: the run's settings (model, size, options, precision, seed, loss settings).
        strategy: the tf.distribute strategy to build under.
        learning_rate: float or LearningRateSchedule of the optimizer.
        optimizer: one of OPTIMIZERS (default: config.optimizer).

    Keras' global dtype policy is put back after the build: the built layers keep theirs, and
    later builds in this process get the previous one.
    """
    previous_policy = keras.config.dtype_policy()
    policy = apply_precision(config.mixed_precision)
    keras.utils.set_random_seed(config.seed)
    try:
        model, inference, aux_weights = build_training_model(config, strategy)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    with strategy.scope():
        opt = make_optimizer(
            optimizer or config.optimizer,
            learning_rate,
            config.momentum,
            loss_scale=policy == "mixed_float16",
        )
    trainer = Trainer(
        model,
        opt,
        strategy,
        config.num_classes,
        aux_weights,
        config.class_weights,
        config.weight_decay,
        config.xla,
    )
    return TrainingSetup(model, inference, opt, trainer, policy, aux_weights)


def input_fn(
    samples: Sequence[Any],
    global_batch: int,
    size: tuple[int, int],
    training: bool,
    seed: int,
    epoch: int = 0,
    skip_bad: bool = False,
    skip_steps: int = 0,
) -> Callable[[tf.distribute.InputContext], Any]:
    """A dataset function for `strategy.distribute_datasets_from_function`.

    Each worker reads its own shard of the files (every num_workers-th), in per-replica batches;
    training data repeats (callers take steps_per_epoch batches) and is seeded by
    (seed, epoch), so epoch k is the same whether or not the run was resumed before it.
    `skip_steps` leaves out the batches of that many global steps (every worker its share),
    unread: the rest of an epoch that was stopped after that step.
    """

    def make(context: tf.distribute.InputContext) -> Any:
        shard = (
            (context.num_input_pipelines, context.input_pipeline_id)
            if context.num_input_pipelines > 1
            else None
        )
        per_replica = context.get_per_replica_batch_size(global_batch)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return build_dataset(
            samples,
            per_replica,
            size,
            training=training,
            seed=seed,
            shard=shard,
            repeat=training,
            epoch=epoch,
            skip_bad=skip_bad,
            skip=skip_steps * per_replica * local_replicas,
        )

    return make
