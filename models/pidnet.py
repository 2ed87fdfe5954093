"""PIDNet (Xu, Xiong and Bhattacharyya, arXiv 2206.02066): a three-branch real-time network.

The branches play the parts of a PID controller: P (proportional) keeps details at 1/8,
I (integral) aggregates context down to 1/64, D (derivative) parses boundaries at 1/8.
Facts from the authors' code (XuJiacong/PIDNet, models/pidnet.py and models/model_utils.py);
C is the base width, (m, n, C) = (2, 3, 32) for S, (2, 3, 64) for M and (3, 4, 64) for L:

| block           | layers                                                          | out        |
|-----------------|-----------------------------------------------------------------|------------|
| stem            | 3x3 conv s2 (C, with bias) + BN + ReLU, twice                   | C, 1/4     |
| layer1, layer2  | m basic blocks (C), m basic blocks s2 (2C)                      | 2C, 1/8    |
| i_layer3/4/5    | I: n basic blocks s2 (4C), n s2 (8C), 2 bottlenecks s2 (16C)    | 16C, 1/64  |
| p_layer3/4/5    | P: m basic blocks (2C), m (2C), 1 bottleneck (4C)               | 4C, 1/8    |
| pag3, pag4      | Pag: pixel attention sigmoid(<f_x(P), up(f_y(I'))>) mixes P with |            |
|                 | the upsampled I feature I' (a 1x1 conv-BN compression of I, 2C)  | 2C, 1/8    |
| d_layer3/4/5    | D: 1 basic block (C; 2C for L), 1 bottleneck (2C; a basic block |            |
|                 | for L), 1 bottleneck (4C); after layers 3 and 4 it adds the     |            |
|                 | upsampled 3x3 conv-BN "difference" of I (d_diff3, d_diff4)       | 4C, 1/8    |
| ppm             | PAPPM (S, M) or DAPPM (L) on I: pooling 5/2, 9/4, 17/8 (zero    |            |
|                 | padded, padding counted as PyTorch's AvgPool2d does) and global | 4C, 1/64   |
| dfm             | Light-Bag (S, M) or Bag (L): sigmoid(D) weighs P against I      | 4C, 1/8    |
| head            | BN-ReLU-3x3 conv (128; 256 for L)-BN-ReLU-1x1 conv to classes,  |            |
|                 | bilinear upsampling x8 to the input size, float32               | K, 1/1     |

PAPPM's grouped 3x3 conv (4 groups) is built as four 3x3 convs, one per pooling branch, each
after its own BN + ReLU: the same function and parameters as BN + ReLU + a grouped conv over
their concatenation, without Keras' grouped convolution (XLA-compiled on TensorFlow).

With aux=True the model returns the three outputs the paper trains (all bilinearly upsampled
from 1/8 to the input size, float32), [main, p_aux, boundary]:

- main: the logits above (loss weight 1: cross-entropy, OHEM in the paper);
- p_aux: logits (num_classes channels) of a head on the P branch after pag3 (loss weight
  0.4: cross-entropy, the paper's lambda_0);
- boundary: ONE channel, boundary logits of a head (C mid channels) on the D branch after
  layer 4. Its loss is the paper's boundary loss, a class-balanced binary cross-entropy
  against the label map's boundaries (weight 20, lambda_1), NOT a cross-entropy over classes;
  the paper adds a boundary-awareness cross-entropy on `main` restricted to pixels where
  sigmoid(boundary) > 0.8 (weight 1, lambda_3).

INFO.aux_weights = (0.4, 20.0) are those weights, in output order after the main;
INFO.aux_losses = ("ce", "boundary") their losses and INFO.boundary_awareness the BAS loss,
which training.trainer computes as the authors' utils/criterion.py and utils/utils.py do.
"""

from __future__ import annotations

import keras
from keras import layers

from models.info import BatchNorm, ModelInfo, Published, Recipe, variant_key
from models.layers import (
    basic_block,
    bn_relu_conv,
    check_input_size,
    conv_bn_relu,
    dappm,
    normalize_input,
    pooled_branches,
    preactivation_head,
    residual_stage,
    resize_to,
)
from utils.errors import BadInput

