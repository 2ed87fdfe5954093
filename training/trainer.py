"""The distributed training step: one loss and step function for every tf.distribute strategy.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
loop calls `strategy.run` inside a `tf.function` with a Keras model and optimizer. The same code
serves TensorFlow's default strategy (one device), MirroredStrategy (GPUs of one node) and
MultiWorkerMirroredStrategy (nodes, from TF_CONFIG or SLURM).

Loss normalisation is global: every replica divides its summed pixel losses by the number of
labelled pixels in the GLOBAL batch (an all-reduce), and the optimizer sums the replicas'
gradients, so N workers with batch b step exactly like one process with batch N * b (up to batch
normalisation, whose statistics stay per replica).

The losses (facts from the PIDNet authors' code, XuJiacong/PIDNet utils/criterion.py,
utils/utils.py and datasets/base_dataset.py, which HRNet-Semantic-Segmentation's and DDRNet's
OHEM share):

- "ce": cross-entropy, the mean over labelled pixels (class-weighted: sum w l / sum w), over
  the global batch as above.
- "ohem" (--loss ohem): on the main output and the auxiliary outputs of kind "main"
  (BiSeNetV2's booster heads: its reference, CoinCheung/BiSeNet tools/train_amp.py, puts an
  OhemCELoss on all five outputs); auxiliary "ce" heads keep plain cross-entropy, as PIDNet's
  and DDRNet's OhemCrossEntropy does (utils/criterion.py: cross-entropy for all but the last
  output). Each OHEM output is mined on its own: sort the labelled pixels by the predicted
  probability of their true class; threshold = max(--ohem-thresh, the probability at index
  min(--ohem-min-kept, n - 1) of that order); the loss is the mean cross-entropy of the pixels
  below the threshold. So every pixel predicted with less than 0.9 is kept, and at least the
  131072 hardest when fewer are (exactly that many without ties; with n <= 131072 labelled
  pixels, all but the most confident one, or those tied with it, when it is at 0.9 or above:
  the reference's index n - 1). The
  references apply 131072 per GPU to 6 crops of 1024x1024 (6.3M pixels: about 2%); the count
  does not scale with the crop, so at 512x1024 x 2 images (1.05M pixels) it is 12.5% of them,
  and at or below 131072 pixels per replica (e.g. 2 x 256x256) OHEM keeps nearly all: scale
  --ohem-min-kept with the pixels per replica to keep the same share. Which pixels are hard
  depends on the predictions, so each replica mines its own share and averages its kept
  pixels, and the replicas' means are averaged, as PyTorch DDP averages the references'
  per-GPU losses: with several replicas this is not the loss of one process over the global
  batch (the plain cross-entropy terms are).
- "boundary" (an auxiliary output of one channel, PIDNet's D head): binary cross-entropy with
  logits against `boundary_map(labels)`, every pixel weighted by the share of the other kind
  (boundary pixels by the non-boundary share, and so on), averaged over all pixels, times the
  aux weight (20). The shares and the mean are over the global batch (counted from the labels
  and all-reduced before the forward pass), so several replicas step as one process.
- boundary awareness (ModelInfo.boundary_awareness, PIDNet's BAS loss, weight 1): the main
  output's loss ("ce" or "ohem", as the reference applies its semantic loss) restricted to the
  labelled pixels where sigmoid(boundary logits) > 0.8 (no gradient through that selection).
  Its pixel count depends on the predictions, and an all-reduce cannot run inside the
  (XLA-compilable) forward pass, so it is each replica's mean, averaged over replicas, as in
  the references. A step without such pixels adds 0 (PyTorch's mean would be NaN).

Also here: the precision policy, the optimizers by the seed's names (and adamw), backbone
freezing and the kernels weight decay applies to: as an L2 term of the loss, or with AdamW as
its decoupled decay (Loshchilov and Hutter, arXiv 1711.05101: each step multiplies those
kernels by 1 - learning rate x weight decay, and the loss has no L2 term).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import get_info
from models.info import AUX_LOSSES, LOSSES
from models.loading import all_layers
from training.options import MOMENTUM_OPTIMIZERS, OPTIMIZERS
from utils.errors import BadInput

__all__ = [
    "AUX_LOSSES",
    "BAS_THRESHOLD",
    "BOUNDARY_WINDOW",
    "LOSSES",
    "MOMENTUM_OPTIMIZERS",
    "OPTIMIZERS",
    "Trainer",
    "apply_precision",
    "backbone_prefixes",
    "boundary_map",
    "decayed_kernels",
    "freeze_backbone",
    "loss_options",
    "make_optimizer",
    "ohem_cross_entropy",
]

#: The boundary-awareness loss takes the pixels where sigmoid(boundary logits) exceeds this
#: (PIDNet's t, utils/utils.py FullModel).
BAS_THRESHOLD = 0.8
#: Side of the square window in which another label value makes a pixel a boundary pixel.
BOUNDARY_WINDOW = 5


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
        name: one of OPTIMIZERS. "adamw" is built with no decay; the Trainer gives it its
            weight_decay as the decoupled decay rate.
        learning_rate: float or LearningRateSchedule.
        momentum: used by sgd, sgd_nesterov and rmsprop (ignored by the others).
        loss_scale: wrap in a LossScaleOptimizer (needed for float16, not for bfloat16).
    """
    momentum = 0.9 if momentum is None else float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise BadInput(f"momentum must be in [0, 1), got {momentum!r}")
    opt = keras.optimizers
    builders: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
        "adadelta": lambda: opt.Adadelta(learning_rate),
        "adagrad": lambda: opt.Adagrad(learning_rate),
        "adam": lambda: opt.Adam(learning_rate),
        "adamax": lambda: opt.Adamax(learning_rate),
        # Decoupled weight decay: the Trainer sets its rate (its weight_decay) and its kernels.
        "adamw": lambda: opt.AdamW(learning_rate, weight_decay=0.0),
        "ftrl": lambda: opt.Ftrl(learning_rate),
        "nadam": lambda: opt.Nadam(learning_rate),
        "rmsprop": lambda: opt.RMSprop(learning_rate, momentum=momentum),
        "sgd": lambda: opt.SGD(learning_rate, momentum=momentum),
        "sgd_nesterov": lambda: opt.SGD(learning_rate, momentum=momentum, nesterov=True),
    }
    if name not in builders:
        raise BadInput(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    optimizer = builders[name]()
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def backbone_prefixes(model_name: str) -> tuple[str, ...]:
    """Layer-name prefixes of `model_name`'s pretrained backbone (empty if it has none)."""
    return tuple(get_info(model_name).backbone_prefixes)


def freeze_backbone(model: keras.Model, model_name: str) -> int:
    """Make the backbone's layers untrainable (batch norm then runs in inference mode).

    Returns the number of layers frozen; BadInput if the model declares no backbone.
    """
    prefixes = backbone_prefixes(model_name)
    if not prefixes:
        raise BadInput(
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


def _set_decoupled_decay(
    optimizer: keras.optimizers.Optimizer,
    model: keras.Model,
    decayed: Sequence[keras.Variable],
    weight_decay: float,
) -> bool:
    """For an AdamW optimizer (also inside a LossScaleOptimizer): set its decoupled decay to
    `weight_decay` on the `decayed` kernels only (the other trainable variables excluded, as
    the L2 term leaves out biases, normalisation and depthwise kernels). Returns whether it
    is one; ValueError if it was already built (its exclusions can no longer be set)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(inner, keras.optimizers.AdamW):
        return False
    if inner.built:
        raise ValueError(
            "the AdamW optimizer was already built: give the Trainer a new one, so that its "
            "weight decay covers the kernels L2 decay would (no biases, norms, depthwise kernels)"
        )
    inner.weight_decay = float(weight_decay)
    chosen = {id(v) for v in decayed}
    inner.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if id(v) not in chosen]
    )
    return True


# ----------------------------------------------------------------------------------------------
# Losses: boundaries of a label map, OHEM
# ----------------------------------------------------------------------------------------------


def boundary_map(labels: tf.Tensor, window: int = BOUNDARY_WINDOW) -> tf.Tensor:
    """float32 (N, H, W): 1 where a pixel's `window` x `window` neighbourhood holds another label
    value, else 0; `labels` (N, H, W) train ids.

    PIDNet's ground truth (datasets/base_dataset.py) is cv2.Canny of the label map dilated by a
    4x4 kernel: a band 4 pixels wide along every change of value. The 5x5 window gives the same
    4-pixel band, centred on the change (Canny's non-maximum suppression puts its one-pixel
    edge on either side). As there, the ignore value 255 is one more value: the border between
    a class and ignored pixels is a boundary, and no pixel is left out of the boundary loss.
    Outside the image counts as nothing (the image border is no boundary). Differences: the
    map is made at the training resolution (the reference makes it at full resolution before
    its random scaling, so its band is 2-8 pixels wide at the crop) and a crop's ignore
    padding meets the image in a boundary (the reference pads its map with 0 and also clears
    the 6 pixels along the full image's border).
    """
    if window < 2:
        raise ValueError(f"the boundary window must be at least 2 pixels wide, got {window!r}")
    values = tf.cast(labels, tf.float32)[..., None]
    # SAME max pooling leaves the padding out: outside the image is never another value.
    highest = tf.nn.max_pool2d(values, window, 1, "SAME")
    lowest = -tf.nn.max_pool2d(-values, window, 1, "SAME")
    return tf.cast(tf.not_equal(highest, lowest), tf.float32)[..., 0]


def ohem_cross_entropy(
    ce: tf.Tensor, valid: tf.Tensor, weights: tf.Tensor, thresh: float, min_kept: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """(sum of the kept pixels' weighted cross-entropy, number of kept pixels) of OHEM.

    Args:
        ce: per-pixel cross-entropy (float32), -log of the true class's softmax probability.
        valid: bool, the labelled pixels (the only ones ranked and kept).
        weights: per-pixel loss weights (class weights; 0 where not labelled).
        thresh: keep the pixels whose probability of their true class is below this ...
        min_kept: ... or below the probability at index min(min_kept, n - 1) of the n labelled
            pixels sorted by it, whichever is higher (XuJiacong/PIDNet OhemCrossEntropy).
    """
    ce = tf.reshape(tf.cast(ce, tf.float32), [-1])
    valid = tf.reshape(valid, [-1])
    weights = tf.reshape(tf.cast(weights, tf.float32), [-1])
    probability = tf.stop_gradient(tf.exp(-ce))
    # Unlabelled pixels sort after every probability (<= 1) and are never kept.
    ranked = tf.sort(tf.where(valid, probability, 2.0))
    count = tf.reduce_sum(tf.cast(valid, tf.int32))
    index = tf.maximum(tf.minimum(tf.cast(min_kept, tf.int32), count - 1), 0)
    threshold = tf.maximum(tf.gather(ranked, index), tf.cast(thresh, tf.float32))
    kept = valid & (probability < threshold)
    kept_count = tf.reduce_sum(tf.cast(kept, tf.float32))
    return tf.reduce_sum(tf.where(kept, ce * weights, 0.0)), kept_count


def loss_options(config: Any) -> dict[str, Any]:
    """The Trainer's loss keyword arguments for a TrainConfig: its --loss settings and the
    auxiliary losses and boundary awareness of its model (ModelInfo)."""
    info = get_info(config.model)
    return {
        "loss": config.loss,
        "ohem_thresh": config.ohem_thresh,
        "ohem_min_kept": config.ohem_min_kept,
        "aux_losses": info.aux_loss_kinds,
        "boundary_awareness": info.boundary_awareness,
    }


# ----------------------------------------------------------------------------------------------
# The trainer: one step function for every strategy
# ----------------------------------------------------------------------------------------------


class Trainer:
    """The train step function, for any tf.distribute strategy (validation: training.validation).

    Create the model and the optimizer inside `strategy.scope()` first. The losses are in the
    module docstring; `loss_options(config)` gives the loss arguments of a TrainConfig.

    Args:
        model: Keras model returning logits, or a list [main, aux...] of logits.
        optimizer: Keras optimizer (built here on the model's trainable variables).
        strategy: the tf.distribute strategy the model was built under.
        num_classes: number of classes (label values >= this, e.g. 255, are ignored).
        aux_weights: loss weights of the auxiliary outputs, in order.
        class_weights: optional (num_classes,) per-class loss weights.
        weight_decay: L2 coefficient: the loss gets weight_decay / 2 * sum of squared kernels
            (decayed_kernels); with an AdamW optimizer it is AdamW's decoupled decay rate
            instead, on the same kernels (set on the optimizer here; the loss gets no L2 term).
        xla: compile the forward and backward pass with XLA (jit_compile).
        loss: loss of the main output, one of LOSSES ("ce", "ohem").
        ohem_thresh: OHEM's probability threshold.
        ohem_min_kept: OHEM's minimum kept pixels, per replica.
        aux_losses: loss of each auxiliary output (AUX_LOSSES), in the order of aux_weights;
            None: "ce" for each.
        boundary_awareness: add the boundary-awareness loss on the main output (needs a
            "boundary" auxiliary output).
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
        *,
        loss: str = "ce",
        ohem_thresh: float = 0.9,
        ohem_min_kept: int = 131072,
        aux_losses: Sequence[str] | None = None,
        boundary_awareness: bool = False,
    ) -> None:
        if class_weights is not None and len(class_weights) != num_classes:
            raise BadInput(f"class weights need {num_classes} values, got {len(class_weights)}")
        if not weight_decay >= 0:
            raise BadInput(f"weight decay must be >= 0, got {weight_decay!r}")
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.num_classes = int(num_classes)
        self.aux_weights = tuple(float(w) for w in aux_weights)
        self.class_weights = (
            None if class_weights is None else tf.constant(np.asarray(class_weights, np.float32))
        )
        self.weight_decay = float(weight_decay)
        self._set_losses(loss, ohem_thresh, ohem_min_kept, aux_losses, boundary_awareness)
        self._check_outputs()
        self.decayed = decayed_kernels(model) if weight_decay > 0 else []
        self.decoupled = _set_decoupled_decay(optimizer, model, self.decayed, self.weight_decay)
        if self.decoupled:
            self.decayed = []  # AdamW decays them itself
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        forward = self._forward_backward
        self._forward = tf.function(forward, jit_compile=True) if xla else forward
        self._train_fn = tf.function(self._distributed_train_step)

    def _set_losses(
        self,
        loss: str,
        ohem_thresh: float,
        ohem_min_kept: int,
        aux_losses: Sequence[str] | None,
        boundary_awareness: bool,
    ) -> None:
        """Check and keep the loss settings (BadInput naming the value)."""
        if loss not in LOSSES:
            raise BadInput(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not 0.0 < float(ohem_thresh) <= 1.0:
            raise BadInput(f"OHEM threshold must be in (0, 1], got {ohem_thresh!r}")
        if int(ohem_min_kept) < 1:
            raise BadInput(f"OHEM minimum kept pixels must be >= 1, got {ohem_min_kept!r}")
        kinds = ("ce",) * len(self.aux_weights) if aux_losses is None else tuple(aux_losses)
        if len(kinds) != len(self.aux_weights):
            raise ValueError(
                f"aux losses need one kind per aux weight ({len(self.aux_weights)}), got {kinds!r}"
            )
        for kind in kinds:
            if kind not in AUX_LOSSES:
                raise ValueError(f"aux loss must be one of {', '.join(AUX_LOSSES)}, got {kind!r}")
        self.loss, self.aux_losses = loss, kinds
        self.ohem_thresh, self.ohem_min_kept = float(ohem_thresh), int(ohem_min_kept)
        #: Output index (1 = first aux) of the boundary logits boundary awareness reads.
        self.boundary_output = kinds.index("boundary") + 1 if "boundary" in kinds else None
        if boundary_awareness and self.boundary_output is None:
            raise ValueError(
                f"boundary awareness needs a 'boundary' auxiliary output; aux losses are {kinds!r}"
            )
        self.boundary_awareness = bool(boundary_awareness)

    def _check_outputs(self) -> None:
        """The model's outputs have the channels their losses read: ValueError otherwise."""
        outputs = list(getattr(self.model, "outputs", None) or [])
        for index, kind in enumerate(("ce", *self.aux_losses)):
            if index >= len(outputs):
                break
            channels = outputs[index].shape[-1]
            expected = 1 if kind == "boundary" else self.num_classes
            if channels is not None and int(channels) != expected:
                raise ValueError(
                    f"output {index} of {self.model.name!r} has {int(channels)} channels, but its "
                    f"{kind!r} loss needs {expected}"
                )

    # -- losses -----------------------------------------------------------------------------

    def _pixel_weights(self, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(labels with ignored pixels set to 0, per-pixel loss weight: 0 where ignored, and the
        labelled pixels)."""
        labels = tf.cast(labels, tf.int32)
        valid = (labels >= 0) & (labels < self.num_classes)
        safe = tf.where(valid, labels, 0)
        if self.class_weights is None:
            weights = tf.cast(valid, tf.float32)
        else:
            weights = tf.where(valid, tf.gather(self.class_weights, safe), 0.0)
        return safe, weights, valid

    def _targets(self, labels: tf.Tensor) -> tuple[dict[str, tf.Tensor], list[tf.Tensor]]:
        """The per-pixel targets of one replica's labels, and its counts to all-reduce: the
        summed pixel weights, and with a boundary output the boundary and all pixels."""
        safe, weights, valid = self._pixel_weights(labels)
        targets = {"safe": safe, "weights": weights, "valid": valid}
        counts = [tf.reduce_sum(weights)]
        if self.boundary_output is not None:
            edges = boundary_map(labels)
            targets["edges"] = edges
            counts += [tf.reduce_sum(edges), tf.cast(tf.size(edges), tf.float32)]
        return targets, counts

    @staticmethod
    def _ce(safe: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Per-pixel cross-entropy (float32)."""
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=safe, logits=tf.cast(logits, tf.float32)
        )

    def _replica_mean(self, total: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        """A replica's own mean (0 without pixels), divided by the replicas so that the summed
        gradients average the replicas' means."""
        return tf.math.divide_no_nan(total, count) / float(self.strategy.num_replicas_in_sync)

    def _semantic_loss(
        self, ce: tf.Tensor, valid: tf.Tensor, weights: tf.Tensor, norm: tf.Tensor | None
    ) -> tf.Tensor:
        """The main output's loss on the pixels `valid`: OHEM (the replica's mean), else the
        weighted cross-entropy over `norm` (global) or, with norm None, the replica's mean."""
        if self.loss == "ohem":
            kept_sum, kept = ohem_cross_entropy(
                ce, valid, weights, self.ohem_thresh, self.ohem_min_kept
            )
            return self._replica_mean(kept_sum, kept)
        total = tf.reduce_sum(ce * weights)
        return (
            total / norm if norm is not None else self._replica_mean(total, tf.reduce_sum(weights))
        )

    def _loss_terms(
        self, outputs: Sequence[tf.Tensor], targets: dict[str, tf.Tensor], counts: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """The weighted loss terms of one replica: main, aux (cross-entropy heads), boundary and
        boundary awareness (bas); `counts` are `_targets`' counts summed over all replicas."""
        safe, weights, valid = targets["safe"], targets["weights"], targets["valid"]
        norm = tf.maximum(counts[0], 1.0)
        main_ce = self._ce(safe, outputs[0])
        terms = {"main": self._semantic_loss(main_ce, valid, weights, norm)}
        terms["aux"] = terms["boundary"] = terms["bas"] = tf.constant(0.0)
        for weight, kind, logits in zip(
            self.aux_weights, self.aux_losses, outputs[1:], strict=False
        ):
            if kind == "boundary":
                terms["boundary"] += weight * self._boundary_loss(targets["edges"], logits, counts)
            elif kind == "main":  # the main output's loss: OHEM under --loss ohem
                ce = self._ce(safe, logits)
                terms["aux"] += weight * self._semantic_loss(ce, valid, weights, norm)
            else:
                terms["aux"] += weight * tf.reduce_sum(self._ce(safe, logits) * weights) / norm
        if self.boundary_awareness and self.boundary_output < len(outputs):
            boundary = tf.cast(outputs[self.boundary_output][..., 0], tf.float32)
            on_edge = tf.stop_gradient(tf.sigmoid(boundary) > BAS_THRESHOLD)
            terms["bas"] = self._semantic_loss(
                main_ce, valid & on_edge, tf.where(on_edge, weights, 0.0), None
            )
        return terms

    @staticmethod
    def _boundary_loss(edges: tf.Tensor, logits: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
        """Class-balanced binary cross-entropy of one-channel logits against `edges`, this
        replica's part of the global mean (counts[1] boundary pixels of counts[2])."""
        total = tf.maximum(counts[2], 1.0)
        positive_weight = (counts[2] - counts[1]) / total  # the non-boundary share
        negative_weight = counts[1] / total  # the boundary share
        pixel_weights = edges * positive_weight + (1.0 - edges) * negative_weight
        bce = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=edges, logits=tf.cast(logits[..., 0], tf.float32)
        )
        return tf.reduce_sum(pixel_weights * bce) / total

    def _outputs(self, images: tf.Tensor, training: bool) -> list[tf.Tensor]:
        """Model outputs as a list [main, aux...]."""
        outputs = self.model(tf.cast(images, tf.float32), training=training)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def _forward_backward(
        self, images: tf.Tensor, targets: dict[str, tf.Tensor], counts: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, list]:
        """Loss terms and gradients of one replica's batch (XLA-compilable)."""
        num_replicas = float(self.strategy.num_replicas_in_sync)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self._outputs(images, training=True)
            terms = self._loss_terms(outputs, targets, counts)
            main = terms["main"]
            aux = terms["aux"] + terms["boundary"] + terms["bas"]
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
        normalisers, in the same collective: every replica learns whether any worker wants to
        stop after this step."""
        targets, counts = self._targets(labels)
        context = tf.distribute.get_replica_context()
        reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack([*counts, stop]))
        loss, main, aux, grads = self._forward(images, targets, reduced[:-1])
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss, main, aux, reduced[-1]

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
                raise BadInput(
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
