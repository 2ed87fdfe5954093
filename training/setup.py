"""The set-up every training loop shares: the model, its optimizer and step, the input pipeline.

training.run (the run), training.lr_finder (the learning-rate range test) and bench.train_speed (the
throughput benchmark) build their model, optimizer and Trainer here, so the three train the
same thing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from datasets.pipeline import build_dataset
from models import build_model, get_info
from models.loading import all_layers
from training.config import TrainConfig
from training.trainer import Trainer, apply_precision, freeze_backbone, loss_options, make_optimizer
from utils.labels import DEFAULT_CLASS_SET, get_class_set

__all__ = [
    "TrainingSetup",
    "build_setup",
    "build_training_model",
    "enable_determinism",
    "input_fn",
]


def enable_determinism() -> None:
    """Make the TensorFlow work of this process deterministic, so that a run with the same seed
    gives the same losses and weights (train.py --deterministic). Call it before TensorFlow
    traces its first function.

    Two settings: TensorFlow's op determinism (deterministic kernels and tf.data; ops that
    cannot be, as some are on GPUs, raise), and no grappler. Grappler, TensorFlow's graph
    optimiser, rewrote the training step in one of two ways from process to process (its C++
    hash maps are seeded per process: with address randomisation off, every run took the same
    way), and the two add in different orders: Fast-SCNN at 256x512, batch 4, on the same
    batches, gave losses 5.650243 or 5.650256 at the second step here, with op determinism, one
    thread and oneDNN off too. Without grappler every repeat gave the same bytes, on all cores
    and beside two busy processes. The seeds are the run's own (build_setup, input_fn).
    """
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    tf.config.experimental.enable_op_determinism()


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
        if config.sync_bn:
            synchronize_batch_norm(model)
        if isinstance(model.outputs, list) and len(model.outputs) > 1:
            inference = keras.Model(model.inputs, model.outputs[0], name=model.name)
        else:
            inference = model
    return model, inference, info.aux_weights if aux else ()


def synchronize_batch_norm(model: keras.Model) -> None:
    """Make every BatchNormalization layer of `model` normalise over the global batch while
    training (all replicas of all workers), as PyTorch's SyncBatchNorm does.

    Keras' own `synchronized=True` computes the variance in one pass as E[x^2] - E[x]^2, which
    in float32 loses digits where a channel's mean is large against its spread (a first layer
    on a flat-coloured image): on synthetic scenes the gradients of one step then differ from
    a single process's by about 1e-4 of their size, and training drifts apart over a few
    steps. This takes the mean first and then the squared deviations from it (two
    all-reduces, one fewer than Keras'), which matches a single process with the same global
    batch to float32 rounding (tests/test_slurm.py). Outside a distribution strategy, or with
    one replica, it is plain batch normalisation.
    """
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            own = layer._moments  # masked inputs keep Keras' path (no model here has them)
            layer._moments = functools.partial(_global_moments, layer._reduction_axes, own)


def _global_moments(
    axes: Sequence[int], own: Callable[..., Any], inputs: tf.Tensor, mask: Any
) -> tuple[tf.Tensor, tf.Tensor]:
    """(mean, variance) of `inputs` over `axes` and over every replica's batch."""
    context = tf.distribute.get_replica_context()
    if mask is not None or context is None or context.num_replicas_in_sync == 1:
        return own(inputs, mask)
    x = tf.cast(inputs, tf.float32)  # statistics in float32 under mixed precision too
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), list(axes))), tf.float32)
    sums = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.concat([tf.reduce_sum(x, axes), [count]], 0)
    )
    total = tf.maximum(sums[-1], 1.0)
    mean = sums[:-1] / total
    deviations = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.square(x - mean), axes)
    )
    return tf.cast(mean, inputs.dtype), tf.cast(deviations / total, inputs.dtype)


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
        **loss_options(config),
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
    classes: str = DEFAULT_CLASS_SET,
) -> Callable[[tf.distribute.InputContext], Any]:
    """A dataset function for `strategy.distribute_datasets_from_function`.

    Training: every worker reads its own blocks of the one shuffled and augmented stream (see
    build_dataset's stream_shard), so the global batch of each step holds the images one process
    with that global batch would train on; the rest (validation) is sharded by file. Batches are
    per replica; training data repeats (callers take steps_per_epoch batches) and is seeded by
    (seed, epoch), so epoch k is the same whether or not the run was resumed before it.
    `skip_steps` leaves out the batches of that many global steps (every worker its share),
    unread: the rest of an epoch that was stopped after that step. `classes`: the class set the
    label ids are mapped onto (TrainConfig.classes; cityscapes19: the train ids).
    """
    label_lut = None if classes == DEFAULT_CLASS_SET else get_class_set(classes).from_label_ids

    def make(context: tf.distribute.InputContext) -> Any:
        workers, index = context.num_input_pipelines, context.input_pipeline_id
        per_replica = context.get_per_replica_batch_size(global_batch)
        local_replicas = context.num_replicas_in_sync // workers
        shards = {}
        if workers > 1:
            if training:
                shards["stream_shard"] = (workers, index, per_replica * local_replicas)
            else:
                shards["shard"] = (workers, index)
        return build_dataset(
            samples,
            per_replica,
            size,
            training=training,
            seed=seed,
            repeat=training,
            epoch=epoch,
            skip_bad=skip_bad,
            skip=skip_steps * per_replica * local_replicas,
            label_lut=label_lut,
            **shards,
        )

    return make
