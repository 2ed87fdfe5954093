"""The training loop: one custom loop for every tf.distribute strategy, and its checkpoints.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
loop calls `strategy.run` inside a `tf.function` with a Keras model and optimizer. The same code
serves TensorFlow's default strategy (one device), MirroredStrategy (GPUs of one node) and
MultiWorkerMirroredStrategy (nodes, from TF_CONFIG or SLURM).

Loss normalisation is global: every replica divides its summed pixel losses by the number of
labelled pixels in the GLOBAL batch (an all-reduce), and the optimizer sums the replicas'
gradients, so N workers with batch b step exactly like one process with batch N * b (up to batch
normalisation, whose statistics stay per replica).

Checkpoints (written by the chief only, each atomically):
- `weights-EEE-ACC-LOSS-DATETIME.weights.h5`: the inference model's weights (main output only;
  what predict.py, evaluate.py and convert_to_onnx.py load), for the last and the best epoch;
- `weights-...-DATETIME.state/`: beside each, the training state (model with auxiliary heads,
  optimizer with its iteration counter and so the schedule position, and `meta.json` with the
  epoch, the best mIoU and the settings), which `-r FILE` and a restarted run read;
- `checkpoints.json`: which files are the last and the best (the commit point of a save);
- `log.csv`, `logs/` (TensorBoard) and `val_scores.json` (per-class IoU of the last validation).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from utils.io import atomic_path, write_json, write_text

__all__ = [
    "OPTIMIZERS",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_precision",
    "backbone_prefixes",
    "decayed_kernels",
    "freeze_backbone",
    "make_optimizer",
    "measure_train_throughput",
    "parse_weights_name",
    "run_training",
    "weights_name",
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
INDEX_FILE = "checkpoints.json"
WEIGHTS_SUFFIX = ".weights.h5"
STATE_SUFFIX = ".state"
_NAME_RE = re.compile(r"^weights-(\d+)-")  # the epoch; the rest may vary (the seed's dates)


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
    from models import get_info

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


def _all_layers(model: keras.Layer) -> list[keras.Layer]:
    """Every layer inside `model`, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_all_layers(layer))
    return found


