"""BiSeNet V2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for
Real-time Semantic Segmentation", IJCV 2021, arXiv 2004.02147): a wide, shallow detail branch
and a narrow, deep semantic branch, fused by bilateral guided aggregation.

Facts from the paper (Table 1, Figs. 3-6) and the reference implementation that reproduces it
(CoinCheung/BiSeNet, lib/models/bisenetv2.py):

| block           | layers                                                           | out        |
|-----------------|------------------------------------------------------------------|------------|
| detail S1       | 3x3 conv s2 (64), 3x3 conv (64), each conv-BN-ReLU                | 64, 1/2    |
| detail S2       | 3x3 conv s2 (64), two 3x3 conv (64)                               | 64, 1/4    |
| detail S3       | 3x3 conv s2 (128), two 3x3 conv (128)                             | 128, 1/8   |
| stem (S1, S2)   | 3x3 conv s2 (16); [1x1 (8) -> 3x3 s2 (16)] and 3x3 max pool s2,   | 16, 1/4    |
|                 | concat, 3x3 conv (16)                                             |            |
| semantic S3     | GE s2 (32), GE (32)                                               | 32, 1/8    |
| semantic S4     | GE s2 (64), GE (64)                                               | 64, 1/16   |
| semantic S5     | GE s2 (128), three GE (128); context embedding (global average   | 128, 1/32  |
|                 | pool -> BN -> 1x1 conv-BN-ReLU, + input, 3x3 conv-BN-ReLU)        |            |
| BGA             | detail: 3x3 depthwise-BN-1x1 (keeps 1/8) and 3x3 conv s2-BN-      | 128, 1/8   |
|                 | 3x3 avg pool s2 (to 1/32); semantic: 3x3 conv-BN, nearest x4, and |            |
|                 | 3x3 depthwise-BN-1x1; detail_keep * sigmoid(semantic_up) +        |            |
|                 | nearest x4 (detail_down * sigmoid(semantic)), 3x3 conv-BN-ReLU    |            |
| segment head    | 3x3 conv-BN-ReLU (C_t = 640), dropout 0.1, 1x1 conv (with bias)   | K, 1/1     |
|                 | to classes, bilinear x8 to the input size, float32                |            |

The main segment head's width C_t (3x3 conv-BN-ReLU to C_t, 1x1 conv to classes) is the one
number the sources leave open: the authors' reference code marks it as an open question and
takes 1024, as mmsegmentation does; PaddleSeg takes 128. Everything else is fixed by Table 1 and counts 14.78 G multiply-adds at
512x1024 here, and each head channel adds 64 x 128 x (9 x 128 + 19) = 9.59 M, so the paper's
21.15 GFLOPs at 512x1024 (Table 8; multiply-adds, as 2 x 14.78 alone would exceed it) fix
C_t at 664: 640, five times the 128-wide BGA output, gives 20.92 G (-1.1%), where 1024 gives
24.60 G (+16%) and 128 gives 16.01 G (-24%). The paper's training-only booster heads (below)
are not counted at inference.

A gather-and-expansion (GE) layer is 3x3 conv-BN-ReLU, a 3x3 depthwise conv with expansion 6
(-BN-ReLU; stride 2: a depthwise s2 -BN then a depthwise -BN-ReLU on the expanded width),
a 1x1 projection-BN (gamma initialised to zero, as the reference), + shortcut (stride 2:
depthwise 3x3 s2-BN-1x1-BN), ReLU.

With aux=True the model also returns the four booster heads' logits (the paper's training
"booster" strategy) on the semantic branch at 1/4, 1/8, 1/16 and 1/32 (S2 stem, S3, S4, S5
before the context embedding), each 3x3 conv-BN-ReLU (128), dropout 0.1, nearest x2,
3x3 conv-BN-ReLU (up_factor^2 channels), 1x1 conv to classes, bilinear to the input size:
[main, aux2, aux3, aux4, aux5_4]. The reference's train loop sums the five losses with weight
1 each (tools/train_amp.py: loss = loss_pre + sum(loss_aux)); all five are OHEM cross-entropy
there (OhemCELoss(0.7), keep at least 1/16 of the valid pixels).

Exact equivalents of PyTorch constructs: AvgPool2d(3, 2, padding=1), which counts its zero
padding, is ZeroPadding2D(1) + a valid AveragePooling2D; MaxPool2d(3, 2, padding=1) pads with
-inf, and its input is a ReLU output (>= 0), so ZeroPadding2D(1) + a valid MaxPooling2D gives
the same maxima; nn.Upsample(scale_factor=4) is nearest-neighbour UpSampling2D(4).
"""

from __future__ import annotations

