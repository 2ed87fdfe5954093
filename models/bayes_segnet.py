"""Bayesian SegNet (Kendall et al., arXiv 1511.02680) on the SegNet encoder-decoder (1511.00561).

Encoder: VGG16 with batch normalisation, 13 conv-BN-ReLU in five stages (64, 128, 256, 512,
512), each followed by a 2x2 max pool that keeps where in its window each maximum was (the
first on a tie, as tf.nn.max_pool_with_argmax). Decoder: the mirror image; each stage first
unpools with the positions of the matching encoder pool (every value goes back exactly to its
maximum's position, zeros elsewhere) and then applies conv-BN-ReLU layers
(512-512-512, 512-512-256, 256-256-128, 128-64, 64); a 3x3 convolution gives the class logits,
as in SegNet's Caffe model.

"Central" Bayesian variant (Bayesian SegNet's best): dropout 0.5 after encoder pools 3, 4 and
5 and at the end of decoder stages 5, 4 and 3, i.e. before the unpooling into the next stage
(the layers encdrop3-5 / decdrop5-3 of the authors' Caffe model). Plain inference
(`model(x, training=False)`, `model.predict`, ONNX export) has dropout off; `mc_predict` keeps
dropout on with batch norm in inference mode and averages T softmax samples.

The pooling and unpooling compare each window with its maximum and select (no MaxPool indices
output, no index arithmetic), so the model that Keras runs is the one exported to ONNX and
TensorRT parses it. Its outputs jump where two inputs of a pooling window are nearly tied and
another runtime rounds them the other way, so its ONNX parity is judged on argmax agreement
(deploy/checks.py).

Trainable parameters for 19 classes: 29,446,035 (reference 29.5M). No auxiliary heads.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
from keras import layers

from models.info import DEFAULT, BatchNorm, ModelInfo, Published, Recipe
from models.layers import (
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
    check_input_size,
    logits_output,
    normalize_input,
)
from models.loading import load_weights_option
from utils.errors import BadInput

#: Output widths of the encoder's conv layers, stage by stage (VGG16).
ENCODER: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
#: Output widths of the decoder's conv layers, from the deepest stage (5) to stage 1.
DECODER: tuple[tuple[int, ...], ...] = (
    (512, 512, 512),
    (512, 512, 256),
    (256, 256, 128),
    (128, 64),
    (64,),
)
#: Stages whose pool output (encoder) and final output (decoder) go through dropout.
DROPOUT_STAGES: tuple[int, ...] = (3, 4, 5)
DROPOUT = 0.5
SIZE_MULTIPLE = 32
UNCERTAINTIES = ("variance", "entropy")


def _conv_bn_relu(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """3x3 conv ('same', no bias, He-normal init as in the paper) -> BatchNorm -> ReLU."""
    x = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=name
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_bayes_segnet(
    input_shape: tuple[int, int, int],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | os.PathLike | None = None,
) -> keras.Model:
    """Build Bayesian SegNet (central dropout variant).

    Args:
        input_shape: (H, W, 3); H and W must be multiples of 32.
        num_classes: number of output classes (19 Cityscapes train ids).
        aux: accepted for the common builder signature; there are no auxiliary heads, so the
            model returns its logits alone either way.
        weights: None (random initialisation) or the path of a Keras `.weights.h5` file.

    Returns:
        A keras.Model from float32 RGB in [0, 255] to float32 logits (N, H, W, num_classes).
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("bayes_segnet", height, width, SIZE_MULTIPLE)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
    inputs = keras.Input(shape=(height, width, 3), name="image")
    x = normalize_input(inputs, "imagenet")
    positions = []  # per encoder stage: where in each 2x2 window the maximum was
    for stage, widths in enumerate(ENCODER, start=1):
        for i, filters in enumerate(widths, start=1):
            x = _conv_bn_relu(x, filters, f"enc{stage}_conv{i}")
        x, position = MaxPoolingWithArgmax2D(name=f"enc{stage}_pool")(x)
        positions.append(position)
        if stage in DROPOUT_STAGES:
            x = layers.Dropout(DROPOUT, name=f"enc{stage}_dropout")(x)
    for stage, widths in zip(range(len(DECODER), 0, -1), DECODER, strict=True):
        x = MaxUnpooling2D(name=f"dec{stage}_unpool")([x, positions[stage - 1]])
        for i, filters in enumerate(widths, start=1):
            x = _conv_bn_relu(x, filters, f"dec{stage}_conv{i}")
        if stage in DROPOUT_STAGES:
            x = layers.Dropout(DROPOUT, name=f"dec{stage}_dropout")(x)
    x = layers.Conv2D(num_classes, 3, padding="same", name="classifier")(x)
    model = keras.Model(inputs, logits_output(x), name="bayes_segnet")
    return load_weights_option(model, weights, "bayes_segnet")


class _MonteCarloDropout(layers.Dropout):
    """Dropout that stays on whatever the `training` flag says (used only inside mc_predict)."""

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return super().call(inputs, training=True)


