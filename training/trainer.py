"""The distributed training step: one loss and step function for every tf.distribute strategy.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
loop calls `strategy.run` inside a `tf.function` with a Keras model and optimizer. The same code
serves TensorFlow's default strategy (one device), MirroredStrategy (GPUs of one node) and
MultiWorkerMirroredStrategy (nodes, from TF_CONFIG or SLURM).

Loss normalisation is global: every replica divides its summed pixel losses by the number of
labelled pixels in the GLOBAL batch (an all-reduce), and the optimizer sums the replicas'
gradients, so N workers with batch b step exactly like one process with batch N * b (up to batch
normalisation, whose statistics stay per replica).

Also here: the precision policy, the optimizers by the seed's names, backbone freezing and the
kernels L2 weight decay applies to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import get_info
from models.loading import all_layers

__all__ = [
    "MOMENTUM_OPTIMIZERS",
    "OPTIMIZERS",
    "Trainer",
    "apply_precision",
    "backbone_prefixes",
    "decayed_kernels",
    "freeze_backbone",
    "make_optimizer",
]

#: Optimizer names accepted by --optimizer and -f (the seed's list).
OPTIMIZERS = (
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "ftrl",
    "nadam",
    "rmsprop",
    "sgd",
    "sgd_nesterov",
)
#: Optimizers that take a momentum (--momentum applies to them only).
MOMENTUM_OPTIMIZERS = ("sgd", "sgd_nesterov", "rmsprop")


# ----------------------------------------------------------------------------------------------
# Precision, optimizers, backbones, weight decay
# ----------------------------------------------------------------------------------------------


def apply_precision(mixed: bool) -> str:
    """Set Keras' global dtype policy: mixed_float16 on GPU, mixed_bfloat16 on CPU, else float32."""
    if not mixed:
        name = "float32"
    elif tf.config.list_physical_devices("GPU"):
        name = "mixed_float16"
    else:
        name = "mixed_bfloat16"
    keras.config.set_dtype_policy(name)
    return name


def make_optimizer(
    name: str, learning_rate: Any, momentum: float | None = None, loss_scale: bool = False
) -> keras.optimizers.Optimizer:
    """A Keras optimizer by the seed's name.

    Args:
        name: one of OPTIMIZERS.
        learning_rate: float or LearningRateSchedule.
        momentum: used by sgd, sgd_nesterov and rmsprop (ignored by the others).
        loss_scale: wrap in a LossScaleOptimizer (needed for float16, not for bfloat16).
    """
    momentum = 0.9 if momentum is None else float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    opt = keras.optimizers
    builders: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
        "adadelta": lambda: opt.Adadelta(learning_rate),
        "adagrad": lambda: opt.Adagrad(learning_rate),
        "adam": lambda: opt.Adam(learning_rate),
        "adamax": lambda: opt.Adamax(learning_rate),
        "ftrl": lambda: opt.Ftrl(learning_rate),
        "nadam": lambda: opt.Nadam(learning_rate),
        "rmsprop": lambda: opt.RMSprop(learning_rate, momentum=momentum),
        "sgd": lambda: opt.SGD(learning_rate, momentum=momentum),
        "sgd_nesterov": lambda: opt.SGD(learning_rate, momentum=momentum, nesterov=True),
    }
    if name not in builders:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    optimizer = builders[name]()
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def backbone_prefixes(model_name: str) -> tuple[str, ...]:
    """Layer-name prefixes of `model_name`'s pretrained backbone (empty if it has none)."""
    return tuple(get_info(model_name).backbone_prefixes)


def freeze_backbone(model: keras.Model, model_name: str) -> int:
    """Make the backbone's layers untrainable (batch norm then runs in inference mode).

    Returns the number of layers frozen; ValueError if the model declares no backbone.
    """
    prefixes = backbone_prefixes(model_name)
    if not prefixes:
        raise ValueError(
            f"model {model_name!r} has no pretrained backbone to freeze; drop --freeze-backbone"
        )
    frozen = 0
    for layer in model.layers:
        if layer.name.startswith(prefixes):
            layer.trainable = False
            frozen += 1
    if not frozen:
        raise ValueError(
            f"no layer of {model_name!r} starts with {prefixes!r}; "
            "--freeze-backbone cannot find the backbone"
        )
    return frozen


def decayed_kernels(model: keras.Model) -> list[keras.Variable]:
    """Trainable kernels that L2 weight decay applies to: no biases, BN, or depthwise kernels."""
    kernels, seen = [], set()
    for layer in all_layers(model):  # the model itself too; containers are skipped below
        if isinstance(layer, keras.layers.DepthwiseConv2D) or hasattr(layer, "layers"):
            continue
        for weight in layer.trainable_weights:
            if weight.name in ("kernel", "pointwise_kernel") and id(weight) not in seen:
                seen.add(id(weight))
                kernels.append(weight)
    return kernels


# ----------------------------------------------------------------------------------------------
# The trainer: one step function for every strategy
# ----------------------------------------------------------------------------------------------


