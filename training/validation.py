"""The validation of a training run, scored as evaluate.py scores a checkpoint.

Every validation image is resized to the model's input size and its class scores are resized
back to the ground truth's full resolution before the argmax (utils.resize, the functions
inference.segmenter uses for predict.py and evaluate.py), and the confusion matrix is counted
at that resolution (evaluation.metrics). So the mIoU a run prints and writes for an epoch is the
class mIoU that `evaluate.py -m MODEL -w CHECKPOINT -t H,W` reports for that epoch's weights on
the same split (the official metric, which tests/test_validation.py checks).

The validation loss is the cross-entropy at the model's resolution (labels resized nearest), as
the training loss is. The chief validates alone, with the inference model in inference mode;
the other workers go on (nothing they save depends on the scores).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from datasets.cityscapes import load_pair
from evaluation.metrics import confusion_matrix, scores_from_confusion
from utils.errors import BadInput
from utils.labels import DEFAULT_CLASS_SET, get_class_set
from utils.resize import resize_image, resize_map, scores_to_train_ids

__all__ = ["Validator"]


class Validator:
    """Scores a model on validation samples at full resolution.

    Args:
        model: the inference model (logits at its input size).
        input_size: (H, W) the model runs at.
        num_classes: classes (label values >= this, e.g. 255, are ignored).
        batch: images per model call.
        skip_bad: skip (and report through `log`) an unreadable sample instead of failing.
        log: receives one line per skipped sample.
        training: run the model in training mode (batch statistics of each validation batch;
            this moves the moving statistics): for benchmark.py fit's comparison only.
        classes: the class set the label ids are mapped onto (utils.labels.CLASS_SETS; its
            classes are the model's outputs); the scores name them under "class_names".
    """

    def __init__(
        self,
        model: keras.Model,
        input_size: Sequence[int],
        num_classes: int = 19,
        batch: int = 1,
        skip_bad: bool = False,
        log: Callable[[str], None] | None = None,
        training: bool = False,
        classes: str = DEFAULT_CLASS_SET,
    ) -> None:
        self.class_set = get_class_set(classes)
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_classes = int(num_classes)
        self.batch = max(1, int(batch))
        self.skip_bad = skip_bad
        self.log = log or (lambda _line: None)
        self.training = training
        self._forward = tf.function(self._logits_and_loss, reduce_retracing=True)

    def _logits_and_loss(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """float32 logits, summed cross-entropy and labelled pixels (model resolution)."""
        logits = self.model(images, training=self.training)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        logits = tf.cast(logits, tf.float32)
        labels = tf.cast(labels, tf.int32)
        valid = (labels >= 0) & (labels < self.num_classes)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(valid, labels, 0), logits=logits
        )
        weight = tf.cast(valid, tf.float32)
        return logits, tf.reduce_sum(ce * weight), tf.reduce_sum(weight)

    def _pairs(self, samples: Sequence[Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(image, train ids) in order, decoded a few ahead; bad samples skipped or raised."""
        ahead = 2 * self.batch + 2
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending: deque[Future] = deque()
            queue = iter(samples)
            try:
                while True:
                    while len(pending) < ahead:
                        sample = next(queue, None)
                        if sample is None:
                            break
                        pending.append(pool.submit(self._load, sample))
                    if not pending:
                        return
                    try:
                        yield pending.popleft().result()
                    except BadInput as exc:  # a bad file (read errors become BadFileError)
                        if not self.skip_bad:
                            raise
                        self.log(f"skipped a bad validation sample: {exc}")
            finally:
                for future in pending:
                    future.cancel()

    def _load(self, sample: Any) -> tuple[np.ndarray, np.ndarray]:
        """(image, class ids) of a sample: train ids, or label ids through the class set."""
        if self.class_set.name == DEFAULT_CLASS_SET:
            return load_pair(sample)
        if sample.train_ids:
            raise BadInput(
                f"label {str(sample.label)!r} holds train ids; --classes {self.class_set.name} "
                "needs label-id files (*_labelIds.png)"
            )
        image, label = load_pair(sample, map_ids=False)
        return image, self.class_set.from_label_ids[label]

    def evaluate(self, samples: Sequence[Any]) -> dict[str, Any]:
        """Confusion matrix at full resolution, loss and scores (evaluation.metrics keys)."""
        cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        ce_sum = weight_sum = 0.0
        chunk: list[tuple[np.ndarray, np.ndarray]] = []

        def flush() -> None:
            nonlocal cm, ce_sum, weight_sum
            images = np.stack([resize_image(image, self.input_size) for image, _ in chunk])
            small = np.stack(
                [resize_map(label, self.input_size, nearest=True) for _, label in chunk]
            )
            logits, ce, weight = self._forward(images.astype(np.float32), small)
            logits = logits.numpy()
            ce_sum += float(ce)
            weight_sum += float(weight)
            for scores, (_, label) in zip(logits, chunk, strict=True):
                pred = scores_to_train_ids(scores, label.shape)
                cm += confusion_matrix(label, pred, self.num_classes)
            chunk.clear()

        for image, label in self._pairs(samples):
            chunk.append((image, label))
            if len(chunk) == self.batch:
                flush()
        if chunk:
            flush()
        scores = scores_from_confusion(cm)
        scores["loss"] = ce_sum / weight_sum if weight_sum > 0 else float("nan")
        scores["confusion_matrix"] = cm
        scores["class_names"] = list(self.class_set.names)
        return scores