#: Total downsampling: the I branch ends at 1/64 (its pyramid pooling runs there).
SIZE_MULTIPLE = 64
#: variant -> (m, n, base width C, pyramid-pooling branch width, head width), from
#: get_seg_model in XuJiacong/PIDNet models/pidnet.py.
VARIANTS: dict[str, tuple[int, int, int, int, int]] = {
    "s": (2, 3, 32, 96, 128),
    "m": (2, 3, 64, 96, 128),
    "l": (3, 4, 64, 112, 256),
}


@keras.saving.register_keras_serializable(package="cityscapes_bench")
class PixelSimilarity(layers.Layer):
    """sigmoid(sum over channels of a * b): one attention value per pixel (PIDNet's Pag)."""

    def call(self, inputs):
        a, b = inputs
        return keras.ops.sigmoid(keras.ops.sum(a * b, axis=-1, keepdims=True))

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], 1)


def _pappm(x, filters: int, out_filters: int, name: str = "ppm") -> keras.KerasTensor:
    """Parallel aggregation PPM: pooled branches + scale0, one grouped 3x3 conv, 1x1 compression."""
    scale0 = bn_relu_conv(x, filters, 1, name=f"{name}_scale0_conv")
    processed = []
    for i, branch in enumerate(pooled_branches(x, filters, name), start=1):
        y = layers.Add(name=f"{name}_scale{i}_add")([branch, scale0])
        # Group i of the reference's 4-group 3x3 conv over the concatenated branches.
        processed.append(bn_relu_conv(y, filters, 3, name=f"{name}_process_group{i}"))
    y = layers.Concatenate(name=f"{name}_concat")([scale0, *processed])
    y = bn_relu_conv(y, out_filters, 1, name=f"{name}_compression")
    shortcut = bn_relu_conv(x, out_filters, 1, name=f"{name}_shortcut")
    return layers.Add(name=f"{name}_out")([y, shortcut])


def _pag(p, i, mid_filters: int, name: str) -> keras.KerasTensor:
    """Pixel-attention-guided fusion: s = sigmoid(<f_x(P), up(f_y(I))>); (1 - s) P + s up(I)."""
    size = (int(p.shape[1]), int(p.shape[2]))
    query = conv_bn_relu(i, mid_filters, 1, name=f"{name}_f_y", relu=False)
    query = resize_to(query, size, name=f"{name}_f_y_upsample")
    key = conv_bn_relu(p, mid_filters, 1, name=f"{name}_f_x", relu=False)
    attention = PixelSimilarity(name=f"{name}_similarity")([key, query])
    keep = layers.Rescaling(-1.0, offset=1.0, name=f"{name}_one_minus")(attention)
    i = resize_to(i, size, name=f"{name}_i_upsample")
    p = layers.Multiply(name=f"{name}_p_weighted")([keep, p])
    i = layers.Multiply(name=f"{name}_i_weighted")([attention, i])
    return layers.Add(name=f"{name}_out")([p, i])


def _bag(p, i, d, filters: int, light: bool, name: str = "dfm") -> keras.KerasTensor:
    """Boundary-attention-guided fusion, e = sigmoid(D).

    Bag: BN-ReLU-3x3 conv of e P + (1 - e) I. Light-Bag: 1x1 conv-BN of (1 - e) I + P plus
    1x1 conv-BN of I + e P.
    """
    edge = layers.Activation("sigmoid", name=f"{name}_edge")(d)
    not_edge = layers.Rescaling(-1.0, offset=1.0, name=f"{name}_not_edge")(edge)
    if light:
        p_in = layers.Add(name=f"{name}_p_in")(
            [layers.Multiply(name=f"{name}_i_weighted")([not_edge, i]), p]
        )
        i_in = layers.Add(name=f"{name}_i_in")(
            [i, layers.Multiply(name=f"{name}_p_weighted")([edge, p])]
        )
        p_out = conv_bn_relu(p_in, filters, 1, name=f"{name}_conv_p", relu=False)
        i_out = conv_bn_relu(i_in, filters, 1, name=f"{name}_conv_i", relu=False)
        return layers.Add(name=f"{name}_out")([p_out, i_out])
    mixed = layers.Add(name=f"{name}_mix")(
        [
            layers.Multiply(name=f"{name}_p_weighted")([edge, p]),
            layers.Multiply(name=f"{name}_i_weighted")([not_edge, i]),
        ]
    )
    return bn_relu_conv(mixed, filters, 3, name=f"{name}_conv")