import keras
from keras import layers

from models.info import BatchNorm, ModelInfo, Published, Recipe
from models.layers import (
    check_input_size,
    conv_bn_relu,
    logits_output,
    normalize_input,
    pad_as_pytorch,
    resize_to,
)
from utils.errors import BadInput

#: Total downsampling: the semantic branch ends at 1/32.
SIZE_MULTIPLE = 32
#: Detail branch: per stage, the widths of its 3x3 convs (the first with stride 2).
DETAIL_STAGES = ((64, 64), (64, 64, 64), (128, 128, 128))
#: Semantic branch after the stem: per stage, the widths of its GE layers (the first s2).
SEMANTIC_STAGES = ((32, 32), (64, 64), (128, 128, 128, 128))
STEM_WIDTH = 16
GE_EXPANSION = 6
BGA_WIDTH = 128
#: The main segment head's C_t, from the paper's compute (module docstring).
HEAD_WIDTH = 640
AUX_HEAD_WIDTH = 128
HEAD_DROPOUT = 0.1
#: Booster heads on the stem and semantic stages 3, 4, 5: (name, upsampling factor).
AUX_HEADS = (("aux2", 4), ("aux3", 8), ("aux4", 16), ("aux5_4", 32))


def _detail_branch(x) -> keras.KerasTensor:
    """Detail branch: three stages of 3x3 conv-BN-ReLU, each starting with stride 2."""
    for stage, widths in enumerate(DETAIL_STAGES, start=1):
        for i, filters in enumerate(widths, start=1):
            strides = 2 if i == 1 else 1
            x = conv_bn_relu(x, filters, 3, strides=strides, name=f"detail_s{stage}_conv{i}")
    return x


def _stem(x) -> keras.KerasTensor:
    """Stem block: 3x3 conv s2, then a conv path and a max-pool path at 1/4, concat, 3x3 conv."""
    x = conv_bn_relu(x, STEM_WIDTH, 3, strides=2, name="stem_conv")
    left = conv_bn_relu(x, STEM_WIDTH // 2, 1, name="stem_left_conv1")
    left = conv_bn_relu(left, STEM_WIDTH, 3, strides=2, name="stem_left_conv2")
    # MaxPool2d(3, 2, padding=1) of a ReLU output: zero padding gives the same maxima.
    right = layers.ZeroPadding2D(1, name="stem_right_pad")(x)
    right = layers.MaxPooling2D(3, 2, padding="valid", name="stem_right_pool")(right)
    x = layers.Concatenate(name="stem_concat")([left, right])
    return conv_bn_relu(x, STEM_WIDTH, 3, name="stem_fuse")


def _depthwise_bn(x, strides: int, multiplier: int, name: str, relu: bool) -> keras.KerasTensor:
    """3x3 depthwise conv (depth multiplier `multiplier`) -> BN [-> ReLU]."""
    x, padding = pad_as_pytorch(x, 3, strides, 1, name)
    x = layers.DepthwiseConv2D(
        3, strides=strides, padding=padding, depth_multiplier=multiplier, use_bias=False, name=name
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _gather_expansion(x, filters: int, strides: int, name: str) -> keras.KerasTensor:
    """Gather-and-expansion layer (stride 1 or 2), expansion GE_EXPANSION, residual, ReLU."""
    in_filters = int(x.shape[-1])
    y = conv_bn_relu(x, in_filters, 3, name=f"{name}_conv1")
    if strides == 1:
        y = _depthwise_bn(y, 1, GE_EXPANSION, name=f"{name}_dwconv", relu=True)
        shortcut = x
    else:
        y = _depthwise_bn(y, strides, GE_EXPANSION, name=f"{name}_dwconv1", relu=False)
        y = _depthwise_bn(y, 1, 1, name=f"{name}_dwconv2", relu=True)
        shortcut = _depthwise_bn(x, strides, 1, name=f"{name}_shortcut_dwconv", relu=False)
        shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_shortcut_conv")(shortcut)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_conv_bn")(shortcut)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv2")(y)
    # The reference initialises this BN's scale to zero: the layer starts as its shortcut.
    y = layers.BatchNormalization(gamma_initializer="zeros", name=f"{name}_conv2_bn")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu")(y)


def _context_embedding(x, name: str = "ce") -> keras.KerasTensor:
    """Context embedding: global average pool -> BN -> 1x1 conv-BN-ReLU, + x, 3x3 conv-BN-ReLU."""
    filters = int(x.shape[-1])
    y = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)
    y = layers.BatchNormalization(name=f"{name}_gap_bn")(y)
    y = conv_bn_relu(y, filters, 1, name=f"{name}_conv_gap")
    y = layers.Add(name=f"{name}_add")([y, x])  # broadcast over H and W
    return conv_bn_relu(y, filters, 3, name=f"{name}_conv_last")


