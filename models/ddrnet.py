"""DDRNet (Hong et al., "Deep Dual-resolution Networks for Real-time and Accurate Semantic
Segmentation of Road Scenes", arXiv 2101.06085): two deep branches with bilateral fusion.

Facts from the authors' code (ydhongHIT/DDRNet, segmentation/DDRNet_23_slim.py and
DDRNet_23.py); C is the base width, 32 for DDRNet-23-slim and 64 for DDRNet-23, the high
resolution branch is 2C wide:

| block            | layers                                                          | out        |
|------------------|-----------------------------------------------------------------|------------|
| stem             | 3x3 conv s2 (C, with bias) + BN + ReLU, twice                   | C, 1/4     |
| layer1, layer2   | 2 basic blocks (C), 2 basic blocks s2 (2C)                      | 2C, 1/8    |
| low_layer3       | low-resolution branch: 2 basic blocks s2 (4C)                   | 4C, 1/16   |
| high_layer3      | high-resolution branch: 2 basic blocks (2C)                     | 2C, 1/8    |
| fusion 3         | low += down3 (3x3 conv s2 + BN of the high branch);             |            |
|                  | high += bilinear up of compression3 (1x1 conv + BN of the low)  |            |
| low/high_layer4  | 2 basic blocks s2 (8C, 1/32) / 2 basic blocks (2C, 1/8)         |            |
| fusion 4         | low += down4 (two 3x3 conv s2, 4C then 8C); high += up of       |            |
|                  | compression4                                                    |            |
| low/high_layer5  | 1 bottleneck s2 (16C, 1/64) / 1 bottleneck (4C, 1/8)            |            |
| dappm            | deep aggregation PPM on the low branch: pooling 5/2, 9/4, 17/8  |            |
|                  | (zero padding counted, as PyTorch's AvgPool2d) and global, each |            |
|                  | added to the previous scale and 3x3 conv'd (128 wide), 1x1 to 4C| 4C, 1/64   |
| head             | (up(dappm) + high) -> BN-ReLU-3x3 conv (64 slim; 128)-BN-ReLU-  |            |
|                  | 1x1 conv to classes, bilinear x8 to the input size, float32     | K, 1/1     |

With aux=True the model also returns the auxiliary logits of the same head on the high
branch after fusion 3 (cross-entropy, loss weight 0.4 as the paper; main weight 1), upsampled
to the input size: [main, aux].
"""

from __future__ import annotations

import keras
from keras import layers

from models.info import BatchNorm, ModelInfo, Published, Recipe, variant_key
from models.layers import (
    bottleneck,
    check_input_size,
    conv_bn_relu,
    dappm,
    normalize_input,
    preactivation_head,
    residual_stage,
    resize_to,
)
from utils.errors import BadInput

#: Total downsampling: the low-resolution branch ends at 1/64 (DAPPM runs there).
SIZE_MULTIPLE = 64
#: variant -> (base width C, DAPPM branch width, head width), from the authors' builders
#: (DualResNet_imagenet in segmentation/DDRNet_23_slim.py and DDRNet_23.py).
VARIANTS: dict[str, tuple[int, int, int]] = {
    "23-slim": (32, 128, 64),
    "23": (64, 128, 128),
}
#: Basic blocks per stage (DDRNet-23: [2, 2, 2, 2]).
BLOCKS = (2, 2, 2, 2)


def _resolve_variant(variant: str | None) -> str:
    """The variant key ("23-slim", "23"); BadInput naming the valid ones otherwise."""
    return variant_key("ddrnet", variant, VARIANTS, INFO.default_variant, ("ddrnet-", "ddrnet_"))


