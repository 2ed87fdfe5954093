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
from models.layers import check_input_size, conv_bn_relu, logits_output, normalize_input, resize_to

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
#: DAPPM average poolings: (kernel, stride, zero padding), then a global pooling.
DAPPM_POOLS = ((5, 2, 2), (9, 4, 4), (17, 8, 8))
BOTTLENECK_EXPANSION = 2


def _basic_block(x, filters: int, strides: int, relu: bool, name: str) -> keras.KerasTensor:
    """Residual basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut, ReLU unless `relu` off."""
    shortcut = x
    y = conv_bn_relu(x, filters, 3, strides=strides, name=f"{name}_conv1")
    y = conv_bn_relu(y, filters, 3, name=f"{name}_conv2", relu=False)
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = conv_bn_relu(x, filters, 1, strides=strides, name=f"{name}_down", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu")(y) if relu else y


def _bottleneck(x, planes: int, strides: int, name: str) -> keras.KerasTensor:
    """Residual bottleneck (expansion 2, no final ReLU): 1x1, 3x3 (stride), 1x1, + shortcut."""
    filters = planes * BOTTLENECK_EXPANSION
    shortcut = x
    y = conv_bn_relu(x, planes, 1, name=f"{name}_conv1")
    y = conv_bn_relu(y, planes, 3, strides=strides, name=f"{name}_conv2")
    y = conv_bn_relu(y, filters, 1, name=f"{name}_conv3", relu=False)
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = conv_bn_relu(x, filters, 1, strides=strides, name=f"{name}_down", relu=False)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def _stage(x, filters: int, blocks: int, strides: int, name: str) -> keras.KerasTensor:
    """`blocks` basic blocks, the first with the stride; the last of several has no ReLU."""
    for i in range(blocks):
        last = i == blocks - 1 and i > 0
        x = _basic_block(
            x, filters, strides if i == 0 else 1, relu=not last, name=f"{name}_block{i + 1}"
        )
    return x


def _bn_relu_conv(x, filters: int, kernel_size: int, name: str) -> keras.KerasTensor:
    """Pre-activation unit: BN -> ReLU -> conv (no bias), layers `{name}_bn/_relu/` and `{name}`."""
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=name)(x)


def _dappm(x, filters: int, out_filters: int, name: str = "dappm") -> keras.KerasTensor:
    """Deep aggregation pyramid pooling: pooled scales added in turn, 3x3 conv'd, concat, 1x1."""
    size = (int(x.shape[1]), int(x.shape[2]))
    outputs = [_bn_relu_conv(x, filters, 1, name=f"{name}_scale0_conv")]
    for i in range(1, len(DAPPM_POOLS) + 2):
        if i <= len(DAPPM_POOLS):
            kernel, stride, pad = DAPPM_POOLS[i - 1]
            # PyTorch's AvgPool2d(k, s, p) counts the zero padding in each average.
            y = layers.ZeroPadding2D(pad, name=f"{name}_scale{i}_pad")(x)
            y = layers.AveragePooling2D(
                kernel, stride, padding="valid", name=f"{name}_scale{i}_pool"
            )(y)
        else:
            y = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_scale{i}_pool")(x)
        y = _bn_relu_conv(y, filters, 1, name=f"{name}_scale{i}_conv")
        y = resize_to(y, size, name=f"{name}_scale{i}_upsample")
        y = layers.Add(name=f"{name}_scale{i}_add")([y, outputs[-1]])
        outputs.append(_bn_relu_conv(y, filters, 3, name=f"{name}_process{i}"))
    y = layers.Concatenate(name=f"{name}_concat")(outputs)
    y = _bn_relu_conv(y, out_filters, 1, name=f"{name}_compression")
    shortcut = _bn_relu_conv(x, out_filters, 1, name=f"{name}_shortcut")
    return layers.Add(name=f"{name}_out")([y, shortcut])


def _seg_head(x, mid_filters: int, num_classes: int, size, name: str) -> keras.KerasTensor:
    """BN-ReLU-3x3 conv-BN-ReLU-1x1 conv (with bias), bilinear to `size`, float32 logits."""
    x = _bn_relu_conv(x, mid_filters, 3, name=f"{name}_conv")
    x = layers.BatchNormalization(name=f"{name}_classifier_bn")(x)
    x = layers.ReLU(name=f"{name}_classifier_relu")(x)
    x = layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)
    return logits_output(resize_to(x, size, name=f"{name}_upsample"), name=f"{name}_logits")


def _resolve_variant(variant: str | None) -> str:
    """The variant key ("23-slim", "23"); ValueError naming the valid ones otherwise."""
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
            "imagenet" raises ValueError.
        variant: "23-slim" (default) or "23".

    Returns:
        A keras.Model from images to float32 logits (N, H, W, num_classes), or with aux=True
        the list [main, aux] of such logits.
    """
    key = _resolve_variant(variant)
    planes, spp_planes, head_planes = VARIANTS[key]
    high = planes * 2
    if weights == "imagenet":
        raise ValueError(
            "ddrnet has no Keras ImageNet weights (the authors' are PyTorch checkpoints); "
            "pass weights=None or the path of a Keras .weights.h5 file of this model"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("ddrnet", height, width, SIZE_MULTIPLE)
    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)

    x = conv_bn_relu(x, planes, 3, strides=2, name="stem_conv1", use_bias=True)
    x = conv_bn_relu(x, planes, 3, strides=2, name="stem_conv2", use_bias=True)
    x = _stage(x, planes, BLOCKS[0], 1, name="layer1")
    x = _stage(layers.ReLU(name="layer1_out_relu")(x), planes * 2, BLOCKS[1], 2, name="layer2")
    shared = layers.ReLU(name="layer2_out_relu")(x)
    size8 = (int(shared.shape[1]), int(shared.shape[2]))

    # Stage 3 and the first bilateral fusion.
    low3 = _stage(shared, planes * 4, BLOCKS[2], 2, name="low_layer3")
    h = _stage(shared, high, 2, 1, name="high_layer3")
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
    low4 = _stage(layers.ReLU(name="fusion3_low_relu")(low), planes * 8, BLOCKS[3], 2, "low_layer4")
    h = _stage(layers.ReLU(name="fusion3_high_relu")(h), high, 2, 1, name="high_layer4")
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
    h = _bottleneck(layers.ReLU(name="fusion4_high_relu")(h), high, 1, name="high_layer5")
    low = _bottleneck(layers.ReLU(name="fusion4_low_relu")(low), planes * 8, 2, "low_layer5")
    low = resize_to(_dappm(low, spp_planes, planes * 4), size8, name="dappm_upsample")
    x = layers.Add(name="head_input")([low, h])
    logits = _seg_head(x, head_planes, int(num_classes), (height, width), name="head")
    outputs: keras.KerasTensor | list[keras.KerasTensor] = logits
    if aux:
        outputs = [
            logits,
            _seg_head(aux_input, head_planes, int(num_classes), (height, width), "aux_head"),
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
