"""Every model predicts in inference mode as it trains: the batch-norm consistency check.

For every model of the registry: a few optimizer steps on one fixed batch of small synthetic
images, then the loss of the inference-mode forward pass (moving statistics) must be within a
small margin of the training-mode loss (batch statistics) on the same batch. Dropout is set to 0
for the check, so the two passes differ only in batch norm.

With the model's batch-norm settings and precise batch norm (what train.py does before each
validation and checkpoint) the two agree; with Keras' default momentum 0.99 and no precise
batch norm, the moving statistics are still mostly their initial values after these steps and
the inference-mode loss is far off (the last test keeps that failure visible).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from datasets.cityscapes import find_samples
from datasets.pipeline import build_dataset
from models.options import MODEL_NAMES
from training.config import TrainConfig
from training.precise_bn import PreciseBatchNorm
from training.setup import build_setup

SIZE, STEPS = (64, 128), 8
#: Allowed |inference - training| loss difference: relative and absolute parts.
RELATIVE, ABSOLUTE = 0.05, 0.02
#: Models whose check takes more than a few seconds on two CPU cores.
HEAVY = {"unet", "bayes_segnet", "deeplabv3+", "fastfcn", "hrnet_ocr"}
#: Lighter variants with the same batch-norm settings (HRNet-W48 took 80-150 s here, W18 a
#: fraction of that: the check is of the batch-norm momentum and precise BN, not of the width).
LIGHT_OPTIONS = {"hrnet_ocr": {"backbone": "w18"}}


def fixed_batch(root) -> tuple[tf.Tensor, tf.Tensor]:
    """Two synthetic training images and their labels at SIZE (resized, no augmentation)."""
    samples = find_samples(root, "train")[:2]
    return next(iter(build_dataset(samples, 2, SIZE, training=False)))


def losses(name: str, root, fix: bool) -> tuple[float, float]:
    """(inference-mode loss, training-mode loss) after STEPS steps on the fixed batch."""
    config = TrainConfig(
        model=name,
        input_size=SIZE,
        batch_size=2,
        epochs=1,
        optimizer="adam",
        learning_rate=1e-3,
        bn_momentum=None if fix else 0.99,
        model_options=LIGHT_OPTIONS.get(name, {}),
    )
    strategy = tf.distribute.get_strategy()
    setup = build_setup(config, strategy, config.learning_rate)
    for layer in setup.model._flatten_layers():
        # dropout and stochastic depth (keras-hub's DropPath, in SegFormer's MiT) off: the two
        # passes then differ in batch norm only
        if isinstance(layer, keras.layers.Dropout) or type(layer).__name__ == "DropPath":
            layer.rate = 0.0
    images, labels = fixed_batch(root)
    for _ in range(STEPS):
        setup.trainer.train_step((images, labels))
    if fix:
        PreciseBatchNorm(setup.inference, strategy).update(iter([(images, labels)]), 1)

    def loss(training: bool) -> float:
        logits = setup.inference(tf.cast(images, tf.float32), training=training)
        labels32 = tf.cast(labels, tf.int32)
        valid = labels32 < 19
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(valid, labels32, 0), logits=tf.cast(logits, tf.float32)
        )
        return float(
            tf.reduce_sum(ce * tf.cast(valid, tf.float32))
            / tf.reduce_sum(tf.cast(valid, tf.float32))
        )

    inference = loss(False)  # first: the training-mode pass moves the moving statistics
    return inference, loss(True)


def consistent(inference: float, training: float) -> bool:
    return abs(inference - training) <= RELATIVE * training + ABSOLUTE


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in MODEL_NAMES],
)
def test_inference_mode_matches_training_mode(name, synthetic_root):
    keras.utils.set_random_seed(0)
    inference, training = losses(name, synthetic_root, fix=True)
    assert np.isfinite(training)
    assert consistent(inference, training), (name, inference, training)


@pytest.mark.parametrize("name", ["fastscnn", "separable_unet"])
def test_without_the_fix_inference_mode_is_far_off(name, synthetic_root):
    keras.utils.set_random_seed(0)
    inference, training = losses(name, synthetic_root, fix=False)
    assert not consistent(inference, training), (name, inference, training)