def _semantic_branch(x) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """Semantic branch: stem (1/4), GE stages to 1/8, 1/16, 1/32, context embedding; also the
    stem's and each stage's output (the booster heads' inputs)."""
    x = _stem(x)
    stages = [x]
    for stage, widths in enumerate(SEMANTIC_STAGES, start=3):
        for i, filters in enumerate(widths, start=1):
            x = _gather_expansion(x, filters, 2 if i == 1 else 1, name=f"s{stage}_ge{i}")
        stages.append(x)
    return _context_embedding(x), stages


def _dw_pointwise(x, filters: int, name: str) -> keras.KerasTensor:
    """3x3 depthwise conv -> BN -> 1x1 conv (no BN after it), as both BGA 'keep' paths."""
    x = _depthwise_bn(x, 1, 1, name=f"{name}_dwconv", relu=False)
    return layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)


def bilateral_guided_aggregation(detail, semantic, name: str = "bga") -> keras.KerasTensor:
    """BGA: each branch gates the other at its own resolution; the sum at 1/8, 3x3 conv-BN-ReLU."""
    filters = BGA_WIDTH
    factor = int(detail.shape[1]) // int(semantic.shape[1])
    detail_keep = _dw_pointwise(detail, filters, name=f"{name}_detail_keep")
    detail_down, padding = pad_as_pytorch(detail, 3, 2, 1, f"{name}_detail_down_conv")
    detail_down = layers.Conv2D(
        filters, 3, strides=2, padding=padding, use_bias=False, name=f"{name}_detail_down_conv"
    )(detail_down)
    detail_down = layers.BatchNormalization(name=f"{name}_detail_down_conv_bn")(detail_down)
    # AvgPool2d(3, 2, padding=1) counts its zero padding: pad, then a valid pooling.
    detail_down = layers.ZeroPadding2D(1, name=f"{name}_detail_down_pad")(detail_down)
    detail_down = layers.AveragePooling2D(3, 2, padding="valid", name=f"{name}_detail_down_pool")(
        detail_down
    )
    semantic_up = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, name=f"{name}_semantic_up_conv"
    )(semantic)
    semantic_up = layers.BatchNormalization(name=f"{name}_semantic_up_conv_bn")(semantic_up)
    semantic_up = layers.UpSampling2D(factor, name=f"{name}_semantic_upsample")(semantic_up)
    semantic_keep = _dw_pointwise(semantic, filters, name=f"{name}_semantic_keep")
    gate_up = layers.Activation("sigmoid", name=f"{name}_semantic_up_sigmoid")(semantic_up)
    gate = layers.Activation("sigmoid", name=f"{name}_semantic_keep_sigmoid")(semantic_keep)
    high = layers.Multiply(name=f"{name}_detail_gated")([detail_keep, gate_up])
    low = layers.Multiply(name=f"{name}_semantic_gated")([detail_down, gate])
    low = layers.UpSampling2D(factor, name=f"{name}_semantic_gated_upsample")(low)
    x = layers.Add(name=f"{name}_sum")([high, low])
    return conv_bn_relu(x, filters, 3, name=f"{name}_conv")


def _segment_head(
    x, mid_filters: int, num_classes: int, size, name: str, up_factor: int, booster: bool
) -> keras.KerasTensor:
    """3x3 conv-BN-ReLU, dropout, [booster: nearest x2, 3x3 conv-BN-ReLU], 1x1 conv, bilinear."""
    x = conv_bn_relu(x, mid_filters, 3, name=f"{name}_conv")
    x = layers.Dropout(HEAD_DROPOUT, name=f"{name}_dropout")(x)
    if booster:
        x = layers.UpSampling2D(2, name=f"{name}_upsample2")(x)
        x = conv_bn_relu(x, up_factor * up_factor, 3, name=f"{name}_conv2")
    x = layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)
    return logits_output(resize_to(x, size, name=f"{name}_upsample"), name=f"{name}_logits")


