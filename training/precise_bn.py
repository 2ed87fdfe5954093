"""Precise batch norm: moving statistics re-estimated as a true average over training batches.

Batch norm normalises with the statistics of the batch while training and with its moving
averages at inference. The moving averages trail the weights: with a momentum of 0.99 and
variances that start at 1.0, early layers whose true variance is about 0.01 are still far off
after hundreds of steps, and inference-mode predictions collapse to one class. Precise batch
norm (Wu and Johnson, "Rethinking Batch in BatchNorm", 2021; fvcore's `update_bn_stats`,
PyTorch's `swa_utils.update_bn`, Caffe SegNet's `compute_bn_statistics.py`) runs the current
weights forward in training mode over a number of training batches and sets each layer's moving
mean and variance to the plain average of the batch means and variances it saw.

Here every replica runs its share of each global batch, the replicas' statistics are averaged
with an all-reduce (over all workers), and the result is assigned to every replica's copy, so
all replicas and workers end with the same statistics. Only the batch-norm moving statistics
change: no gradient, no optimizer step, no weight update. Layers that are not trainable (a
frozen backbone) keep theirs; dropout runs as in training, as in fvcore.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.loading import all_layers

__all__ = ["PreciseBatchNorm", "PreciseBNResult", "batch_norm_layers", "precise_bn_batches"]


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The trainable BatchNormalization layers of `model`, each once, in graph order."""
    found, seen = [], set()
    for layer in all_layers(model):
        if (
            isinstance(layer, keras.layers.BatchNormalization)
            and layer.trainable
            and id(layer) not in seen
        ):
            seen.add(id(layer))
            found.append(layer)
    return found


def precise_bn_batches(images: int, available: int, global_batch: int) -> int:
    """Global batches that cover `images` images (at most one pass over `available`); >= 1."""
    wanted = min(int(images), int(available))
    return max(1, math.ceil(wanted / global_batch))


@dataclasses.dataclass
class PreciseBNResult:
    """What one re-estimation did."""

    images: int  # images seen, over all replicas and workers
    batches: int  # global batches
    layers: int  # batch-norm layers re-estimated
    seconds: float


class PreciseBatchNorm:
    """Re-estimates the moving statistics of `model`'s batch-norm layers under `strategy`.

    Args:
        model: the inference model (its batch-norm layers are the ones inference uses).
        strategy: the tf.distribute strategy the model was built under.
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy) -> None:
        self.model, self.strategy = model, strategy
        self.layers = batch_norm_layers(model)
        self._step = tf.function(self._distributed_step)

    def _replica_step(self, images: tf.Tensor) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """One replica's batch statistics of every layer, averaged over the replicas.

        Runs with every layer's momentum at 0, so after the forward pass a layer's moving
        statistics (this replica's copy) hold exactly the statistics of this replica's batch.
        """
        self.model(tf.cast(images, tf.float32), training=True)
        local = [
            (tf.identity(layer.moving_mean.value), tf.identity(layer.moving_variance.value))
            for layer in self.layers
        ]
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, local)

    def _distributed_step(self, images: Any) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """strategy.run of the replica step; the (identical) result of the first replica."""
        per_replica = self.strategy.run(self._replica_step, args=(images,))
        return tf.nest.map_structure(
            lambda value: self.strategy.experimental_local_results(value)[0], per_replica
        )

    def update(self, batches: Iterator[Any], num_batches: int) -> PreciseBNResult:
        """Set the moving statistics to the average over `num_batches` batches of `batches`.

        `batches` yields what a distributed training dataset yields: (images, labels) per
        replica. Every worker must call this with the same `num_batches`.
        """
        started = time.perf_counter()
        if not self.layers or num_batches < 1:
            return PreciseBNResult(0, 0, len(self.layers), 0.0)
        momenta = [layer.momentum for layer in self.layers]
        sums = [
            [np.zeros(layer.moving_mean.shape, np.float64) for _ in range(2)]
            for layer in self.layers
        ]
        images_seen = 0
        try:
            for layer in self.layers:
                layer.momentum = 0.0  # read at trace time: the step is traced with 0
            for _ in range(num_batches):
                images, _labels = next(batches)
                images_seen += _global_count(self.strategy, images)
                for total, stats in zip(sums, self._step(images), strict=True):
                    total[0] += stats[0].numpy()
                    total[1] += stats[1].numpy()
        finally:
            for layer, momentum in zip(self.layers, momenta, strict=True):
                layer.momentum = momentum
        for layer, (mean, variance) in zip(self.layers, sums, strict=True):
            layer.moving_mean.assign((mean / num_batches).astype(np.float32))
            layer.moving_variance.assign((variance / num_batches).astype(np.float32))
        return PreciseBNResult(
            images_seen, num_batches, len(self.layers), time.perf_counter() - started
        )


def _global_count(strategy: tf.distribute.Strategy, images: Any) -> int:
    """Images in a distributed training batch (every replica holds the same number)."""
    first = strategy.experimental_local_results(images)[0]
    return int(first.shape[0]) * strategy.num_replicas_in_sync