def build_ddrnet(
    input_shape: tuple[int, ...],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
    variant: str | None = None,
) -> keras.Model:
    """Build DDRNet-23(-slim) for float32 RGB input in [0, 255].

    Args:
        input_shape: (H, W) or (H, W, 3); H and W multiples of 64.
        num_classes: number of output classes (19 for Cityscapes train ids).
        aux: also return the auxiliary logits of the high-resolution branch after the first
            bilateral fusion (cross-entropy, loss weight INFO.aux_weights = (0.4,)).
        weights: None (random initialisation) or the path of a Keras weights file saved from
            this model and variant. The authors' ImageNet weights are PyTorch checkpoints, so
            "imagenet" raises BadInput.
        variant: "23-slim" (default) or "23".

    Returns:
        A keras.Model from images to float32 logits (N, H, W, num_classes), or with aux=True
        the list [main, aux] of such logits.
    """
    key = _resolve_variant(variant)
    planes, spp_planes, head_planes = VARIANTS[key]
    high = planes * 2
    if weights == "imagenet":
        raise BadInput(
            "ddrnet has no Keras ImageNet weights (the authors' are PyTorch checkpoints); "
            "pass weights=None or the path of a Keras .weights.h5 file of this model"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("ddrnet", height, width, SIZE_MULTIPLE)
    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)

    x = conv_bn_relu(x, planes, 3, strides=2, name="stem_conv1", use_bias=True)
    x = conv_bn_relu(x, planes, 3, strides=2, name="stem_conv2", use_bias=True)
    x = residual_stage(x, "basic", planes, BLOCKS[0], 1, name="layer1")
    x = residual_stage(
        layers.ReLU(name="layer1_out_relu")(x), "basic", planes * 2, BLOCKS[1], 2, name="layer2"
    )
    shared = layers.ReLU(name="layer2_out_relu")(x)
    size8 = (int(shared.shape[1]), int(shared.shape[2]))

    # Stage 3 and the first bilateral fusion.
    low3 = residual_stage(shared, "basic", planes * 4, BLOCKS[2], 2, name="low_layer3")
    h = residual_stage(shared, "basic", high, 2, 1, name="high_layer3")
    down = conv_bn_relu(
        layers.ReLU(name="high_layer3_out_relu")(h), planes * 4, 3, 2, name="down3", relu=False
    )
    low = layers.Add(name="fusion3_low")([low3, down])
    up = conv_bn_relu(
        layers.ReLU(name="low_layer3_out_relu")(low3), high, 1, name="compression3", relu=False
    )
    h = layers.Add(name="fusion3_high")([h, resize_to(up, size8, name="compression3_upsample")])
    aux_input = h

    # Stage 4 and the second bilateral fusion.
    low4 = residual_stage(
        layers.ReLU(name="fusion3_low_relu")(low), "basic", planes * 8, BLOCKS[3], 2, "low_layer4"
    )
    h = residual_stage(
        layers.ReLU(name="fusion3_high_relu")(h), "basic", high, 2, 1, name="high_layer4"
    )
    down = conv_bn_relu(
        layers.ReLU(name="high_layer4_out_relu")(h), planes * 4, 3, 2, name="down4_1"
    )
    down = conv_bn_relu(down, planes * 8, 3, 2, name="down4_2", relu=False)
    low = layers.Add(name="fusion4_low")([low4, down])
    up = conv_bn_relu(
        layers.ReLU(name="low_layer4_out_relu")(low4), high, 1, name="compression4", relu=False
    )
    h = layers.Add(name="fusion4_high")([h, resize_to(up, size8, name="compression4_upsample")])

    # Stage 5: bottlenecks, DAPPM on the low branch at 1/64, sum at 1/8.
    h = bottleneck(layers.ReLU(name="fusion4_high_relu")(h), high, 1, False, "high_layer5")
    low = bottleneck(layers.ReLU(name="fusion4_low_relu")(low), planes * 8, 2, False, "low_layer5")
    low = resize_to(dappm(low, spp_planes, planes * 4, name="dappm"), size8, name="dappm_upsample")
    x = layers.Add(name="head_input")([low, h])
    logits = preactivation_head(x, head_planes, int(num_classes), (height, width), name="head")
    outputs: keras.KerasTensor | list[keras.KerasTensor] = logits
    if aux:
        outputs = [
            logits,
            preactivation_head(
                aux_input, head_planes, int(num_classes), (height, width), "aux_head"
            ),
        ]
    model = keras.Model(inputs, outputs, name=f"ddrnet_{key.replace('-', '_')}")
    if weights is not None:
        model.load_weights(str(weights))
    return model


_PAPER = "Hong et al., DDRNet, arXiv 2101.06085, Cityscapes comparison table"
INFO = ModelInfo(
    name="ddrnet",
    builder=build_ddrnet,
    size_multiple=SIZE_MULTIPLE,
    # Trained with the HRNet-Semantic-Segmentation code base: ImageNet mean and std.
    normalization="imagenet",
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "ydhongHIT/DDRNet segmentation/DDRNet_23_slim.py and DDRNet_23.py: bn_mom = 0.1 "
        "(= Keras 0.9), (Sync)BatchNorm2d default eps 1e-5",
    ),
    published={
        "23-slim": Published(
            5.7e6,
            36.3,
            f"{_PAPER}: DDRNet-23-slim 5.7M params, 36.3 GFLOPs at 1024x2048, "
            "77.8 val / 77.4 test mIoU, 101.6 fps (RTX 2080 Ti); ydhongHIT/DDRNet README",
        ),
        "23": Published(
            20.1e6,
            143.1,
            f"{_PAPER}: DDRNet-23 20.1M params, 143.1 GFLOPs at 1024x2048, "
            "79.5 val / 79.4 test mIoU, 37.1 fps (RTX 2080 Ti)",
        ),
    },
    variant_option="variant",
    aux_weights=(0.4,),
    # Paper, Sec. "Implementation details": SGD momentum 0.9, lr 0.01 (poly, power 0.9),
    # weight decay 5e-4, 1024x1024 crops (random scale 0.5-2.0, flip), batch 12, 484 epochs
    # (about 120k iterations), OHEM cross-entropy on the main output (threshold 0.9, 131072
    # kept pixels, the HRNet-Semantic-Segmentation code DDRNet trains with), auxiliary
    # loss weight 0.4 (cross-entropy).
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        crop_size=(1024, 1024),
        batch_size=12,
        epochs=484,
        schedule="polynomial",
        power=0.9,
        loss="ohem",
    ),
    options=("variant",),
)
