"""FastFCN: ResNet at output stride 32 + Joint Pyramid Upsampling + a segmentation head.

Wu et al., "FastFCN: Rethinking Dilated Convolution in the Backbone for Semantic Segmentation"
(arXiv 1903.11816; code github.com/wuhuikai/FastFCN). Instead of dilating the backbone's last two
stages (output stride 8), the backbone runs at output stride 32 and the JPU module rebuilds a
2048-channel feature map at 1/8 from C3, C4 and C5:

| block      | layers                                                                 | out         |
|------------|------------------------------------------------------------------------|-------------|
| backbone   | keras.applications ResNet-50/101, C3 / C4 / C5                         | 1/8..1/32   |
| jpu_conv*  | 3x3 conv 512 + BN + ReLU on each of C3, C4, C5                         | 512 each    |
| jpu_concat | C5', C4' upsampled (bilinear) to 1/8, concatenated with C3'            | 1536, 1/8   |
| jpu_dilation{1,2,4,8} | depthwise 3x3 (dilation d) -> BN -> pointwise 512 -> BN -> ReLU | 512 each    |
| jpu_out    | concatenation of the four branches                                     | 2048, 1/8   |
| head       | EncNet (default), PSP or ASPP head -> 1x1 conv to classes              | classes     |
| logits     | bilinear upsampling x8 to the input size, float32                      | classes     |

Heads (the `head` option):
- "encnet" (default): the paper's head (EncHead with JPU): 1x1 conv 2048 -> 512, the context
  encoding module (1x1 conv 512, an Encoding layer with 32 learned codewords, BN over the codes,
  ReLU, mean over codes, fully connected + sigmoid channel scaling y = relu(x + x * gamma)),
  dropout 0.1, 1x1 classifier. It is the default because it is the model the paper presents as
  FastFCN, and all its ops (MatMul, Softmax, ReduceMean, Sigmoid) export to ONNX/TensorRT as they
  are. The semantic-encoding loss (SE-loss: a fully connected layer on the encoded vector that
  predicts which classes are present, trained with binary cross-entropy) is NOT implemented: it
  is an image-level training-only output, which does not fit this project's contract that every
  output is a per-pixel logits map; the channel scaling it regularises is kept.
- "psp": PSPNet's pyramid pooling (bins 1, 2, 3, 6, adaptive to the input size; 1x1 conv 512
  each), concatenated with the input (4096 ch), 3x3 conv 512, dropout 0.1, classifier.
- "aspp": DeepLabV3's ASPP (1x1, 3x3 at rates 12, 24, 36, image pooling; 256 ch each; 1x1
  projection to 256, dropout 0.5), 3x3 conv 256, dropout 0.1, classifier.
For reference, MMSegmentation's re-implementation of FastFCN (R-50-D32 + JPU, 512x1024 crops,
80k iterations, batch 8) reports Cityscapes val mIoU 77.97 (EncNet), 79.26 (PSP), 79.12 (ASPP).

`aux=True` adds FastFCN/EncNet's FCN auxiliary head on C4 (1/16, 1024 ch: 3x3 conv 256 + BN +
ReLU, dropout 0.1, 1x1 classifier) with loss weight 0.2 (the repository's --aux-weight default).

Differences from the PyTorch code: the backbone is keras.applications' ResNet (7x7 stem) rather
than the repository's deep-stem ResNet (three 3x3 convs), so Keras' ImageNet weights load as they
are; upsampling uses half-pixel centres instead of align_corners=True.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from models.backbones.resnet import RESNETS, resnet_features
from models.info import BatchNorm, ModelInfo, Published, Recipe
from models.layers import (
    AdaptiveAveragePooling2D,
    check_input_size,
    conv_bn_relu,
    logits_output,
    normalize_input,
    resize_to,
)
from utils.errors import BadInput

HEADS = ("encnet", "psp", "aspp")
JPU_WIDTH = 512
JPU_DILATIONS = (1, 2, 4, 8)
ENC_CODES = 32


@keras.saving.register_keras_serializable(package="fastfcn")
class ContextEncoding(layers.Layer):
    """EncNet's Encoding layer: residuals of pixel features to K learned codewords.

    For features x_i (N pixels, D channels), codewords c_k and smoothing factors s_k:
    a_ik = softmax_k(s_k * ||x_i - c_k||^2), e_k = sum_i a_ik (x_i - c_k). Input (B, H, W, D),
    output (B, K, D). Initialised as the reference code: c uniform in +-1/sqrt(K*D), s in [-1, 0].
    """

    def __init__(self, num_codes: int = ENC_CODES, **kwargs):
        super().__init__(**kwargs)
        self.num_codes = int(num_codes)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        bound = 1.0 / math.sqrt(self.num_codes * channels)
        self.codewords = self.add_weight(
            name="codewords",
            shape=(self.num_codes, channels),
            initializer=keras.initializers.RandomUniform(-bound, bound),
        )
        self.scale = self.add_weight(
            name="scale",
            shape=(self.num_codes,),
            initializer=keras.initializers.RandomUniform(-1.0, 0.0),
        )

    def call(self, inputs):
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        x = ops.reshape(inputs, (-1, height * width, channels))  # (B, N, D)
        codewords = ops.cast(self.codewords, x.dtype)
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, as (B, N, K)
        squared = (
            ops.sum(ops.square(x), axis=-1, keepdims=True)
            - 2.0 * ops.matmul(x, ops.transpose(codewords))
            + ops.sum(ops.square(codewords), axis=-1)
        )
        assign = ops.softmax(squared * ops.cast(self.scale, x.dtype), axis=-1)  # (B, N, K)
        weighted = ops.matmul(ops.transpose(assign, (0, 2, 1)), x)  # (B, K, D)
        mass = ops.expand_dims(ops.sum(assign, axis=1), -1)  # (B, K, 1)
        return weighted - mass * codewords

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_codes, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "num_codes": self.num_codes}


def joint_pyramid_upsampling(c3, c4, c5, width: int = JPU_WIDTH) -> keras.KerasTensor:
    """JPU: C3/C4/C5 -> 3x3 conv 512 each, fuse at 1/8, four dilated separable branches -> 2048."""
    size = tuple(int(s) for s in c3.shape[1:3])
    f5 = conv_bn_relu(c5, width, 3, name="jpu_conv5")
    f4 = conv_bn_relu(c4, width, 3, name="jpu_conv4")
    f3 = conv_bn_relu(c3, width, 3, name="jpu_conv3")
    f5 = resize_to(f5, size, name="jpu_conv5_upsample")
    f4 = resize_to(f4, size, name="jpu_conv4_upsample")
    x = layers.Concatenate(name="jpu_concat")([f5, f4, f3])
    branches = []
    for rate in JPU_DILATIONS:
        name = f"jpu_dilation{rate}"
        y = layers.DepthwiseConv2D(
            3, padding="same", dilation_rate=rate, use_bias=False, name=f"{name}_dw"
        )(x)
        y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
        y = layers.Conv2D(width, 1, use_bias=False, name=f"{name}_pw")(y)
        y = layers.BatchNormalization(name=f"{name}_pw_bn")(y)
        branches.append(layers.ReLU(name=f"{name}_relu")(y))
    return layers.Concatenate(name="jpu_out")(branches)


def _encnet_head(x, num_classes: int) -> keras.KerasTensor:
    """EncHead: 1x1 conv 512, context encoding module with SE-style channel scaling, classifier."""
    x = conv_bn_relu(x, 512, 1, name="enc_conv")
    channels = int(x.shape[-1])
    e = conv_bn_relu(x, channels, 1, name="enc_encoding_conv")
    # float32: a softmax over codewords of squared distances summed over every pixel.
    e = ContextEncoding(ENC_CODES, dtype="float32", name="enc_encoding")(e)
    e = layers.BatchNormalization(axis=1, name="enc_encoding_bn")(e)  # per codeword
    e = layers.ReLU(name="enc_encoding_relu")(e)
    e = layers.GlobalAveragePooling1D(name="enc_encoding_mean")(e)  # mean over codewords
    gamma = layers.Dense(channels, activation="sigmoid", name="enc_fc")(e)
    gamma = layers.Reshape((1, 1, channels), name="enc_fc_reshape")(gamma)
    scaled = layers.Multiply(name="enc_scale")([x, gamma])
    x = layers.Add(name="enc_residual")([x, scaled])
    x = layers.ReLU(name="enc_relu")(x)
    x = layers.SpatialDropout2D(0.1, name="enc_dropout")(x)
    return layers.Conv2D(num_classes, 1, name="enc_classifier")(x)


def _psp_head(x, num_classes: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> keras.KerasTensor:
    """PSPHead: pyramid pooling (bins 1, 2, 3, 6; 1x1 conv in/4 each), 3x3 conv 512, classifier."""
    size = tuple(int(s) for s in x.shape[1:3])
    pooled_width = int(x.shape[-1]) // 4
    parts = [x]
    for b in bins:
        name = f"psp_pool{b}"
        if b == 1:
            y = layers.GlobalAveragePooling2D(keepdims=True, name=name)(x)
        else:
            y = AdaptiveAveragePooling2D(b, name=name)(x)
        y = conv_bn_relu(y, pooled_width, 1, name=f"{name}_conv")
        parts.append(resize_to(y, size, name=f"{name}_upsample"))
    x = layers.Concatenate(name="psp_concat")(parts)
    x = conv_bn_relu(x, 512, 3, name="psp_conv")
    x = layers.SpatialDropout2D(0.1, name="psp_dropout")(x)
    return layers.Conv2D(num_classes, 1, name="psp_classifier")(x)


def _aspp_head(x, num_classes: int, rates: tuple[int, ...] = (12, 24, 36)) -> keras.KerasTensor:
    """DeepLabV3Head: ASPP (1x1, three dilated 3x3, image pooling; in/8 ch), 3x3 conv, classifier."""
    size = tuple(int(s) for s in x.shape[1:3])
    width = int(x.shape[-1]) // 8
    branches = [conv_bn_relu(x, width, 1, name="aspp_conv1x1")]
    for rate in rates:
        branches.append(conv_bn_relu(x, width, 3, dilation_rate=rate, name=f"aspp_conv{rate}"))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = conv_bn_relu(pooled, width, 1, name="aspp_pool_conv")
    branches.append(resize_to(pooled, size, name="aspp_pool_upsample"))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, width, 1, name="aspp_project")
    x = layers.SpatialDropout2D(0.5, name="aspp_project_dropout")(x)
    x = conv_bn_relu(x, width, 3, name="aspp_head_conv")
    x = layers.SpatialDropout2D(0.1, name="aspp_head_dropout")(x)
    return layers.Conv2D(num_classes, 1, name="aspp_classifier")(x)


def _fcn_aux_head(x, num_classes: int) -> keras.KerasTensor:
    """FCNHead on C4: 3x3 conv in/4 + BN + ReLU, dropout 0.1, 1x1 classifier."""
    x = conv_bn_relu(x, int(x.shape[-1]) // 4, 3, name="aux_conv")
    x = layers.SpatialDropout2D(0.1, name="aux_dropout")(x)
    return layers.Conv2D(num_classes, 1, name="aux_classifier")(x)


_HEAD_BUILDERS = {"encnet": _encnet_head, "psp": _psp_head, "aspp": _aspp_head}


def build_fastfcn(
    input_shape: tuple[int, ...],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
    backbone: str = "resnet50",
    head: str = "encnet",
) -> keras.Model:
    """FastFCN: ResNet (output stride 32) + JPU + EncNet/PSP/ASPP head.

    Args:
        input_shape: (H, W) or (H, W, 3); H and W multiples of 32.
        num_classes: number of output classes (19 for Cityscapes train ids).
        aux: also return the FCN auxiliary head's logits on C4 (loss weight 0.2).
        weights: backbone weights: None (random), "imagenet" (keras.applications' file, cached
            under ~/.keras/models) or the path of a keras.applications ResNet weights file
            (include_top=False) of the same depth.
        backbone: "resnet50" or "resnet101".
        head: "encnet" (the paper's, default), "psp" or "aspp".

    Returns:
        A keras.Model from float32 RGB in [0, 255] to float32 logits (N, H, W, num_classes), or
        with aux=True the list [main_logits, aux_logits].
    """
    if backbone not in RESNETS:
        raise BadInput(f"fastfcn backbone must be one of {sorted(RESNETS)}; got {backbone!r}")
    if head not in _HEAD_BUILDERS:
        raise BadInput(f"fastfcn head must be one of {list(HEADS)}; got {head!r}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive; got {num_classes!r}")
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("fastfcn", height, width, INFO.size_multiple)

    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)
    c3, c4, c5 = resnet_features(x, backbone, weights)
    features = joint_pyramid_upsampling(c3, c4, c5)
    logits = _HEAD_BUILDERS[head](features, int(num_classes))
    outputs = logits_output(resize_to(logits, (height, width), name="logits_upsample"))
    if aux:
        aux_logits = _fcn_aux_head(c4, int(num_classes))
        aux_logits = resize_to(aux_logits, (height, width), name="aux_upsample")
        outputs = [outputs, logits_output(aux_logits, name="aux_logits")]
    return keras.Model(inputs, outputs, name=f"fastfcn_{backbone}_{head}")


INFO = ModelInfo(
    name="fastfcn",
    builder=build_fastfcn,
    size_multiple=32,
    normalization="caffe",
    # FastFCN authors' code (wuhuikai/FastFCN): encoding's SyncBatchNorm, PyTorch defaults; the
    # keras.applications ResNet keeps the epsilon its ImageNet weights were converted with.
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "wuhuikai/FastFCN encoding/nn/syncbn.py: momentum 0.1 (= Keras 0.9), eps 1e-5; "
        "keras.applications ResNet backbone eps 1.001e-5",
        backbone_epsilon=1.001e-5,
    ),
    published={
        "resnet50": Published(
            None,
            None,
            "FastFCN, arXiv 1903.11816 and github.com/wuhuikai/FastFCN (no published parameter count; "
            "37.56 fps at 512x512 for ResNet-50 + JPU); Cityscapes val mIoU 77.97/79.26/79.12 "
            "(EncNet/PSP/ASPP head) from MMSegmentation's configs/fastfcn",
        ),
        "resnet101": Published(
            None, None, "FastFCN, arXiv 1903.11816: no published parameter count for ResNet-101"
        ),
    },
    variant_option="backbone",
    aux_weights=(0.2,),
    # FastFCN repo experiments/segmentation/option.py: SGD, momentum 0.9, weight decay 1e-4,
    # poly, lr 0.01 for Cityscapes at batch 16 (lr = 0.01 / 16 * batch), 240 epochs;
    # 768x768 crops as PyTorch-Encoding trains Cityscapes.
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=1e-4,
        crop_size=(768, 768),
        batch_size=16,
        epochs=240,
        schedule="polynomial",
        power=0.9,
    ),
    options=("backbone", "head"),
    backbone_prefixes=("conv1_", "pool1_", "conv2_", "conv3_", "conv4_", "conv5_"),
)
