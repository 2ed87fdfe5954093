"""The run's logs: log.csv, TensorBoard scalars and a preview image, and val_scores.json.

Written by the chief only (other workers get inert writers), each file atomically or through
TensorFlow's own event writer: `log.csv` (one row per epoch), `logs/train` and `logs/val`
(TensorBoard, written with TensorFlow alone: the tensorboard package is optional) and
`val_scores.json` (per-class IoU of the last validation).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from datasets.cityscapes import load_pair
from datasets.pipeline import build_dataset
from utils.errors import BadInput
from utils.io import write_json, write_text
from utils.labels import CLASS_NAMES
from utils.visualize import colorize

__all__ = ["TrainLogs", "first_batch", "preview", "scores_json"]


class TrainLogs:
    """CSV log, TensorBoard writers and the preview image; real on the chief, inert elsewhere."""

    FIELDS = (
        "epoch",
        "loss",
        "main_loss",
        "aux_loss",
        "learning_rate",
        "epoch_time_s",
        "images_per_s",
        "precise_bn_images",
        "precise_bn_s",
        "val_loss",
        "val_mean_iou",
        "val_pixel_accuracy",
    )

    def __init__(self, output_dir: Path, chief: bool, start_epoch: int) -> None:
        self.chief = chief
        self.scores_path = output_dir / "val_scores.json"
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

    def write_scores(self, scores: dict[str, Any], epoch: int) -> None:
        """Write val_scores.json: the scores of the validation after `epoch` (1-based)."""
        if self.chief:
            write_json(self.scores_path, scores_json(scores, epoch))


def _summary_scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar written with TensorFlow alone (the tensorboard package is optional)."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=metadata)


def _summary_image(tag: str, image: np.ndarray) -> None:
    """A TensorBoard image (PNG) written with TensorFlow alone, as the images plugin reads it."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
        summary_description="validation image | ground truth | prediction",
    )
    png = tf.io.encode_png(image)
    tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])
    tf.summary.write(tag, tensor, metadata=metadata)


def first_batch(
    samples: Sequence[Any], size: tuple[int, int], skip_bad: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """The first readable validation image and its labels at `size`, as arrays (the preview's
    input); with `skip_bad` a bad file is passed over (None when every file is bad)."""
    if skip_bad:
        for index in range(len(samples)):
            try:
                load_pair(samples[index])
            except BadInput:  # a bad file (BadFileError)
                continue
            samples = samples[index:]
            break
        else:
            return None
    batch = next(iter(build_dataset(samples[:1], 1, size, training=False)))
    images, labels = (np.asarray(t) for t in batch)
    return images, labels


def preview(inference: keras.Model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """image | coloured ground truth | coloured prediction, side by side (RGB uint8)."""
    logits = inference(tf.cast(images[:1], tf.float32), training=False)
    pred = np.argmax(np.asarray(logits)[0], axis=-1).astype(np.uint8)
    return np.concatenate([images[0], colorize(labels[0]), colorize(pred)], axis=1)


def scores_json(scores: dict[str, Any], epoch: int) -> dict[str, Any]:
    """Validation scores with per-class IoU by class name (NaN as null)."""

    def clean(x: float) -> float | None:
        return float(x) if math.isfinite(float(x)) else None

    names = scores.get("class_names", CLASS_NAMES)
    return {
        "epoch": epoch,
        "mean_iou": clean(scores["mean_iou"]),
        "pixel_accuracy": clean(scores["pixel_accuracy"]),
        "loss": clean(scores["loss"]),
        "iou": {names[i]: clean(v) for i, v in enumerate(scores["iou"])},
        "confusion_matrix": np.asarray(scores["confusion_matrix"]).tolist(),
    }