class Trainer:
    """The train step function, for any tf.distribute strategy (validation: training.validation).

    Create the model and the optimizer inside `strategy.scope()` first.

    Args:
        model: Keras model returning logits, or a list [main, aux...] of logits.
        optimizer: Keras optimizer (built here on the model's trainable variables).
        strategy: the tf.distribute strategy the model was built under.
        num_classes: number of classes (label values >= this, e.g. 255, are ignored).
        aux_weights: loss weights of the auxiliary outputs, in order.
        class_weights: optional (num_classes,) per-class loss weights.
        weight_decay: L2 coefficient: the loss gets weight_decay / 2 * sum of squared kernels.
        xla: compile the forward and backward pass with XLA (jit_compile).
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        num_classes: int = 19,
        aux_weights: Sequence[float] = (),
        class_weights: Sequence[float] | None = None,
        weight_decay: float = 0.0,
        xla: bool = False,
    ) -> None:
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class weights need {num_classes} values, got {len(class_weights)}")
        if not weight_decay >= 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay!r}")
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.num_classes = int(num_classes)
        self.aux_weights = tuple(float(w) for w in aux_weights)
        self.class_weights = (
            None if class_weights is None else tf.constant(np.asarray(class_weights, np.float32))
        )
        self.weight_decay = float(weight_decay)
        self.decayed = decayed_kernels(model) if weight_decay > 0 else []
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        forward = self._forward_backward
        self._forward = tf.function(forward, jit_compile=True) if xla else forward
        self._train_fn = tf.function(self._distributed_train_step)

    # -- losses -----------------------------------------------------------------------------

    def _pixel_weights(self, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(labels with ignored pixels set to 0, per-pixel loss weight: 0 where ignored)."""
        labels = tf.cast(labels, tf.int32)
        valid = (labels >= 0) & (labels < self.num_classes)
        safe = tf.where(valid, labels, 0)
        if self.class_weights is None:
            weights = tf.cast(valid, tf.float32)
        else:
            weights = tf.where(valid, tf.gather(self.class_weights, safe), 0.0)
        return safe, weights

    @staticmethod
    def _ce_sum(safe: tf.Tensor, weights: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Weighted sum of per-pixel cross-entropy (float32)."""
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=safe, logits=tf.cast(logits, tf.float32)
        )
        return tf.reduce_sum(ce * weights)

    def _outputs(self, images: tf.Tensor, training: bool) -> list[tf.Tensor]:
        """Model outputs as a list [main, aux...]."""
        outputs = self.model(tf.cast(images, tf.float32), training=training)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def _forward_backward(
        self, images: tf.Tensor, safe: tf.Tensor, weights: tf.Tensor, norm: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, list]:
        """Loss terms and gradients of one replica's batch (XLA-compilable)."""
        num_replicas = float(self.strategy.num_replicas_in_sync)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self._outputs(images, training=True)
            main = self._ce_sum(safe, weights, outputs[0]) / norm
            aux = tf.constant(0.0)
            for weight, logits in zip(self.aux_weights, outputs[1:], strict=False):
                aux += weight * self._ce_sum(safe, weights, logits) / norm
            extra = tf.constant(0.0)
            if self.decayed:
                squares = tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in self.decayed]
                )
                extra += 0.5 * self.weight_decay * squares / num_replicas
            if self.model.losses:
                extra += (
                    tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses]) / num_replicas
                )
            loss = main + aux + extra
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        return loss, main, aux, grads

    def _replica_train_step(
        self, images: tf.Tensor, labels: tf.Tensor, stop: tf.Tensor
    ) -> tuple[tf.Tensor, ...]:
        """One optimizer step on one replica's share of the global batch.

        `stop` (1.0 when this worker was asked to stop) is all-reduced with the loss
        normaliser, in the same collective: every replica learns whether any worker wants to
        stop after this step."""
        safe, weights = self._pixel_weights(labels)
        context = tf.distribute.get_replica_context()
        reduced = context.all_reduce(
            tf.distribute.ReduceOp.SUM, tf.stack([tf.reduce_sum(weights), stop])
        )
        norm = tf.maximum(reduced[0], 1.0)
        loss, main, aux, grads = self._forward(images, safe, weights, norm)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss, main, aux, reduced[1]

    def _distributed_train_step(self, batch: Any, stop: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """strategy.run of the replica step; losses summed over replicas (already normalised),
        and the all-reduced stop requests (the same on every replica; their mean)."""
        images, labels = batch
        loss, main, aux, stops = self.strategy.run(
            self._replica_train_step, args=(images, labels, stop)
        )
        total = tuple(
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for value in (loss, main, aux)
        )
        return (*total, self.strategy.reduce(tf.distribute.ReduceOp.MEAN, stops, axis=None))

    # -- public API ---------------------------------------------------------------------------

    def train_step(self, batch: Any, stop: bool = False) -> dict[str, Any]:
        """One global step on a batch from a distributed iterator: loss, main and aux losses,
        and "stop": whether any worker asked (`stop=True` on it) to stop after this step."""
        try:
            flag = tf.constant(1.0 if stop else 0.0)
            loss, main, aux, stops = self._train_fn(batch, flag)
        except tf.errors.OpError as exc:
            if "mixed precision is disallowed" in str(exc):
                raise ValueError(
                    "XLA's CPU compiler rejects this model's bfloat16 gradients (dropout mixes "
                    "float32 and bfloat16); on CPU use --xla or --mixed-precision, not both"
                ) from None
            raise
        return {
            "loss": float(loss),
            "main_loss": float(main),
            "aux_loss": float(aux),
            "stop": float(stops) > 0,
        }

    def learning_rate(self) -> float:
        """The learning rate the next step will use."""
        lr = self.optimizer.learning_rate
        return float(lr.numpy() if hasattr(lr, "numpy") else lr)