def build_bisenetv2(
    input_shape: tuple[int, ...],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
) -> keras.Model:
    """Build BiSeNet V2 for float32 RGB input in [0, 255].

    Args:
        input_shape: (H, W) or (H, W, 3); H and W multiples of 32.
        num_classes: number of output classes (19 for Cityscapes train ids).
        aux: also return the four booster heads' logits on the semantic branch (1/4, 1/8,
            1/16, 1/32), each at the input size (loss weights INFO.aux_weights, 1 each).
        weights: None (random initialisation) or the path of a Keras weights file saved from
            this model. The authors' ImageNet-pretrained backbone is a PyTorch checkpoint, so
            "imagenet" raises BadInput.

    Returns:
        A keras.Model from images to float32 logits (N, H, W, num_classes), or with aux=True
        the list [main, aux2, aux3, aux4, aux5_4] of such logits.
    """
    if weights == "imagenet":
        raise BadInput(
            "bisenetv2 has no Keras ImageNet weights (the authors' backbone is a PyTorch "
            "checkpoint); pass weights=None or the path of a Keras .weights.h5 file of this model"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("bisenetv2", height, width, SIZE_MULTIPLE)
    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)

    detail = _detail_branch(x)
    semantic, stages = _semantic_branch(x)
    fused = bilateral_guided_aggregation(detail, semantic)
    size = (height, width)
    logits = _segment_head(
        fused, HEAD_WIDTH, int(num_classes), size, name="head", up_factor=8, booster=False
    )
    outputs: keras.KerasTensor | list[keras.KerasTensor] = logits
    if aux:
        outputs = [logits]
        for (name, factor), feature in zip(AUX_HEADS, stages, strict=True):
            outputs.append(
                _segment_head(
                    feature, AUX_HEAD_WIDTH, int(num_classes), size, name, factor, booster=True
                )
            )
    model = keras.Model(inputs, outputs, name="bisenetv2")
    if weights is not None:
        model.load_weights(str(weights))
    return model


INFO = ModelInfo(
    name="bisenetv2",
    builder=build_bisenetv2,
    size_multiple=SIZE_MULTIPLE,
    # The reference normalises with Cityscapes' own mean/std (lib/data/cityscapes_cv2.py:
    # mean 0.3257/0.3690/0.3223, std 0.2112/0.2148/0.2115); models.layers offers ImageNet's,
    # the nearest of its normalisations, used here (random initialisation, so only the scale
    # of the inputs matters).
    normalization="imagenet",
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "CoinCheung/BiSeNet lib/models/bisenetv2.py: nn.BatchNorm2d defaults, momentum 0.1 "
        "(= Keras 0.9), eps 1e-5",
    ),
    published={
        "default": Published(
            None,
            84.6,
            "Yu et al., BiSeNet V2, IJCV 2021 (arXiv 2004.02147), Table 8: 21.15 GFLOPs at "
            "512x1024 (x4 for 1024x2048: 84.6), 73.4 val / 72.6 test mIoU, 156 fps (GTX 1080 Ti); "
            "no parameter count is published (paper or CoinCheung/BiSeNet README). The "
            "main segment head's width, which the paper does not give, is set from that "
            "compute: 640 (83.7 G here; the reference code's 1024 gives 98.4 G). "
            "CoinCheung/BiSeNet README (commit 12cd095): 74.12 val mIoU single scale, "
            "50 / 16 fps fp16 / fp32 on a T4 (TensorRT)",
        ),
    },
    # The four booster heads, loss weight 1 each (CoinCheung/BiSeNet tools/train_amp.py), each
    # with the main output's loss: OHEM under --loss ohem, as the reference trains all five.
    aux_weights=(1.0, 1.0, 1.0, 1.0),
    aux_losses=("main", "main", "main", "main"),
    # Paper Sec. 4.1: SGD momentum 0.9, weight decay 5e-4, lr 5e-2 with poly (power 0.9),
    # batch 16, 150k iterations (150000 * 16 / 2975 = 807 epochs); the images are scaled by
    # 0.75-2.0, cropped to 1024x2048 and resized to 512x1024 for training, and inference runs
    # at 512x1024 (CoinCheung/BiSeNet's first README), so the network's input, the crop here,
    # is 512x1024. CoinCheung/BiSeNet tools/train_amp.py: OhemCELoss(0.7), which keeps at
    # least 1/16 of the labelled pixels (lib/ohem_ce_loss.py), on the main and the booster
    # heads (configs/bisenetv2_city.py: 8 images per GPU, 2 GPUs): 1/16 of 16 x 512x1024 here.
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=5e-2,
        momentum=0.9,
        weight_decay=5e-4,
        crop_size=(512, 1024),
        batch_size=16,
        epochs=807,
        schedule="polynomial",
        power=0.9,
        loss="ohem",
        ohem_thresh=0.7,
        ohem_min_kept=16 * 512 * 1024 // 16,
        note=(
            "OHEM keeps at least 1/16 of a replica's pixels in the reference, here a fixed "
            "count (1/16 of 16 x 512x1024): scale --ohem-min-kept with -b and -t; the "
            "reference's 1000 warm-up iterations are --warmup-epochs 5.4 at batch 16"
        ),
    ),
)
