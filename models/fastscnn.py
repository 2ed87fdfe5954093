"""Fast-SCNN (Poudel et al., arXiv 1902.04502): a two-branch real-time segmentation network.

Layers follow the paper's Table 1: learning to downsample (1/8), a global feature extractor of
inverted-residual bottlenecks (1/32) ending in pyramid pooling, a feature fusion module with a
dilated depthwise convolution, and a classifier of two depthwise-separable convolutions.
About 1.14M trainable parameters for 19 classes (the paper states 1.11M).
"""

from __future__ import annotations

import keras
from keras import layers

from models.info import DEFAULT, BatchNorm, ModelInfo, Published, Recipe
from models.layers import (
    AdaptiveAveragePooling2D,
    check_input_size,
    conv_bn_relu,
    logits_output,
    normalize_input,
    pad_as_pytorch,
    resize_to,
)

#: Total downsampling of the network (learning to downsample 8, global feature extractor 4).
SIZE_MULTIPLE = 32
#: Pyramid pooling bins (PSPNet's), adapted to whatever the 1/32 feature size is.
PPM_BINS = (1, 2, 3, 6)
#: Global feature extractor: (output channels, repeats, first stride), expansion 6 throughout.
BOTTLENECKS = ((64, 3, 2), (96, 3, 2), (128, 3, 1))
EXPANSION = 6


