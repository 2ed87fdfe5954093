"""Aligned Xception-65 (DeepLabV3+, arXiv 1802.02611) at output stride 8 or 16.

Entry flow: two 3x3 convs (32 s2, 64), then three modules of three separable convs
(128, 256, 728), each downsampling with a strided separable conv instead of max pooling and a
1x1 strided conv shortcut. Middle flow: 16 identity-shortcut modules of [728, 728, 728].
Exit flow: [728, 1024, 1024] with a conv shortcut, then [1536, 1536, 2048] without one.
Every separable conv is depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN ("extra batch
normalization and ReLU after each 3x3 depthwise convolution"); modules with a shortcut are
pre-activated (ReLU on the module input, as TF DeepLab's `xception_65`), the last exit module
ends each separable conv with ReLU. Strides past the output stride become dilation:
OS 16: exit flow rates (1, 2); OS 8: entry block 3 stride 1, middle flow rate 2, exit (2, 4).
Input: images already scaled to [-1, 1] ("tf" normalisation).
"""

from __future__ import annotations

import keras
from keras import layers

from models.layers import conv_bn_relu

#: Layer whose output is the 256-channel low-level feature at 1/4 (entry block 2, second
#: separable conv, before the strided third one), TF DeepLab's decoder tap.
LOW_LEVEL_LAYER = "entry_block2_sepconv2_pointwise_bn"
#: Layer whose output is the final 2048-channel feature.
FEATURE_LAYER = "exit_block2_sepconv3_pointwise_relu"
OUTPUT_STRIDES = (8, 16)
MIDDLE_UNITS = 16


def _sep_conv(
    x: keras.KerasTensor, filters: int, strides: int, dilation: int, name: str, pre_activation: bool
) -> keras.KerasTensor:
    """[ReLU] -> 3x3 depthwise -> BN -> ReLU -> 1x1 pointwise -> BN [-> ReLU]."""
    if pre_activation:
        x = layers.ReLU(name=f"{name}_preact")(x)
    if strides == 2:
        # TF's explicit symmetric padding for a stride-2 3x3 ("aligned" feature grids).
        x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = layers.DepthwiseConv2D(
        3,
        strides=strides,
        dilation_rate=dilation,
        use_bias=False,
        padding="valid" if strides == 2 else "same",
        name=f"{name}_depthwise",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)
    x = layers.BatchNormalization(name=f"{name}_pointwise_bn")(x)
    if not pre_activation:
        x = layers.ReLU(name=f"{name}_pointwise_relu")(x)
    return x


def _xception_module(
    x: keras.KerasTensor,
    depths: tuple[int, int, int],
    strides: int,
    dilation: int,
    shortcut: str,
    name: str,
) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """Three separable convs (the last one strided) plus a 'conv', 'identity' or 'none' shortcut.

    Returns the module output and the three separable convs' outputs.
    """
    inputs = x
    pre_activation = shortcut != "none"
    taps = []
    for i, depth in enumerate(depths, start=1):
        x = _sep_conv(
            x, depth, strides if i == 3 else 1, dilation, f"{name}_sepconv{i}", pre_activation
        )
        taps.append(x)
    if shortcut == "conv":
        skip = layers.Conv2D(
            depths[-1], 1, strides=strides, use_bias=False, name=f"{name}_shortcut"
        )(inputs)
        skip = layers.BatchNormalization(name=f"{name}_shortcut_bn")(skip)
        x = layers.Add(name=f"{name}_add")([skip, x])
    elif shortcut == "identity":
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x, taps


def xception65_features(
    x: keras.KerasTensor, output_stride: int = 16
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Build aligned Xception-65 on `x` (scaled to [-1, 1]).

    Args:
        x: Input tensor (N, H, W, 3); H and W multiples of the output stride.
        output_stride: 16 (exit flow dilations 1, 2) or 8 (middle 2, exit 2, 4).

    Returns:
        (low_level, features): 256 channels at 1/4 and 2048 channels at 1/output_stride.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"Xception-65 output_stride must be one of {OUTPUT_STRIDES}; got {output_stride!r}"
        )
    entry3_stride = 2 if output_stride == 16 else 1
    middle_rate = 1 if output_stride == 16 else 2
    exit_rates = (1, 2) if output_stride == 16 else (2, 4)

    x = layers.ZeroPadding2D(1, name="entry_conv1_pad")(x)
    x = layers.Conv2D(32, 3, strides=2, use_bias=False, name="entry_conv1")(x)
    x = layers.BatchNormalization(name="entry_conv1_bn")(x)
    x = layers.ReLU(name="entry_conv1_relu")(x)
    x = conv_bn_relu(x, 64, 3, name="entry_conv2")
    x, _ = _xception_module(x, (128, 128, 128), 2, 1, "conv", "entry_block1")
    x, taps = _xception_module(x, (256, 256, 256), 2, 1, "conv", "entry_block2")
    low_level = taps[1]
    x, _ = _xception_module(x, (728, 728, 728), entry3_stride, 1, "conv", "entry_block3")
    for unit in range(1, MIDDLE_UNITS + 1):
        x, _ = _xception_module(
            x, (728, 728, 728), 1, middle_rate, "identity", f"middle_unit{unit}"
        )
    x, _ = _xception_module(x, (728, 1024, 1024), 1, exit_rates[0], "conv", "exit_block1")
    x, _ = _xception_module(x, (1536, 1536, 2048), 1, exit_rates[1], "none", "exit_block2")
    return low_level, x