def _resolve_variant(variant: str | None) -> str:
    """The variant key ("s", "m", "l"); BadInput naming the valid ones otherwise."""
    return variant_key("pidnet", variant, VARIANTS, INFO.default_variant, ("pidnet-", "pidnet_"))


def build_pidnet(
    input_shape: tuple[int, ...],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
    variant: str | None = None,
) -> keras.Model:
    """Build PIDNet for float32 RGB input in [0, 255].

    Args:
        input_shape: (H, W) or (H, W, 3); H and W multiples of 64.
        num_classes: number of output classes (19 for Cityscapes train ids).
        aux: also return the P-branch logits and the one-channel D-branch boundary logits,
            [main, p_aux, boundary] (see the module docstring for their losses; weights
            INFO.aux_weights = (0.4, 20.0)).
        weights: None (random initialisation) or the path of a Keras weights file saved from
            this model and variant. The authors' ImageNet weights are PyTorch checkpoints, so
            "imagenet" raises BadInput.
        variant: "s" (default), "m" or "l".

    Returns:
        A keras.Model from images to float32 logits (N, H, W, num_classes), or with aux=True
        the list [main, p_aux (N, H, W, num_classes), boundary (N, H, W, 1)].
    """
    key = _resolve_variant(variant)
    m, n, planes, ppm_planes, head_planes = VARIANTS[key]
    if weights == "imagenet":
        raise BadInput(
            "pidnet has no Keras ImageNet weights (the authors' are PyTorch checkpoints); "
            "pass weights=None or the path of a Keras .weights.h5 file of this model"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("pidnet", height, width, SIZE_MULTIPLE)
    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)

    # Shared stem and layers 1-2: 1/8, 2C.
    x = conv_bn_relu(x, planes, 3, strides=2, name="stem_conv1", use_bias=True)
    x = conv_bn_relu(x, planes, 3, strides=2, name="stem_conv2", use_bias=True)
    x = residual_stage(x, "basic", planes, m, 1, name="layer1")
    x = layers.ReLU(name="layer1_out_relu")(x)
    x = residual_stage(x, "basic", planes * 2, m, 2, name="layer2")
    x = layers.ReLU(name="layer2_out_relu")(x)
    size8 = (int(x.shape[1]), int(x.shape[2]))

    # Stage 3: P and D start at 1/8, I goes to 1/16.
    p = residual_stage(x, "basic", planes * 2, m, 1, name="p_layer3")
    d_width = planes if m == 2 else planes * 2
    d = basic_block(x, d_width, 1, relu=False, name="d_layer3_block1")
    i = layers.ReLU(name="i_layer3_out_relu")(
        residual_stage(x, "basic", planes * 4, n, 2, "i_layer3")
    )
    p = _pag(p, conv_bn_relu(i, planes * 2, 1, name="p_compression3", relu=False), planes, "pag3")
    diff = conv_bn_relu(i, d_width, 3, name="d_diff3", relu=False)
    d = layers.Add(name="d_add3")([d, resize_to(diff, size8, name="d_diff3_upsample")])
    p_aux_input = p

    # Stage 4: I to 1/32.
    i = layers.ReLU(name="i_layer4_out_relu")(
        residual_stage(i, "basic", planes * 8, n, 2, "i_layer4")
    )
    p = residual_stage(
        layers.ReLU(name="p_layer4_in_relu")(p), "basic", planes * 2, m, 1, "p_layer4"
    )
    d = layers.ReLU(name="d_layer4_in_relu")(d)
    if m == 2:
        d = residual_stage(d, "bottleneck", planes, 1, 1, name="d_layer4")
    else:
        d = basic_block(d, planes * 2, 1, relu=False, name="d_layer4_block1")
    p = _pag(p, conv_bn_relu(i, planes * 2, 1, name="p_compression4", relu=False), planes, "pag4")
    diff = conv_bn_relu(i, planes * 2, 3, name="d_diff4", relu=False)
    d = layers.Add(name="d_add4")([d, resize_to(diff, size8, name="d_diff4_upsample")])
    boundary_input = d

    # Stage 5: P and D to 4C at 1/8; I to 16C at 1/64, pyramid pooling, back to 1/8.
    p = residual_stage(
        layers.ReLU(name="p_layer5_in_relu")(p), "bottleneck", planes * 2, 1, 1, "p_layer5"
    )
    d = residual_stage(
        layers.ReLU(name="d_layer5_in_relu")(d), "bottleneck", planes * 2, 1, 1, "d_layer5"
    )
    i = residual_stage(i, "bottleneck", planes * 8, 2, 2, name="i_layer5")
    ppm = _pappm if m == 2 else dappm
    i = resize_to(ppm(i, ppm_planes, planes * 4, name="ppm"), size8, name="ppm_upsample")

    x = _bag(p, i, d, planes * 4, light=m == 2)
    # The reference's PIDHead resizes its logits with align_corners=True (mmseg, the authors').
    up = {"align_corners": True}
    logits = preactivation_head(x, head_planes, int(num_classes), (height, width), "head", **up)
    outputs: keras.KerasTensor | list[keras.KerasTensor] = logits
    if aux:
        outputs = [
            logits,
            preactivation_head(
                p_aux_input, head_planes, int(num_classes), (height, width), "p_head", **up
            ),
            preactivation_head(boundary_input, planes, 1, (height, width), "d_head", **up),
        ]
    model = keras.Model(inputs, outputs, name=f"pidnet_{key}")
    if weights is not None:
        model.load_weights(str(weights))
    return model