def _monte_carlo_model(model: keras.Model, seed: int | None) -> keras.Model:
    """A model sharing `model`'s layers and weights with every Dropout replaced by an always-on one."""
    rng = np.random.default_rng(seed)
    replaced = []

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, layers.Dropout):
            replaced.append(layer.name)
            return _MonteCarloDropout(
                layer.rate,
                noise_shape=layer.noise_shape,
                seed=int(rng.integers(0, 2**31 - 1)),
                name=f"{layer.name}_mc",
            )
        return layer

    mc_model = keras.models.clone_model(model, clone_function=clone)
    if not replaced:
        raise BadInput(
            f"model {model.name!r} has no Dropout layers, so Monte Carlo dropout sampling "
            "would return the same prediction every time; use a Bayesian model (bayes_segnet)"
        )
    return mc_model


def mc_predict(
    model: keras.Model,
    images: Any,
    samples: int = 50,
    seed: int | None = None,
    uncertainty: str = "variance",
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo dropout inference: mean softmax of T stochastic passes and its uncertainty.

    Batch norm runs in inference mode and dropout stays on. The same `seed` gives the same
    samples (hence the same result); another seed gives other dropout masks.

    Args:
        model: a model with Dropout layers, e.g. from `build_bayes_segnet`.
        images: float32-convertible RGB in [0, 255], shape (N, H, W, 3) (numpy or tensor).
        samples: number T of stochastic forward passes (at least 1; the paper uses about 50).
        seed: integer seed for the dropout masks, or None for fresh randomness.
        uncertainty: "variance" (the variance over the T samples of each class probability,
            averaged over the classes) or "entropy" (entropy of the mean softmax, in nats).
        batch_size: images per forward pass; None passes all N at once.

    Returns:
        `(mean_softmax, uncertainty)`: float32 numpy arrays of shape (N, H, W, C) and (N, H, W).
        The prediction is `mean_softmax.argmax(-1)`.
    """
    # TensorFlow only on the paths that need it
    import tensorflow as tf

    if isinstance(samples, bool) or not isinstance(samples, int | np.integer) or samples < 1:
        raise BadInput(f"samples must be a positive integer, got {samples!r}")
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, got {uncertainty!r}")
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    mc_model = _monte_carlo_model(model, seed)

    @tf.function
    def probabilities(batch: tf.Tensor) -> tf.Tensor:
        outputs = mc_model(batch, training=False)
        if isinstance(outputs, list | tuple):
            outputs = outputs[0]
        return tf.nn.softmax(tf.cast(outputs, tf.float32), axis=-1)

    step = batch_size or len(images)
    means, spreads = [], []
    for start in range(0, len(images), step):
        batch = tf.constant(images[start : start + step])
        total = squares = None
        for _ in range(int(samples)):
            probs = probabilities(batch)
            total = probs if total is None else total + probs
            if uncertainty == "variance":
                squares = probs * probs if squares is None else squares + probs * probs
        mean = total / float(samples)
        if uncertainty == "variance":
            variance = tf.maximum(squares / float(samples) - mean * mean, 0.0)
            spread = tf.reduce_mean(variance, axis=-1)
        else:
            spread = -tf.reduce_sum(mean * tf.math.log(tf.maximum(mean, 1e-12)), axis=-1)
        means.append(mean.numpy().astype("float32"))
        spreads.append(spread.numpy().astype("float32"))
    return np.concatenate(means), np.concatenate(spreads)


INFO = ModelInfo(
    name="bayes_segnet",
    builder=build_bayes_segnet,
    size_multiple=SIZE_MULTIPLE,
    normalization="imagenet",
    # Caffe SegNet's BN layer keeps no moving average (var_eps 1e-9); its
    # compute_bn_statistics.py estimates the inference statistics from training batches after
    # training, which is what precise batch norm does. Between those estimates the moving
    # average needs a momentum; PyTorch's default.
    batch_norm=BatchNorm(
        0.9,
        1e-9,
        "caffe-segnet BN layer (var_eps 1e-9, no moving average; inference statistics from "
        "Scripts/compute_bn_statistics.py); momentum: PyTorch's default 0.1 = Keras 0.9",
    ),
    published={
        DEFAULT: Published(
            29.5e6,
            1360.0,
            "Kendall et al. 2015, Bayesian SegNet (arXiv 1511.02680) and SegNet "
            "(arXiv 1511.00561): 29.5M params; about 1.36 T multiply-adds at 1024x2048",
        )
    },
    # SegNet (TPAMI 2017) trains with SGD momentum 0.9; the authors' Bayesian SegNet Caffe
    # solver uses weight decay 5e-4. lr 0.01 with a poly schedule as for the other SGD models;
    # 512x1024 crops of batch 4 fit a 16 GB GPU.
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        crop_size=(512, 1024),
        batch_size=4,
        epochs=200,
        schedule="polynomial",
        power=0.9,
    ),
    options=(),
)
