"""HRNetV2 + OCR (object-contextual representations) for semantic segmentation.

Yuan et al., "Object-Contextual Representations for Semantic Segmentation" (arXiv 1909.11065),
on the HRNetV2 backbone (models/backbones/hrnet.py); figures from HRNet-Semantic-Segmentation's
HRNet-OCR branch (Cityscapes val 81.6 mIoU, test 82.3, about 70.3M parameters for W48).

| block                  | layers                                                        | out        |
|------------------------|---------------------------------------------------------------|------------|
| hrnet_concat           | HRNetV2 branches upsampled to 1/4 and concatenated            | 15W, 1/4   |
| ocr_aux (soft regions) | 1x1 conv 15W + BN + ReLU -> 1x1 conv to classes               | K, 1/4     |
| ocr_conv3x3            | 3x3 conv 512 + BN + ReLU (pixel representations)              | 512        |
| ocr_gather             | softmax of each region map over the pixels, weighted sum of   | K x 512    |
|                        | pixel representations: one object vector per class           |            |
| ocr_attention_*        | query: pixels, two 1x1 conv 256 + BN + ReLU; key: objects, two| 512, 1/4   |
|                        | 1x1 256 + BN + ReLU; value: objects, 1x1 256 + BN + ReLU;     |            |
|                        | softmax(q k^T / sqrt(256)) v -> 1x1 conv 512 + BN + ReLU      |            |
| ocr_fuse               | concat [object context, pixels] -> 1x1 conv 512 + BN + ReLU,  | 512        |
|                        | dropout 0.05                                                  |            |
| ocr_classifier         | 1x1 conv to classes, bilinear upsampling x4, float32          | K          |

The soft-region head is always built (OCR needs it); `aux=True` also returns its logits,
upsampled to the input size, for the auxiliary loss (weight 0.4, main 1.0, as the reference
configuration's BALANCE_WEIGHTS [0.4, 1]). The backbone plus that head is HRNetV2's own
segmentation model (65.8M parameters for W48).

`width=18` builds HRNetV2-W18-Small-v2 (stage-1 2 bottlenecks, 1/3/2 modules, 2 blocks per
branch; 3.9M parameters with HRNetV2's plain head) under the same OCR head (512 mid channels,
256 key channels); no OCR figure is published for that combination.
"""

from __future__ import annotations

import keras
from keras import layers

from models.backbones.hrnet import HRNET_CONFIGS, hrnet_concat, hrnet_features
from models.info import BatchNorm, ModelInfo, Published, Recipe
from models.layers import check_input_size, conv_bn_relu, logits_output, normalize_input, resize_to
from utils.errors import BadInput

OCR_MID_CHANNELS = 512
OCR_KEY_CHANNELS = 256
OCR_DROPOUT = 0.05
#: --backbone names accepted as an alias of `width`.
BACKBONE_WIDTHS = {"w48": 48, "w18": 18}