def _ds_conv(x: keras.KerasTensor, filters: int, strides: int, name: str) -> keras.KerasTensor:
    """Depthwise-separable conv: 3x3 depthwise -> BN -> ReLU -> 1x1 conv -> BN -> ReLU."""
    x, padding = pad_as_pytorch(x, 3, strides, 1, f"{name}_dwconv")
    x = layers.DepthwiseConv2D(
        3, strides=strides, padding=padding, use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_dwconv_bn")(x)
    x = layers.ReLU(name=f"{name}_dwconv_relu")(x)
    return conv_bn_relu(x, filters, 1, name=f"{name}_pwconv")


def _bottleneck(x: keras.KerasTensor, filters: int, strides: int, name: str) -> keras.KerasTensor:
    """Inverted residual: 1x1 expand x6 -> 3x3 depthwise -> linear 1x1 project (+ identity)."""
    in_channels = int(x.shape[-1])
    y = conv_bn_relu(x, in_channels * EXPANSION, 1, name=f"{name}_expand")
    y, padding = pad_as_pytorch(y, 3, strides, 1, f"{name}_dwconv")
    y = layers.DepthwiseConv2D(
        3, strides=strides, padding=padding, use_bias=False, name=f"{name}_dwconv"
    )(y)
    y = layers.BatchNormalization(name=f"{name}_dwconv_bn")(y)
    y = layers.ReLU(name=f"{name}_dwconv_relu")(y)
    y = conv_bn_relu(y, filters, 1, name=f"{name}_project", relu=False)
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def _pyramid_pooling(x: keras.KerasTensor, filters: int, name: str = "ppm") -> keras.KerasTensor:
    """PSP module: adaptive average pool per bin -> 1x1 conv (C/4) -> upsample; concat; 1x1."""
    in_channels = int(x.shape[-1])
    size = (int(x.shape[1]), int(x.shape[2]))
    branches = [x]
    for bins in PPM_BINS:
        y = AdaptiveAveragePooling2D(bins, name=f"{name}_bin{bins}_pool")(x)
        y = conv_bn_relu(y, in_channels // len(PPM_BINS), 1, name=f"{name}_bin{bins}_conv")
        branches.append(resize_to(y, size, name=f"{name}_bin{bins}_upsample"))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    return conv_bn_relu(x, filters, 1, name=f"{name}_out")


def _feature_fusion(
    high: keras.KerasTensor, low: keras.KerasTensor, filters: int, name: str = "ffm"
) -> keras.KerasTensor:
    """Fusion: low-res x4 -> dilated (4) 3x3 depthwise -> BN/ReLU -> 1x1; high-res 1x1; add."""
    size = (int(high.shape[1]), int(high.shape[2]))
    low = resize_to(low, size, name=f"{name}_upsample")
    low = layers.DepthwiseConv2D(
        3, padding="same", dilation_rate=4, use_bias=False, name=f"{name}_dwconv"
    )(low)
    low = layers.BatchNormalization(name=f"{name}_dwconv_bn")(low)
    low = layers.ReLU(name=f"{name}_dwconv_relu")(low)
    low = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_low_conv")(low)
    high = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_high_conv")(high)
    x = layers.Add(name=f"{name}_add")([high, low])
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _aux_head(
    x: keras.KerasTensor, num_classes: int, size: tuple[int, int], name: str
) -> keras.KerasTensor:
    """Training-only head: 3x3 conv (32) -> BN/ReLU -> dropout 0.1 -> 1x1 to classes -> resize."""
    x = conv_bn_relu(x, 32, 3, name=f"{name}_conv")
    x = layers.Dropout(0.1, name=f"{name}_dropout")(x)
    x = layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)
    return logits_output(resize_to(x, size, name=f"{name}_upsample"), name=f"{name}_logits")


def build_fastscnn(
    input_shape: tuple[int, int, int],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
) -> keras.Model:
    """Build Fast-SCNN for float32 RGB input in [0, 255].

    Args:
        input_shape: (H, W, 3); H and W multiples of 32.
        num_classes: Number of output classes.
        aux: Also return the two auxiliary logits (after learning to downsample and after the
            global feature extractor), loss weights INFO.aux_weights = (0.4, 0.4).
        weights: None, or a path to a `.weights.h5` file saved from this architecture (the
            paper trains from scratch; there are no published Keras weights).

    Returns:
        A keras.Model giving float32 logits (N, H, W, num_classes), or a list
        [main, aux1, aux2] of those when aux=True.
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("fastscnn", height, width, SIZE_MULTIPLE)
    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)

    # Learning to downsample: 1/8, 64 channels.
    x = conv_bn_relu(x, 32, 3, strides=2, name="ltd_conv")
    x = _ds_conv(x, 48, 2, name="ltd_dsconv1")
    high = _ds_conv(x, 64, 2, name="ltd_dsconv2")

    # Global feature extractor: 1/32, 128 channels.
    x = high
    for stage, (filters, repeats, strides) in enumerate(BOTTLENECKS, start=1):
        for i in range(repeats):
            x = _bottleneck(
                x, filters, strides if i == 0 else 1, name=f"gfe_stage{stage}_block{i + 1}"
            )
    low = _pyramid_pooling(x, 128)

    x = _feature_fusion(high, low, 128)

    # Classifier.
    x = _ds_conv(x, 128, 1, name="cls_dsconv1")
    x = _ds_conv(x, 128, 1, name="cls_dsconv2")
    x = layers.Dropout(0.1, name="cls_dropout")(x)
    x = layers.Conv2D(num_classes, 1, name="cls_conv")(x)
    logits = logits_output(resize_to(x, (height, width), name="cls_upsample"))

    outputs: keras.KerasTensor | list[keras.KerasTensor] = logits
    if aux:
        outputs = [
            logits,
            _aux_head(high, num_classes, (height, width), name="aux1"),
            _aux_head(low, num_classes, (height, width), name="aux2"),
        ]
    model = keras.Model(inputs, outputs, name="fastscnn")
    if weights is not None:
        model.load_weights(weights)
    return model


INFO = ModelInfo(
    name="fastscnn",
    builder=build_fastscnn,
    size_multiple=SIZE_MULTIPLE,
    # The paper trains from scratch and does not state its normalisation; the authors'
    # reference implementations normalise with the ImageNet mean and std.
    normalization="imagenet",
    # mmsegmentation's Fast-SCNN (70.96 val): SyncBN with PyTorch momentum 0.01, eps 1e-5.
    batch_norm=BatchNorm(
        0.99,
        1e-5,
        "mmsegmentation configs/_base_/models/fast_scnn.py: SyncBN momentum 0.01 "
        "(= Keras 0.99), eps 1e-5",
    ),
    published={
        DEFAULT: Published(
            1.11e6, None, "Poudel et al., Fast-SCNN, arXiv 1902.04502, Table 1 and Sec. 4"
        )
    },
    aux_weights=(0.4, 0.4),
    # SGD momentum 0.9, poly lr from 0.045 (power 0.9), L2 4e-5 (the paper excludes depthwise
    # kernels), batch 12, 1000 epochs on Cityscapes fine at full resolution.
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=0.045,
        momentum=0.9,
        weight_decay=4e-5,
        crop_size=(1024, 2048),
        batch_size=12,
        epochs=1000,
        schedule="polynomial",
        power=0.9,
    ),
    options=(),
)