def decayed_kernels(model: keras.Model) -> list[keras.Variable]:
    """Trainable kernels that L2 weight decay applies to: no biases, BN, or depthwise kernels."""
    kernels, seen = [], set()
    for layer in _all_layers(model):
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
    """Train and evaluate step functions that work under any tf.distribute strategy.

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
        self._eval_fn = tf.function(self._distributed_eval_step)

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

    def _replica_train_step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """One optimizer step on one replica's share of the global batch."""
        safe, weights = self._pixel_weights(labels)
        context = tf.distribute.get_replica_context()
        norm = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(weights))
        norm = tf.maximum(norm, 1.0)
        loss, main, aux, grads = self._forward(images, safe, weights, norm)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss, main, aux

    def _distributed_train_step(self, batch: Any) -> tuple[tf.Tensor, ...]:
        """strategy.run of the replica step; losses summed over replicas (already normalised)."""
        images, labels = batch
        per_replica = self.strategy.run(self._replica_train_step, args=(images, labels))
        return tuple(
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for value in per_replica
        )

    def _replica_eval_step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Confusion matrix, summed CE and labelled-pixel weight of one replica's batch.

        A worker whose shard has run out receives empty batches while the others finish; those
        count nothing and skip the model (batch norm rejects a batch of 0 images).
        """
        from utils.metrics import confusion_matrix_tf

        def compute() -> tuple[tf.Tensor, ...]:
            safe, weights = self._pixel_weights(labels)
            logits = self._outputs(images, training=False)[0]
            cm = confusion_matrix_tf(labels, logits, num_classes=self.num_classes)
            return cm, self._ce_sum(safe, weights, logits), tf.reduce_sum(weights)

        def empty() -> tuple[tf.Tensor, ...]:
            zeros = tf.zeros((self.num_classes, self.num_classes), tf.int64)
            return zeros, tf.constant(0.0), tf.constant(0.0)

        return tf.cond(tf.shape(images)[0] > 0, compute, empty)

    def _distributed_eval_step(self, batch: Any) -> tuple[tf.Tensor, ...]:
        """strategy.run of the eval step, everything summed over replicas and workers."""
        images, labels = batch
        per_replica = self.strategy.run(self._replica_eval_step, args=(images, labels))
        return tuple(
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for value in per_replica
        )

    # -- public API ---------------------------------------------------------------------------

    def train_step(self, batch: Any) -> dict[str, float]:
        """One global step on a batch from a distributed iterator: loss, main and aux losses."""
        try:
            loss, main, aux = self._train_fn(batch)
        except tf.errors.OpError as exc:
            if "mixed precision is disallowed" in str(exc):
                raise ValueError(
                    "XLA's CPU compiler rejects this model's bfloat16 gradients (dropout mixes "
                    "float32 and bfloat16); on CPU use --xla or --mixed-precision, not both"
                ) from None
            raise
        return {"loss": float(loss), "main_loss": float(main), "aux_loss": float(aux)}

    def learning_rate(self) -> float:
        """The learning rate the next step will use."""
        lr = self.optimizer.learning_rate
        return float(lr.numpy() if hasattr(lr, "numpy") else lr)

    def evaluate(self, dist_dataset: Any) -> dict[str, Any]:
        """Confusion matrix (summed over batches, replicas and workers), loss and scores."""
        from utils.metrics import scores_from_confusion

        cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        ce_sum, weight_sum = 0.0, 0.0
        for batch in dist_dataset:
            batch_cm, batch_ce, batch_weight = self._eval_fn(batch)
            cm += batch_cm.numpy().astype(np.int64)
            ce_sum += float(batch_ce)
            weight_sum += float(batch_weight)
        scores = scores_from_confusion(cm)
        scores["loss"] = ce_sum / weight_sum if weight_sum > 0 else float("nan")
        scores["confusion_matrix"] = cm
        return scores


# ----------------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------------


def weights_name(
    epoch: int, val_acc: float | None, val_loss: float | None, when: _dt.datetime | None = None
) -> str:
    """The seed's name: weights-[epoch]-[val-acc]-[val-loss]-[datetime] (without the suffix)."""
    when = when or _dt.datetime.now()

    def fmt(value: float | None) -> str:
        return "nan" if value is None or not math.isfinite(value) else f"{value:.4f}"

    return f"weights-{epoch:03d}-{fmt(val_acc)}-{fmt(val_loss)}-{when:%Y%m%d-%H%M%S}"


def parse_weights_name(path: str | os.PathLike) -> int | None:
    """The epoch in a weights-[epoch]-... file name, or None if the name is not of that form."""
    name = Path(path).name
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX, ".hdf5", ".h5"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    match = _NAME_RE.match(name)
    return int(match.group(1)) if match else None


def _stem(path: str | os.PathLike) -> Path:
    """A checkpoint path without its .weights.h5 / .state suffix."""
    text = str(path).rstrip("/")
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX):
        if text.endswith(suffix):
            return Path(text[: -len(suffix)])
    return Path(text)


def _unique_stem(directory: Path, stem: str) -> str:
    """`stem`, or `stem-N` if a file of that name exists already (two saves in one second)."""
    candidate, n = stem, 1
    while (directory / (candidate + WEIGHTS_SUFFIX)).exists() or (
        directory / (candidate + STATE_SUFFIX)
    ).exists():
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def _h5_layer_names(path: Path) -> set[str]:
    """Names of the layers stored in a Keras 3 .weights.h5 file; ValueError if unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f.get("layers")
            if group is None:
                raise ValueError("no 'layers' group")
            return set(group.keys())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot read weights file {str(path)!r} ({exc}); pass a "
            "weights-*.weights.h5 file written by train.py"
        ) from None


def _weight_layer_names(model: keras.Model) -> set[str]:
    """Names of the model's top-level layers that hold weights (as a .weights.h5 stores them)."""
    return {layer.name for layer in model.layers if layer.weights}