def _dense_bn_relu(x, units: int, name: str) -> keras.KerasTensor:
    """1x1 conv on a set of vectors (B, K, C): Dense without bias -> BN -> ReLU."""
    x = layers.Dense(units, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def soft_object_regions(features, num_classes: int) -> keras.KerasTensor:
    """Auxiliary head: 1x1 conv (same width) + BN + ReLU -> 1x1 conv to per-class region logits."""
    x = conv_bn_relu(features, int(features.shape[-1]), 1, name="ocr_aux_conv")
    return layers.Conv2D(num_classes, 1, name="ocr_aux_classifier")(x)


def object_context(pixels, regions) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """OCR core: gather class object vectors, then attend from every pixel to them.

    Args:
        pixels: pixel representations (B, h, w, C).
        regions: soft object region logits (B, h, w, K).

    Returns:
        (object vectors (B, K, C) named "ocr_gather", per-pixel object context (B, h, w, C)
        named "ocr_context").
    """
    height, width, channels = (int(s) for s in pixels.shape[1:])
    classes = int(regions.shape[-1])
    # Gather: a softmax over the pixels of each class's region map weights the pixels (float32:
    # the sum runs over every pixel at 1/4 resolution).
    probs = layers.Reshape((height * width, classes), name="ocr_gather_regions_flat")(regions)
    probs = layers.Softmax(axis=1, dtype="float32", name="ocr_gather_softmax")(probs)
    flat = layers.Reshape((height * width, channels), name="ocr_gather_pixels_flat")(pixels)
    objects = layers.Dot(axes=(1, 1), dtype="float32", name="ocr_gather")([probs, flat])

    # Object attention: queries from pixels, keys and values from the object vectors.
    query = conv_bn_relu(pixels, OCR_KEY_CHANNELS, 1, name="ocr_attention_query1")
    query = conv_bn_relu(query, OCR_KEY_CHANNELS, 1, name="ocr_attention_query2")
    query = layers.Reshape((height * width, OCR_KEY_CHANNELS), name="ocr_attention_query_flat")(
        query
    )
    key = _dense_bn_relu(objects, OCR_KEY_CHANNELS, name="ocr_attention_key1")
    key = _dense_bn_relu(key, OCR_KEY_CHANNELS, name="ocr_attention_key2")
    value = _dense_bn_relu(objects, OCR_KEY_CHANNELS, name="ocr_attention_value")
    similarity = layers.Dot(axes=(2, 2), dtype="float32", name="ocr_attention_similarity")(
        [query, key]
    )
    similarity = layers.Rescaling(
        OCR_KEY_CHANNELS**-0.5, dtype="float32", name="ocr_attention_scale"
    )(similarity)
    attention = layers.Softmax(axis=-1, dtype="float32", name="ocr_attention_softmax")(similarity)
    context = layers.Dot(axes=(2, 1), name="ocr_attention_context")([attention, value])
    context = layers.Reshape((height, width, OCR_KEY_CHANNELS), name="ocr_attention_reshape")(
        context
    )
    context = conv_bn_relu(context, channels, 1, name="ocr_attention_up")
    context = layers.Identity(name="ocr_context")(context)
    return objects, context


def _resolve_width(width: int | None, backbone: str | None) -> int:
    """The HRNet width from `width` and its --backbone alias ("w48", "w18")."""
    alias = None
    if backbone is not None:
        if str(backbone).lower() not in BACKBONE_WIDTHS:
            raise BadInput(
                f"hrnet_ocr backbone must be one of {sorted(BACKBONE_WIDTHS)}; got {backbone!r}"
            )
        alias = BACKBONE_WIDTHS[str(backbone).lower()]
    if width is None:
        return 48 if alias is None else alias
    if isinstance(width, bool) or not isinstance(width, int) or width not in HRNET_CONFIGS:
        raise BadInput(f"hrnet_ocr width must be one of {sorted(HRNET_CONFIGS)}; got {width!r}")
    if alias is not None and alias != width:
        raise BadInput(f"hrnet_ocr width {width!r} contradicts backbone {backbone!r}")
    return width


def build_hrnet_ocr(
    input_shape: tuple[int, ...],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
    width: int | None = None,
    backbone: str | None = None,
) -> keras.Model:
    """HRNetV2 + OCR.

    Args:
        input_shape: (H, W) or (H, W, 3); H and W multiples of 32.
        num_classes: number of output classes (19 for Cityscapes train ids).
        aux: also return the soft object region logits (auxiliary loss weight 0.4).
        weights: None (random initialisation) or the path of a Keras weights file
            (`.weights.h5`) saved from this same model and configuration. There are no Keras
            ImageNet HRNet weights, so "imagenet" raises BadInput.
        width: 48 (HRNetV2-W48, default) or 18 (HRNetV2-W18-Small-v2).
        backbone: alias of width for the CLI's --backbone: "w48" or "w18".

    Returns:
        A keras.Model from float32 RGB in [0, 255] to float32 logits (N, H, W, num_classes), or
        with aux=True the list [main_logits, soft_region_logits].
    """
    width = _resolve_width(width, backbone)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive; got {num_classes!r}")
    if weights == "imagenet":
        raise BadInput(
            "hrnet_ocr has no Keras ImageNet weights (the official ones are PyTorch checkpoints); "
            "pass weights=None or the path of a Keras .weights.h5 file of this model"
        )
    height, image_width = int(input_shape[0]), int(input_shape[1])
    check_input_size("hrnet_ocr", height, image_width, INFO.size_multiple)

    inputs = keras.Input((height, image_width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)
    features = hrnet_concat(hrnet_features(x, width))
    regions = soft_object_regions(features, int(num_classes))
    pixels = conv_bn_relu(features, OCR_MID_CHANNELS, 3, name="ocr_conv3x3")
    _, context = object_context(pixels, regions)
    x = layers.Concatenate(name="ocr_concat")([context, pixels])
    x = conv_bn_relu(x, OCR_MID_CHANNELS, 1, name="ocr_fuse")
    x = layers.SpatialDropout2D(OCR_DROPOUT, name="ocr_dropout")(x)
    logits = layers.Conv2D(int(num_classes), 1, name="ocr_classifier")(x)
    outputs = logits_output(resize_to(logits, (height, image_width), name="logits_upsample"))
    if aux:
        aux_logits = resize_to(regions, (height, image_width), name="aux_upsample")
        outputs = [outputs, logits_output(aux_logits, name="aux_logits")]
    model = keras.Model(inputs, outputs, name=f"hrnet_w{width}_ocr")
    if weights is not None:
        model.load_weights(str(weights))
    return model


INFO = ModelInfo(
    name="hrnet_ocr",
    builder=build_hrnet_ocr,
    size_multiple=32,
    normalization="imagenet",
    # The authors' code (HRNet/HRNet-Semantic-Segmentation): BN_MOMENTUM 0.1, eps 1e-5.
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "HRNet/HRNet-Semantic-Segmentation lib/models/seg_hrnet_ocr.py: BN_MOMENTUM 0.1 "
        "(= Keras 0.9), BatchNorm2d eps 1e-5",
    ),
    published={
        "w48": Published(
            70.3e6,
            None,
            "HRNet-Semantic-Segmentation, HRNet-OCR branch / openseg: HRNetV2-W48 + OCR, about "
            "70.3M parameters, Cityscapes val 81.6 / test 82.3 mIoU (HRNetV2-W48 alone: 65.8M, "
            "696.2 GFLOPs at 1024x2048)",
        ),
        "w18": Published(
            None,
            None,
            "no published figure for W18-Small-v2 + OCR (HRNetV2-W18-Small-v2 with "
            "its plain head: 3.9M parameters, 71.6 GFLOPs)",
        ),
    },
    variant_option="backbone",
    aux_weights=(0.4,),
    # experiments/cityscapes/seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484:
    # SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9, 512x1024 crops, 4 GPUs x 3 images,
    # 484 epochs, multi-scale (0.5-2.1) and flip.
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        crop_size=(512, 1024),
        batch_size=12,
        epochs=484,
        schedule="polynomial",
        power=0.9,
    ),
    options=("width", "backbone"),
    backbone_prefixes=("stem_", "stage", "transition", "hrnet_"),
)
