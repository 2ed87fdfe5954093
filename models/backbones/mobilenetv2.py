"""MobileNetV2 feature extractor that runs at output stride 8 or 16 (dilated, as in DeepLab).

Layer names are those of `keras.applications.MobileNetV2` (`Conv1`, `block_13_depthwise`, ...),
so its ImageNet weights copy over by name. Where the classification network would stride past
the requested output stride, the depthwise convolution keeps stride 1 and the later blocks use
a dilation rate that doubles at each skipped stride (DeepLab's "atrous" MobileNetV2).
Input: images already scaled to [-1, 1] ("tf" normalisation). The final 1x1 conv to 1280
channels of the classifier network is not built: DeepLab uses the 320-channel block_16 output.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from models.loading import weights_unavailable
from utils.errors import BadInput

#: Layer whose output is the 1/4-resolution, 24-channel low-level feature.
LOW_LEVEL_LAYER = "block_2_add"
#: Layer whose output is the final 320-channel feature at the output stride.
FEATURE_LAYER = "block_16_project_BN"
#: Output strides this backbone can run at.
OUTPUT_STRIDES = (8, 16, 32)
#: (expansion, output channels, stride) of blocks 0..16, as in the paper's Table 2.
BLOCKS = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 2),
    (6, 32, 1),
    (6, 32, 1),
    (6, 64, 2),
    (6, 64, 1),
    (6, 64, 1),
    (6, 64, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 160, 2),
    (6, 160, 1),
    (6, 160, 1),
    (6, 320, 1),
)
#: File keras.applications downloads for MobileNetV2 (alpha 1.0, no top) ImageNet weights.
IMAGENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


def _batch_norm(name: str) -> layers.BatchNormalization:
    """Batch norm with keras.applications' MobileNetV2 settings."""
    return layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name=name)


def _inverted_residual(
    x: keras.KerasTensor, expansion: int, filters: int, strides: int, dilation: int, block_id: int
) -> keras.KerasTensor:
    """Inverted residual block named as keras.applications names it, with a dilation rate."""
    in_channels = int(x.shape[-1])
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    y = x
    if block_id:
        y = layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{prefix}expand")(y)
        y = _batch_norm(f"{prefix}expand_BN")(y)
        y = layers.ReLU(6.0, name=f"{prefix}expand_relu")(y)
    if strides == 2:
        # keras.applications' padding for a stride-2 3x3 on even sizes: one row/column at the end.
        y = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{prefix}pad")(y)
    y = layers.DepthwiseConv2D(
        3,
        strides=strides,
        dilation_rate=dilation,
        use_bias=False,
        padding="valid" if strides == 2 else "same",
        name=f"{prefix}depthwise",
    )(y)
    y = _batch_norm(f"{prefix}depthwise_BN")(y)
    y = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}project")(y)
    y = _batch_norm(f"{prefix}project_BN")(y)
    if in_channels == filters and strides == 1:
        y = layers.Add(name=f"{prefix}add")([x, y])
    return y


def mobilenetv2_features(
    x: keras.KerasTensor, output_stride: int = 16
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Build the dilated MobileNetV2 on `x` (scaled to [-1, 1], H and W multiples of the stride).

    Args:
        x: Input tensor (N, H, W, 3).
        output_stride: 8, 16 or 32: resolution of the final feature relative to the input.

    Returns:
        (low_level, features): the block_2 output at 1/4 (24 channels) and the block_16 output
        at 1/output_stride (320 channels).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"MobileNetV2 output_stride must be one of {OUTPUT_STRIDES}; got {output_stride!r}"
        )
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="Conv1")(x)
    x = _batch_norm("bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    current_stride, rate = 2, 1
    low_level = None
    for block_id, (expansion, filters, strides) in enumerate(BLOCKS):
        dilation = rate
        if strides == 2 and current_stride == output_stride:
            # Keep the resolution: this block runs at the current rate, the later ones at twice it.
            strides, rate = 1, rate * 2
        else:
            current_stride *= strides
        x = _inverted_residual(x, expansion, filters, strides, dilation, block_id)
        if block_id == 2:
            low_level = x
    return low_level, x


def imagenet_weights_path() -> str:
    """Where keras.applications caches the MobileNetV2 no-top ImageNet weights file."""
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(home, "models", IMAGENET_FILE)


def load_mobilenetv2_weights(model: keras.Model, weights: str) -> int:
    """Copy keras.applications MobileNetV2 weights into the same-named layers of `model`.

    Args:
        model: A model built with `mobilenetv2_features` (possibly inside a larger network).
        weights: "imagenet" (downloaded by Keras, or read from its cache) or a path to a weights
            file of `keras.applications.MobileNetV2(include_top=False)` (`.h5` or `.weights.h5`).

    Returns:
        The number of layers whose weights were copied.
    """
    if weights != "imagenet" and not os.path.isfile(str(weights)):
        raise BadInput(
            f"MobileNetV2 weights file not found: {weights!r}; pass 'imagenet' or the "
            f"path of a keras.applications MobileNetV2 (include_top=False) weights file"
        )
    try:
        reference = keras.applications.MobileNetV2(
            input_shape=(224, 224, 3), include_top=False, weights=weights
        )
    except Exception as error:
        if not weights_unavailable(error):  # a bug, not a missing or unreadable file
            raise
        if weights != "imagenet":
            raise BadInput(
                f"cannot load {weights!r} as keras.applications MobileNetV2 "
                f"(alpha 1.0, include_top=False) weights: {error}"
            ) from error
        path = imagenet_weights_path()
        raise BadInput(
            f"cannot load the MobileNetV2 ImageNet weights: {path} is missing and the download "
            f"from {IMAGENET_URL}{IMAGENET_FILE} failed ({error}). Offline, copy that file to "
            f"{path} (Keras looks there; set KERAS_HOME to change the folder), or pass the "
            f"file's path as weights"
        ) from error
    copied = 0
    for layer in reference.layers:
        if not layer.weights:
            continue
        try:
            target = model.get_layer(layer.name)
        except ValueError:
            continue  # Conv_1 (1280 channels) is not part of the feature extractor.
        target.set_weights(layer.get_weights())
        copied += 1
    if copied == 0:
        raise ValueError(f"model {model.name!r} has no MobileNetV2 layers to load weights into")
    return copied