@dataclasses.dataclass
class ResumePoint:
    """Where a run starts: a weights file, its training state (if any) and its epoch."""

    weights: Path
    state: Path | None
    epoch: int
    meta: dict[str, Any]


def _read_meta(state: Path) -> dict[str, Any]:
    """meta.json of a state folder; ValueError if it is missing or corrupt."""
    try:
        return json.loads((state / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"training state {str(state)!r} is unreadable ({exc}); resume from "
            "another checkpoint or delete it"
        ) from None


def find_resume_point(
    resume: str | os.PathLike | None, output_dir: str | os.PathLike, model_name: str
) -> ResumePoint | None:
    """Resolve -r FILE and the run already in `output_dir` into where training restarts.

    A run in `output_dir` (checkpoints.json) wins over -r when it got further, so rerunning the
    command of a killed run continues it. Raises ValueError for a missing file, a file of another
    model, or an output folder holding another model's run.
    """
    points = []
    index_path = Path(output_dir) / INDEX_FILE
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            last = Path(output_dir) / index["last"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{str(index_path)!r} is corrupt ({exc}); delete it to start over "
                "or choose another --output-dir"
            ) from None
        if index.get("model") != model_name:
            raise ValueError(
                f"output folder {str(output_dir)!r} holds a run of model "
                f"{index.get('model')!r}, not {model_name!r}; choose another "
                "--output-dir"
            )
        points.append(_resume_point(last, model_name))
    if resume is not None:
        path = Path(resume)
        if not path.exists():
            raise ValueError(
                f"resume file {str(path)!r} does not exist; pass a "
                "weights-*.weights.h5 file written by train.py"
            )
        points.append(_resume_point(path, model_name))
    if not points:
        return None
    return max(points, key=lambda p: p.epoch)


def _resume_point(path: Path, model_name: str) -> ResumePoint:
    """A ResumePoint for a weights file or state folder; ValueError if it is unusable."""
    if not str(path).rstrip("/").endswith((WEIGHTS_SUFFIX, STATE_SUFFIX)):
        raise ValueError(
            f"resume file {str(path)!r} is not a .weights.h5 file; pass a "
            "weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 file written by train.py"
        )
    stem = _stem(path)
    weights = Path(str(stem) + WEIGHTS_SUFFIX)
    state = Path(str(stem) + STATE_SUFFIX)
    if not weights.is_file():
        raise ValueError(
            f"resume file {str(weights)!r} does not exist; pass a "
            "weights-*.weights.h5 file written by train.py"
        )
    if state.is_dir():
        meta = _read_meta(state)
        if meta.get("model") != model_name:
            raise ValueError(
                f"resume file {str(weights)!r} was trained as model "
                f"{meta.get('model')!r}, not {model_name!r}; pass -m "
                f"{meta.get('model')} or another file"
            )
        return ResumePoint(weights, state, int(meta["epoch"]), meta)
    epoch = parse_weights_name(weights)
    if epoch is None:
        raise ValueError(
            f"cannot tell the epoch of {str(weights)!r}: its name is not "
            "weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 and it "
            "has no .state folder beside it"
        )
    return ResumePoint(weights, None, epoch, {})


def _restore(
    point: ResumePoint, model: keras.Model, inference: keras.Model, checkpoint: tf.train.Checkpoint
) -> None:
    """Load a resume point into the model (and the optimizer when a state exists)."""
    if point.state is not None:
        try:
            checkpoint.read(str(point.state / "ckpt")).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as exc:
            raise ValueError(
                f"training state {str(point.state)!r} does not fit this model or "
                f"is corrupt ({str(exc).splitlines()[0][:200]}); pass a checkpoint "
                "of the same model and options"
            ) from None
        return
    stored = _h5_layer_names(point.weights)
    expected = _weight_layer_names(inference)
    if stored != expected:
        extra = sorted(stored - expected)[:3]
        missing = sorted(expected - stored)[:3]
        raise ValueError(
            f"weights file {str(point.weights)!r} is from another model or "
            f"options (layers only in the file: {extra}, only in the model: "
            f"{missing}); pass a file of the same -m and options"
        )
    try:
        inference.load_weights(str(point.weights))
    except Exception as exc:  # Keras raises several types for a mismatched or corrupt file
        raise ValueError(
            f"cannot load weights file {str(point.weights)!r} "
            f"({str(exc).splitlines()[0][:200]}); pass a file of the same model "
            "and options"
        ) from None


@contextlib.contextmanager
def _atomic_dir(path: Path, write: bool):
    """Yield a temporary folder that becomes `path` on success (a throwaway one if not `write`)."""
    parent = path.parent if write else Path(tempfile.gettempdir())
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        if write:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs (train.py fills it from the command line and the recipe).

    `batch_size` is per replica; the global batch is batch_size x replicas. `learning_rate`,
    `min_lr` and `max_lr` are multiplied by the number of replicas when `lr_scaling` is "linear"
    (the rates are given for one replica's batch).
    """

    model: str
    input_size: tuple[int, int]
    batch_size: int
    epochs: int
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float | None = 0.9
    weight_decay: float = 0.0
    schedule: str = "polynomial"
    power: float = 0.9
    min_lr: float | None = None
    max_lr: float | None = None
    cycle: int | None = None
    warmup_epochs: float = 0.0
    lr_scaling: str = "linear"
    mixed_precision: bool = False
    xla: bool = False
    seed: int = 0
    output_dir: str = "runs"
    val_every: int = 1
    class_weights: list[float] | None = None
    freeze_backbone: bool = False
    weights: str | None = None
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps_per_epoch: int | None = None
    resume: str | None = None
    coarse: bool = False
    skip_bad: bool = False
    num_classes: int = 19


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
        raise ValueError(f"lr scaling must be linear or none, got {config.lr_scaling!r}")
    factor = float(num_replicas) if config.lr_scaling == "linear" else 1.0
    return (
        config.learning_rate * factor,
        None if config.min_lr is None else config.min_lr * factor,
        None if config.max_lr is None else config.max_lr * factor,
    )


def build_training_model(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
) -> tuple[keras.Model, keras.Model, tuple[float, ...]]:
    """(training model with aux heads, inference model sharing its layers, aux weights)."""
    from models import build_model, get_info

    info = get_info(config.model)
    aux = bool(info.aux_weights)
    with strategy.scope():
        model = build_model(
            config.model,
            (*config.input_size, 3),
            config.num_classes,
            aux=aux or None,
            weights=config.weights,
            **config.model_options,
        )
        if config.freeze_backbone:
            freeze_backbone(model, config.model)
        if isinstance(model.outputs, list) and len(model.outputs) > 1:
            inference = keras.Model(model.inputs, model.outputs[0], name=model.name)
        else:
            inference = model
    return model, inference, info.aux_weights if aux else ()


class _Logs:
    """CSV log, TensorBoard writers and the preview image; real on the chief, inert elsewhere."""

    FIELDS = (
        "epoch",
        "loss",
        "main_loss",
        "aux_loss",
        "learning_rate",
        "epoch_time_s",
        "images_per_s",
        "val_loss",
        "val_mean_iou",
        "val_pixel_accuracy",
    )

    def __init__(self, output_dir: Path, chief: bool, start_epoch: int) -> None:
        self.chief = chief
        self.csv_path = output_dir / "log.csv"
        self.rows: list[dict[str, Any]] = []
        if chief and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                self.rows = [
                    r
                    for r in csv.DictReader(f)
                    if r.get("epoch", "").isdigit() and int(r["epoch"]) <= start_epoch
                ]
        if chief:
            self.train_writer = tf.summary.create_file_writer(str(output_dir / "logs" / "train"))
            self.val_writer = tf.summary.create_file_writer(str(output_dir / "logs" / "val"))
        else:
            self.train_writer = self.val_writer = tf.summary.create_noop_writer()

    def write(self, row: dict[str, Any], preview: np.ndarray | None) -> None:
        """Append an epoch to the CSV (rewritten atomically) and to TensorBoard."""
        if not self.chief:
            return
        epoch = int(row["epoch"])
        with self.train_writer.as_default(step=epoch):
            for key in (
                "loss",
                "main_loss",
                "aux_loss",
                "learning_rate",
                "images_per_s",
                "epoch_time_s",
            ):
                _summary_scalar(key, row[key])
        if row.get("val_loss") is not None:
            with self.val_writer.as_default(step=epoch):
                _summary_scalar("loss", row["val_loss"])
                _summary_scalar("mean_iou", row["val_mean_iou"])
                _summary_scalar("pixel_accuracy", row["val_pixel_accuracy"])
                if preview is not None:
                    _summary_image("prediction", preview)
        self.train_writer.flush()
        self.val_writer.flush()
        self.rows.append({k: ("" if row.get(k) is None else row[k]) for k in self.FIELDS})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.csv_path, buffer.getvalue())


def _summary_scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar written with TensorFlow alone (the tensorboard package is optional)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=metadata)


def _summary_image(tag: str, image: np.ndarray) -> None:
    """A TensorBoard image (PNG) written with TensorFlow alone, as the images plugin reads it."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
        summary_description="validation image | ground truth | prediction",
    )
    png = tf.io.encode_png(image)
    tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])
    tf.summary.write(tag, tensor, metadata=metadata)