_PAPER = "Xu et al., PIDNet, arXiv 2206.02066 (CVPR 2023), Cityscapes comparison table"
INFO = ModelInfo(
    name="pidnet",
    builder=build_pidnet,
    size_multiple=SIZE_MULTIPLE,
    # The authors' datasets/base_dataset.py normalises with the ImageNet mean and std.
    normalization="imagenet",
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "XuJiacong/PIDNet models/model_utils.py and models/pidnet.py: bn_mom = 0.1 "
        "(= Keras 0.9; Pag/Bag use BatchNorm2d's default, also 0.1), eps 1e-5 (default)",
    ),
    published={
        "s": Published(
            7.6e6,
            47.6,
            f"{_PAPER}: PIDNet-S 7.6M params, 47.6 GFLOPs at 1024x2048, "
            "78.8 val / 78.6 test mIoU, 93.2 fps (RTX 3090); README of XuJiacong/PIDNet",
        ),
        # The paper's PIDNet-M row (34.4M params, 197.4 GFLOPs) does not describe the released
        # PIDNet-M, (m, n, C) = (2, 3, 64) in the code and README: that counts 28.5M and 177.3 G
        # multiply-adds here; the paper's figures fit n = 4 (34.4M, 196.6 G counted here).
        "m": Published(
            None,
            None,
            f"{_PAPER}: PIDNet-M 34.4M params, 197.4 GFLOPs, which fit (m, n, C) = (2, 4, 64), "
            "not the released (2, 3, 64) built here (28.5M, 177.3 G multiply-adds at "
            "1024x2048); README: 79.9 val / 79.8 test mIoU, 42.2 fps (RTX 3090)",
        ),
        "l": Published(
            36.9e6,
            275.8,
            f"{_PAPER}: PIDNet-L 36.9M params, 275.8 GFLOPs at 1024x2048, "
            "80.9 val / 80.6 test mIoU, 31.1 fps (README)",
        ),
    },
    variant_option="variant",
    aux_weights=(0.4, 20.0),
    aux_losses=("ce", "boundary"),
    boundary_awareness=True,
    # configs/cityscapes/pidnet_*_cityscapes.yaml: SGD lr 0.01, momentum 0.9, wd 5e-4, 1024x1024
    # crops (random scale, flip), 2 GPUs x 6 = 12 images, 484 epochs (120k iterations), poly;
    # OHEM cross-entropy (threshold 0.9, 131072 kept pixels per GPU) and the boundary loss.
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
