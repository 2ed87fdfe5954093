"""DeepLabV3+ (Chen et al., arXiv 1802.02611): dilated backbone, ASPP and a 1/4 decoder.

Backbones: MobileNetV2 (keras.applications-compatible, ImageNet weights loadable) or aligned
Xception-65, both really running at output stride 16 or 8 (dilation replaces the last strides).
ASPP: image pooling, 1x1, three dilated separable 3x3 (rates 6/12/18 at OS 16, 12/24/36 at
OS 8), 256 channels each -> 1x1 to 256 -> dropout 0.1. Decoder: ASPP output upsampled to the
1/4 low-level feature, which a 1x1 conv reduces to 48 channels; concatenated; two separable
3x3 convs (256); 1x1 classifier; bilinear resize to the input. Inputs are scaled to [-1, 1].
"""

from __future__ import annotations

import keras
from keras import layers

from models.backbones.mobilenetv2 import load_mobilenetv2_weights, mobilenetv2_features
from models.backbones.xception import xception65_features
from models.info import BatchNorm, ModelInfo, Published, Recipe
from models.layers import (
    aspp,
    check_input_size,
    conv_bn_relu,
    logits_output,
    normalize_input,
    resize_to,
    separable_conv_bn_relu,
)
from utils.errors import BadInput

BACKBONES = ("mobilenetv2", "xception")
OUTPUT_STRIDES = (8, 16)
#: ASPP dilation rates per output stride.
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def _decoder(
    x: keras.KerasTensor, low_level: keras.KerasTensor, num_classes: int
) -> keras.KerasTensor:
    """Upsample to 1/4, concat with the 48-channel low-level feature, two separable 3x3, classify."""
    size = (int(low_level.shape[1]), int(low_level.shape[2]))
    x = resize_to(x, size, name="decoder_upsample")
    skip = conv_bn_relu(low_level, 48, 1, name="decoder_skip_conv")
    x = layers.Concatenate(name="decoder_concat")([x, skip])
    x = separable_conv_bn_relu(x, 256, 3, name="decoder_sepconv1")
    x = separable_conv_bn_relu(x, 256, 3, name="decoder_sepconv2")
    return layers.Conv2D(num_classes, 1, name="decoder_classifier")(x)


def build_deeplabv3plus(
    input_shape: tuple[int, int, int],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
    backbone: str = "mobilenetv2",
    output_stride: int = 16,
) -> keras.Model:
    """Build DeepLabV3+ for float32 RGB input in [0, 255].

    Args:
        input_shape: (H, W, 3); H and W multiples of `output_stride`.
        num_classes: Number of output classes.
        aux: Accepted for a uniform interface; the paper trains without auxiliary heads, so
            INFO.aux_weights is empty and the model is the same with aux=True (a Keras
            functional model cannot return a one-element list: it unpacks it to the tensor).
        weights: Backbone weights. MobileNetV2: None, "imagenet" (Keras' cached or downloaded
            keras.applications file) or the path of a keras.applications MobileNetV2
            (include_top=False) weights file. Xception-65: None only (keras.applications has no
            aligned Xception-65 weights).
        backbone: "mobilenetv2" or "xception" (aligned Xception-65).
        output_stride: 16 or 8: input size over the backbone's final feature size.

    Returns:
        A keras.Model giving float32 logits (N, H, W, num_classes).
    """
    if backbone not in BACKBONES:
        raise BadInput(f"deeplabv3+ backbone must be one of {BACKBONES}; got {backbone!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise BadInput(
            f"deeplabv3+ output_stride must be one of {OUTPUT_STRIDES}; got {output_stride!r}"
        )
    if backbone == "xception" and weights is not None:
        raise BadInput(
            f"no pretrained weights exist in Keras for aligned Xception-65; pass "
            f"weights=None or use backbone='mobilenetv2'; got weights={weights!r}"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size(f"deeplabv3+ (output stride {output_stride})", height, width, output_stride)

    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)
    if backbone == "mobilenetv2":
        low_level, features = mobilenetv2_features(x, output_stride)
    else:
        low_level, features = xception65_features(x, output_stride)
    x = aspp(features, 256, ASPP_RATES[output_stride], dropout=0.1, name="aspp")
    x = _decoder(x, low_level, num_classes)
    logits = logits_output(resize_to(x, (height, width), name="upsample"))

    model = keras.Model(
        inputs, [logits] if aux else logits, name=f"deeplabv3plus_{backbone}_os{output_stride}"
    )
    if weights is not None:
        load_mobilenetv2_weights(model, weights)
    return model


INFO = ModelInfo(
    name="deeplabv3+",
    builder=build_deeplabv3plus,
    # At the default output stride 16; at output stride 8 multiples of 8 suffice.
    size_multiple=16,
    # Both backbones (keras.applications MobileNetV2, TF DeepLab Xception) expect [-1, 1].
    normalization="tf",
    # MobileNetV2: no published figure for DeepLabV3+ with the full ASPP and decoder (TF DeepLab's
    # 2.1M is MobileNetV2 with image pooling + 1x1 only and no decoder; the seed's 4.4M ran the
    # 1280-channel classifier conv at output stride 32).
    # TF DeepLab: decay 0.9997 everywhere; epsilon 1e-5 in ASPP and decoder (model.py), 1e-3 in
    # Xception (core/feature_extractor.py) and in keras.applications' MobileNetV2.
    batch_norm=BatchNorm(
        0.9997,
        1e-5,
        "TF DeepLab (research/deeplab): batch_norm decay 0.9997, epsilon 1e-5 in ASPP/decoder, "
        "1e-3 in the backbone",
        backbone_epsilon=1e-3,
    ),
    published={
        "mobilenetv2": Published(
            None,
            None,
            "no published figure with this decoder (TF DeepLab model zoo: MobileNetV2 "
            "OS 16 WITHOUT decoder, 2.1M parameters, 21.3 G multiply-adds)",
        ),
        "xception": Published(
            41.3e6,
            418.6,
            "arXiv 1802.02611; TF DeepLab model zoo (Xception-65: 41.3M parameters, "
            "418.6 G multiply-adds at output stride 16)",
        ),
    },
    variant_option="backbone",
    aux_weights=(),
    # TF DeepLab's Cityscapes recipe: SGD momentum 0.9, poly lr 0.01 (power 0.9), weight decay
    # 4e-5, 769x769 crops, batch 8 (the paper: 16 on 8 GPUs; 90k iterations).
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=4e-5,
        crop_size=(768, 768),
        batch_size=8,
        epochs=240,
        schedule="polynomial",
        power=0.9,
    ),
    options=("backbone", "output_stride"),
    backbone_prefixes=(
        "Conv1",
        "bn_Conv1",
        "expanded_conv",
        "block_",
        "entry_",
        "middle_",
        "exit_",
    ),
)