def _preview(inference: keras.Model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """image | coloured ground truth | coloured prediction, side by side (RGB uint8)."""
    from utils.visualize import colorize

    logits = inference(tf.cast(images[:1], tf.float32), training=False)
    pred = np.argmax(np.asarray(logits)[0], axis=-1).astype(np.uint8)
    return np.concatenate([images[0], colorize(labels[0]), colorize(pred)], axis=1)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def input_fn(
    samples: Sequence[Any],
    global_batch: int,
    size: tuple[int, int],
    training: bool,
    seed: int,
    epoch: int = 0,
    skip_bad: bool = False,
) -> Callable[[tf.distribute.InputContext], Any]:
    """A dataset function for `strategy.distribute_datasets_from_function`.

    Each worker reads its own shard of the files (every num_workers-th), in per-replica batches;
    training data repeats (callers take steps_per_epoch batches) and is seeded by
    (seed, epoch), so epoch k is the same whether or not the run was resumed before it.
    """
    from datasets.cityscapes import build_dataset

    def make(context: tf.distribute.InputContext) -> Any:
        shard = (
            (context.num_input_pipelines, context.input_pipeline_id)
            if context.num_input_pipelines > 1
            else None
        )
        return build_dataset(
            samples,
            context.get_per_replica_batch_size(global_batch),
            size,
            training=training,
            seed=seed,
            shard=shard,
            repeat=training,
            epoch=epoch,
            skip_bad=skip_bad,
        )

    return make


def run_training(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    num_workers: int = 1,
    worker_index: int = 0,
    root: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train `config.model` on Cityscapes at `root`, validating, logging and checkpointing.

    Args:
        config: the run's settings.
        strategy: created with utils.distribute.make_strategy before anything else.
        num_workers: workers of a multi-worker run (1 otherwise).
        worker_index: this worker (0 is the chief, which alone writes files and prints).
        root: Cityscapes root (from datasets.cityscapes.resolve_root).
        log: receives the lines a CLI prints ("Epoch N/E" and notes); None to stay quiet.

    Raises:
        ValueError: bad settings, an unusable resume file or output folder.
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
    """
    from datasets.cityscapes import build_dataset, find_samples
    from models import get_info
    from models.layers import check_input_size

    chief = worker_index == 0
    say = log if (log is not None and chief) else (lambda _line: None)
    info = get_info(config.model)
    height, width = config.input_size
    check_input_size(config.model, height, width, info.size_multiple)
    if config.batch_size < 1 or config.epochs < 1:
        raise ValueError(
            f"batch size and epochs must be >= 1, got {config.batch_size!r} and {config.epochs!r}"
        )
    output_dir = Path(config.output_dir)
    point = find_resume_point(config.resume, output_dir, config.model)
    train_samples = find_samples(root, "train", coarse=config.coarse, skip_bad=config.skip_bad)
    val_samples = find_samples(root, "val", skip_bad=config.skip_bad)

    num_replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * num_replicas
    steps = len(train_samples) // global_batch
    if steps < 1:
        raise ValueError(
            f"the global batch ({config.batch_size} x {num_replicas} replicas = "
            f"{global_batch}) exceeds the {len(train_samples)} training images; "
            "lower -b/--batch"
        )
    if config.steps_per_epoch:
        steps = int(config.steps_per_epoch)  # the training data repeats, so any count works
    total_steps = steps * config.epochs
    lr, min_lr, max_lr = scaled_rates(config, num_replicas)

    from utils.schedules import make_schedule

    schedule = make_schedule(
        config.schedule,
        lr,
        total_steps,
        min_lr=min_lr,
        max_lr=max_lr,
        power=config.power,
        cycle=config.cycle,
        warmup_steps=int(round(config.warmup_epochs * steps)),
    )
    previous_policy = keras.config.dtype_policy()
    policy = apply_precision(config.mixed_precision)
    keras.utils.set_random_seed(config.seed)
    try:
        model, inference, aux_weights = build_training_model(config, strategy)
    finally:  # the built layers keep their policy; later builds in this process get float32
        keras.config.set_dtype_policy(previous_policy)
    with strategy.scope():
        optimizer = make_optimizer(
            config.optimizer, schedule, config.momentum, loss_scale=policy == "mixed_float16"
        )
    trainer = Trainer(
        model,
        optimizer,
        strategy,
        config.num_classes,
        aux_weights,
        config.class_weights,
        config.weight_decay,
        config.xla,
    )
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)

    start_epoch, best_miou, meta = 0, -1.0, {}
    last_stem = best_stem = None
    if point is not None:
        _restore(point, model, inference, checkpoint)
        start_epoch = point.epoch
        meta = point.meta
        best_miou = float(meta.get("best_mean_iou", -1.0))
        if point.state is None:
            optimizer.iterations.assign(start_epoch * steps)
        if point.weights.parent.resolve() == output_dir.resolve():
            last_stem = point.weights.name[: -len(WEIGHTS_SUFFIX)]
            best_stem = meta.get("best")
        say(
            f"Resuming from {point.weights} at epoch {start_epoch + 1} (optimizer step "
            f"{int(optimizer.iterations.numpy())})"
        )

    if chief:
        output_dir.mkdir(parents=True, exist_ok=True)
    logs = _Logs(output_dir, chief, start_epoch)
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "resume"}
    say(
        f"{config.model}: {len(train_samples)} training and {len(val_samples)} validation "
        f"images at {height}x{width}, global batch {global_batch} ({config.batch_size} x "
        f"{num_replicas} replicas), {steps} steps/epoch, {policy}, lr {lr:g} "
        f"({config.lr_scaling} scaling)"
    )

    def dataset_fn(epoch: int, training: bool) -> Callable[[tf.distribute.InputContext], Any]:
        return input_fn(
            train_samples if training else val_samples,
            global_batch,
            (height, width),
            training,
            config.seed,
            epoch,
            config.skip_bad,
        )

    preview_batch = None
    if chief:
        preview_batch = next(
            iter(build_dataset(val_samples[:1], 1, (height, width), training=False))
        )
        preview_batch = tuple(np.asarray(t) for t in preview_batch)

    history: list[dict[str, Any]] = []
    scores = None
    for epoch in range(start_epoch, config.epochs):
        say(f"Epoch {epoch + 1}/{config.epochs}")
        progbar = keras.utils.Progbar(
            steps,
            verbose=1 if (chief and log is not None) else 0,
            stateful_metrics=["loss", "lr", "img/s", "val_loss", "val_miou", "val_acc"],
        )
        dist = strategy.distribute_datasets_from_function(dataset_fn(epoch, True))
        iterator = iter(dist)
        totals = {"loss": 0.0, "main_loss": 0.0, "aux_loss": 0.0}
        started = time.perf_counter()
        for step in range(steps):
            rate = trainer.learning_rate()
            values = trainer.train_step(next(iterator))
            if not math.isfinite(values["loss"]):
                last = str(output_dir / (last_stem + WEIGHTS_SUFFIX)) if last_stem else None
                raise NonFiniteLossError(epoch + 1, step + 1, last)
            for key in totals:
                totals[key] += values[key]
            elapsed = time.perf_counter() - started
            progbar.update(
                step + 1,
                [
                    ("loss", totals["loss"] / (step + 1)),
                    ("lr", rate),
                    ("img/s", (step + 1) * global_batch / elapsed),
                ],
                finalize=False,
            )
        epoch_time = time.perf_counter() - started
        row: dict[str, Any] = {k: v / steps for k, v in totals.items()}
        row.update(
            epoch=epoch + 1,
            learning_rate=trainer.learning_rate(),
            epoch_time_s=epoch_time,
            images_per_s=steps * global_batch / epoch_time,
        )
        validate = (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs
        preview = None
        if validate:
            val = strategy.distribute_datasets_from_function(dataset_fn(epoch, False))
            scores = trainer.evaluate(val)
            row.update(
                val_loss=scores["loss"],
                val_mean_iou=scores["mean_iou"],
                val_pixel_accuracy=scores["pixel_accuracy"],
            )
            if chief and preview_batch is not None:
                preview = _preview(inference, *preview_batch)
        extra = [
            ("loss", row["loss"]),
            ("lr", row["learning_rate"]),
            ("img/s", row["images_per_s"]),
        ]
        if validate:
            extra += [
                ("val_loss", row["val_loss"]),
                ("val_miou", row["val_mean_iou"]),
                ("val_acc", row["val_pixel_accuracy"]),
            ]
        progbar.update(steps, extra, finalize=True)
        logs.write(row, preview)
        history.append(row)

        improved = (
            validate and math.isfinite(row["val_mean_iou"]) and row["val_mean_iou"] > best_miou
        )
        if improved:
            best_miou = row["val_mean_iou"]
        stem = weights_name(epoch + 1, row.get("val_pixel_accuracy"), row.get("val_loss"))
        stem = _unique_stem(output_dir, stem) if chief else stem
        new_best = stem if improved else best_stem
        meta = {
            "model": config.model,
            "epoch": epoch + 1,
            "best_mean_iou": best_miou,
            "best": new_best,
            "optimizer_step": int(optimizer.iterations.numpy()),
            "steps_per_epoch": steps,
            "global_batch": global_batch,
            "policy": policy,
            "settings": settings,
            "history_row": row,
        }
        _save(output_dir / stem, chief, inference, checkpoint, meta)
        if chief:
            write_json(
                output_dir / INDEX_FILE,
                {
                    "model": config.model,
                    "last": stem + WEIGHTS_SUFFIX,
                    "best": (new_best + WEIGHTS_SUFFIX) if new_best else None,
                    "epoch": epoch + 1,
                    "best_mean_iou": best_miou,
                },
            )
            for old in {last_stem, best_stem} - {stem, new_best, None}:
                _remove_checkpoint(output_dir / old)
            if validate:
                write_json(output_dir / "val_scores.json", _scores_json(scores, epoch + 1))
        last_stem, best_stem = stem, new_best

    if start_epoch >= config.epochs:
        say(
            f"the run in {output_dir} has already trained {start_epoch} of {config.epochs} "
            "epochs; raise -e/--epochs to train further"
        )
    return TrainResult(
        history,
        start_epoch,
        str(output_dir / (last_stem + WEIGHTS_SUFFIX)) if last_stem else None,
        str(output_dir / (best_stem + WEIGHTS_SUFFIX)) if best_stem else None,
        scores,
        policy,
        num_replicas,
        global_batch,
    )


def _save(
    stem: Path,
    chief: bool,
    inference: keras.Model,
    checkpoint: tf.train.Checkpoint,
    meta: dict[str, Any],
) -> None:
    """Write `stem`.state/ (every worker, so collectives match; only the chief keeps it) and
    `stem`.weights.h5 (chief), each atomically; the state goes first."""
    state = Path(str(stem) + STATE_SUFFIX)
    with _atomic_dir(state, write=chief) as tmp:
        checkpoint.write(str(tmp / "ckpt"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    if chief:
        with atomic_path(Path(str(stem) + WEIGHTS_SUFFIX), suffix=WEIGHTS_SUFFIX) as tmp:
            inference.save_weights(str(tmp))


def _remove_checkpoint(stem: Path) -> None:
    """Delete a superseded weights file and its state folder."""
    Path(str(stem) + WEIGHTS_SUFFIX).unlink(missing_ok=True)
    shutil.rmtree(Path(str(stem) + STATE_SUFFIX), ignore_errors=True)


def _json_default(value: Any) -> Any:
    """JSON encoder for NumPy scalars and arrays."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def _scores_json(scores: dict[str, Any], epoch: int) -> dict[str, Any]:
    """Validation scores with per-class IoU by class name (NaN as null)."""
    from utils.labels import CLASS_NAMES

    def clean(x: float) -> float | None:
        return float(x) if math.isfinite(float(x)) else None

    names = CLASS_NAMES
    return {
        "epoch": epoch,
        "mean_iou": clean(scores["mean_iou"]),
        "pixel_accuracy": clean(scores["pixel_accuracy"]),
        "loss": clean(scores["loss"]),
        "iou": {names[i]: clean(v) for i, v in enumerate(scores["iou"])},
        "confusion_matrix": np.asarray(scores["confusion_matrix"]).tolist(),
    }


# ----------------------------------------------------------------------------------------------
# Throughput
# ----------------------------------------------------------------------------------------------


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
    from models import get_info

    if batch_size < 1 or steps < 1 or warmup_steps < 0:
        raise ValueError(
            f"batch size and steps must be >= 1 and warm-up >= 0, got "
            f"{batch_size!r}, {steps!r}, {warmup_steps!r}"
        )
    info = get_info(model_name)
    previous = keras.config.dtype_policy()
    strategy = tf.distribute.get_strategy()
    try:
        policy = apply_precision(mixed_precision)
        config = TrainConfig(
            model=model_name,
            input_size=tuple(size),
            batch_size=batch_size,
            epochs=1,
            model_options=model_options,
        )
        model, _, aux_weights = build_training_model(config, strategy)
        optimizer = make_optimizer("sgd", 0.01, 0.9, loss_scale=policy == "mixed_float16")
        trainer = Trainer(
            model,
            optimizer,
            strategy,
            19,
            aux_weights,
            weight_decay=info.recipe.weight_decay,
            xla=xla,
        )
        rng = np.random.default_rng(0)
        images = tf.constant(rng.integers(0, 256, (batch_size, *size, 3), dtype=np.uint8))
        labels = tf.constant(rng.integers(0, 19, (batch_size, *size), dtype=np.uint8))
        gpus = tf.config.list_physical_devices("GPU")
        for _ in range(warmup_steps):
            trainer.train_step((images, labels))
        if gpus:
            tf.config.experimental.reset_memory_stats("GPU:0")
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            trainer.train_step((images, labels))  # float() inside waits for the step to finish
            times.append(time.perf_counter() - started)
        if gpus:
            peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
            kind, device = "gpu_peak", gpus[0].name
        else:
            peak, kind, device = _peak_rss_mb(), "process_peak_rss", "CPU"
        mean = float(np.mean(times))
        return {
            "size": list(size),
            "batch_size": batch_size,
            "steps": steps,
            "warmup_steps": warmup_steps,
            "xla": xla,
            "mixed_precision": mixed_precision,
            "policy": policy,
            "device": device,
            "images_per_s": batch_size / mean,
            "step_time_s": mean,
            "step_time_median_s": float(np.median(times)),
            "peak_memory_mb": peak,
            "memory_kind": kind,
            "aux_heads": len(aux_weights),
            "model_options": dict(model_options),
        }
    finally:
        keras.config.set_dtype_policy(previous)
