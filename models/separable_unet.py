"""Separable U-Net: the seed's light U-Net rebuilt with depthwise-separable convolutions.

Encoder: a 3x3 stem convolution, then six stages of two (SeparableConv2D -> BN -> ReLU) with
widths 16-32-64-128-256-512, a 2x2 max pool between stages, so the bottleneck sits at 1/32 of
the input (the seed's version stopped at 1/8 and had too small a receptive field for thin
classes such as poles and traffic lights). Decoder: five stages of bilinear x2 upsampling,
concatenation with the encoder skip of the same resolution, and two separable conv-BN-ReLU;
a 1x1 convolution gives the class logits at full resolution.

Trainable parameters for 19 classes: 911,379 (the seed's variant had 0.35M; this one is
deeper). It has no auxiliary heads: with aux=True it returns its logits alone, because a Keras
functional model unpacks a one-element output list.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from models.info import DEFAULT, BatchNorm, ModelInfo, Published, Recipe
from models.layers import check_input_size, conv_bn_relu, logits_output, normalize_input
from models.loading import load_weights_option

#: Channel width of each resolution level, from full resolution down to the 1/32 bottleneck.
WIDTHS: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
SIZE_MULTIPLE = 2 ** (len(WIDTHS) - 1)


def _sep_conv_bn_relu(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """SeparableConv2D 3x3 ('same', no bias) -> BatchNorm -> ReLU."""
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _double_sep(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """Two separable conv-BN-ReLU at one resolution, named `{name}_sep1` and `{name}_sep2`."""
    x = _sep_conv_bn_relu(x, filters, f"{name}_sep1")
    return _sep_conv_bn_relu(x, filters, f"{name}_sep2")


def build_separable_unet(
    input_shape: tuple[int, int, int],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | os.PathLike | None = None,
) -> keras.Model:
    """Build the separable U-Net.

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
    check_input_size("separable_unet", height, width, SIZE_MULTIPLE)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
    inputs = keras.Input(shape=(height, width, 3), name="image")
    x = normalize_input(inputs, "unit")
    x = conv_bn_relu(x, WIDTHS[0], name="stem_conv")
    x = _sep_conv_bn_relu(x, WIDTHS[0], "enc1_sep2")
    skips = [x]
    for level, filters in enumerate(WIDTHS[1:], start=2):
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        x = _double_sep(x, filters, f"enc{level}")
        skips.append(x)
    skips.pop()  # the bottleneck has no skip of its own
    for level in range(len(WIDTHS) - 1, 0, -1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level - 1]])
        x = _double_sep(x, WIDTHS[level - 1], f"dec{level}")
    x = layers.Conv2D(num_classes, 1, name="classifier")(x)
    logits = logits_output(x)
    model = keras.Model(inputs, logits, name="separable_unet")
    return load_weights_option(model, weights, "separable_unet")


INFO = ModelInfo(
    name="separable_unet",
    builder=build_separable_unet,
    size_multiple=SIZE_MULTIPLE,
    normalization="unit",
    # No published figure for this rebuilt design (911,379 trainable parameters measured);
    # the seed's shallower variant had 0.35M.
    # The seed's own network: no reference implementation, so PyTorch's BatchNorm2d defaults.
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "no reference implementation (the seed's network); PyTorch BatchNorm2d defaults "
        "(momentum 0.1 = Keras 0.9, eps 1e-5)",
    ),
    published={
        DEFAULT: Published(
            None,
            None,
            "seed project (SkyWa7ch3r/ImageSegmentation) README: 0.35M params, "
            "23.3 val mIoU at 512x1024, for its shallower variant; this design is deeper (1/32)",
        )
    },
    # The seed trained its light models with Adam; 512x1024 crops as in its reported result.
    recipe=Recipe(
        optimizer="adam",
        learning_rate=1e-3,
        momentum=0.9,
        weight_decay=1e-4,
        crop_size=(512, 1024),
        batch_size=8,
        epochs=200,
        schedule="polynomial",
        power=0.9,
    ),
    options=(),
)
