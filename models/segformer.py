"""SegFormer (Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation
with Transformers", NeurIPS 2021, arXiv 2105.15203) on keras-hub's Mix Transformer (MiT).

Built from keras-hub (requirements-base.txt pins keras-hub): its `MiTBackbone` configuration
and layers (`OverlappingPatchingAndEmbedding`, `HierarchicalTransformerEncoder`,
`SegFormerMultiheadAttention`, `MixFFN`) and its all-MLP decoder `SegFormerBackbone`; this
file adds the input normalisation, the classifier (dropout 0.1, 1x1 conv), the bilinear
upsampling of the 1/4 logits to the input size and the float32 cast.

One fix is needed: keras-hub 0.32's attention and Mix-FFN layers recover the feature map
from the token count as sqrt(N) x sqrt(N), so they only run on square inputs (a 1024x2048
image fails in `SegFormerMultiheadAttention.call` with "Input to reshape is a tensor with
131072*C values"). `SpatialMiTBackbone` is `MiTBackbone` with the same configuration, layers,
weights and feature pyramid, whose blocks are given the stage's (H, W): the reshapes are the
exact non-square form of keras-hub's (identical outputs on square inputs, tested), and its
layer norms divide by sqrt(var + eps) instead of multiplying by Rsqrt (which exports to ONNX
as Reciprocal, rejected by TensorRT's parser): the same weights and values.

| variant | hidden dims          | depths        | heads       | decoder | source              |
|---------|----------------------|---------------|-------------|---------|---------------------|
| b0      | 32, 64, 160, 256     | 2, 2, 2, 2    | 1, 2, 5, 8  | 256     | paper appendix,     |
| b1      | 64, 128, 320, 512    | 2, 2, 2, 2    | 1, 2, 5, 8  | 256     | keras-hub presets   |
| b2      | 64, 128, 320, 512    | 3, 4, 6, 3    | 1, 2, 5, 8  | 768     | mit_b*_cityscapes_  |
| b3      | 64, 128, 320, 512    | 3, 4, 18, 3   | 1, 2, 5, 8  | 768     | 1024 (8, 8, 16, 28, |
| b4      | 64, 128, 320, 512    | 3, 8, 27, 3   | 1, 2, 5, 8  | 768     | 41, 52 blocks)      |
| b5      | 64, 128, 320, 512    | 3, 6, 40, 3   | 1, 2, 5, 8  | 768     |                     |

All: patch sizes 7, 3, 3, 3, strides 4, 2, 2, 2 (1/4 to 1/32), sequence-reduction ratios
8, 4, 2, 1, MLP ratio 4, drop path 0.1.

Pretrained weights: keras-hub's presets (`MiTBackbone.from_preset("mit_b0_cityscapes_1024")`)
are downloaded from Kaggle on first use, which this suite's machines cannot do, so
weights="imagenet" raises BadInput; a Keras weights file of this model loads with
weights=PATH.
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
from keras import layers, ops
from keras_hub.src.models.mit.mit_layers import (
    HierarchicalTransformerEncoder,
    MixFFN,
    OverlappingPatchingAndEmbedding,
    SegFormerMultiheadAttention,
)

from models.info import BatchNorm, ModelInfo, Published, Recipe, variant_key
from models.layers import check_input_size, logits_output, normalize_input, resize_to
from utils.errors import BadInput

#: Total downsampling: the last MiT stage is at 1/32 (and its sequence reduction needs it).
SIZE_MULTIPLE = 32
#: variant -> (hidden dims, depths, decoder width), SegFormer paper Table 6 / keras-hub.
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
PATCH_SIZES = (7, 3, 3, 3)
STRIDES = (4, 2, 2, 2)
DROP_PATH = 0.1
CLASSIFIER_DROPOUT = 0.1


class DivLayerNormalization(layers.LayerNormalization):
    """LayerNormalization over the last axis as (x - mean) / sqrt(var + eps) * gamma + beta.

    The same weights and values as Keras' layer, whose TensorFlow graph uses Rsqrt, which
    tf2onnx exports as Reciprocal, an op TensorRT's ONNX parser rejects (deploy.checks);
    a division exports as Sqrt + Div.
    """

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean, variance = ops.moments(x, axes=[-1], keepdims=True)
        y = (x - mean) / ops.sqrt(variance + self.epsilon)
        if self.scale:
            y = y * ops.cast(self.gamma, "float32")
        if self.center:
            y = y + ops.cast(self.beta, "float32")
        return ops.cast(y, self.compute_dtype)


def _replace_sublayer(owner: keras.Layer, attr: str, layer: keras.Layer) -> None:
    """Put `layer` in place of `owner.<attr>` (same position among the owner's sublayers, so
    the same order of weights); only before `owner` is built."""
    owner._tracker.replace_tracked_value("layers", getattr(owner, attr), layer)
    setattr(owner, attr, layer)


def _layer_norm(epsilon: float, name: str | None = None) -> DivLayerNormalization:
    """A DivLayerNormalization over the last axis."""
    return DivLayerNormalization(epsilon=epsilon, name=name)


class SpatialAttention(SegFormerMultiheadAttention):
    """keras-hub's efficient attention on an (H, W) feature map given at construction."""

    def __init__(self, project_dim: int, num_heads: int, sr_ratio: int, size: tuple[int, int]):
        super().__init__(project_dim, num_heads, sr_ratio)
        self.size = (int(size[0]), int(size[1]))
        if sr_ratio > 1:
            _replace_sublayer(self, "norm", _layer_norm(1e-5))

    def call(self, x):
        batch, channels = ops.shape(x)[0], int(x.shape[-1])
        heads, head_dim = self.num_heads, channels // self.num_heads
        q = ops.transpose(ops.reshape(self.q(x), (batch, -1, heads, head_dim)), (0, 2, 1, 3))
        if self.sr_ratio > 1:
            x = ops.reshape(x, (batch, self.size[0], self.size[1], channels))
            x = self.norm(ops.reshape(self.sr(x), (batch, -1, channels)))
        k = ops.transpose(ops.reshape(self.k(x), (batch, -1, heads, head_dim)), (0, 2, 1, 3))
        v = ops.transpose(ops.reshape(self.v(x), (batch, -1, heads, head_dim)), (0, 2, 1, 3))
        attn = ops.nn.softmax((q @ ops.transpose(k, (0, 1, 3, 2))) * self.scale, axis=-1)
        attn = self.dropout(attn) @ v
        attn = ops.reshape(ops.transpose(attn, (0, 2, 1, 3)), (batch, -1, channels))
        return self.proj_drop(self.proj(attn))


class SpatialMixFFN(MixFFN):
    """keras-hub's Mix-FFN (dense, 3x3 depthwise conv, GELU, dense) on an (H, W) map."""

    def __init__(self, channels: int, mid_channels: int, size: tuple[int, int]):
        super().__init__(channels, mid_channels)
        self.size = (int(size[0]), int(size[1]))

    def call(self, x):
        x = self.fc1(x)
        batch, channels = ops.shape(x)[0], int(x.shape[-1])
        x = self.dwconv(ops.reshape(x, (batch, self.size[0], self.size[1], channels)))
        x = ops.nn.gelu(ops.reshape(x, (batch, -1, channels)))
        return self.fc2(x)


@keras.saving.register_keras_serializable(package="segmentation")
class SpatialTransformerEncoder(HierarchicalTransformerEncoder):
    """keras-hub's `HierarchicalTransformerEncoder` whose attention and Mix-FFN know the
    stage's feature-map size (H, W), so that it runs on non-square maps."""

    def __init__(
        self,
        project_dim: int,
        num_heads: int,
        size: tuple[int, int],
        sr_ratio: int = 1,
        drop_prob: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(project_dim, num_heads, sr_ratio, drop_prob, layer_norm_epsilon, **kwargs)
        self.size = (int(size[0]), int(size[1]))
        self.sr_ratio = int(sr_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        # Replace keras-hub's square-only sublayers (and its layer norms, for TensorRT) in
        # place: the same sublayers in the same order, so the same order of weights.
        _replace_sublayer(self, "norm1", _layer_norm(layer_norm_epsilon))
        _replace_sublayer(
            self, "attn", SpatialAttention(project_dim, num_heads, sr_ratio, self.size)
        )
        _replace_sublayer(self, "norm2", _layer_norm(layer_norm_epsilon))
        _replace_sublayer(self, "mlp", SpatialMixFFN(project_dim, int(project_dim * 4), self.size))

    def get_config(self):
        # keras-hub's get_config stores a serialized "mlp" and "drop_prop" (its own typo),
        # which its __init__ does not take: store the arguments instead.
        config = keras.layers.Layer.get_config(self)
        config.update(
            {
                "project_dim": self.project_dim,
                "num_heads": self.num_heads,
                "size": list(self.size),
                "sr_ratio": self.sr_ratio,
                "drop_prob": self.drop_prop,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="segmentation")
class SpatialMiTBackbone(keras_hub.models.MiTBackbone):
    """keras-hub's `MiTBackbone` (same arguments, configuration, layers and pyramid outputs
    P1..P4) with `SpatialTransformerEncoder` blocks, so that non-square images run.

    `image_shape` must have a static height and width (the blocks' feature-map sizes).
    """

    def __init__(
        self,
        layerwise_depths,
        num_layers,
        layerwise_num_heads,
        layerwise_sr_ratios,
        max_drop_path_rate,
        layerwise_patch_sizes,
        layerwise_strides,
        image_shape=(None, None, 3),
        hidden_dims=None,
        **kwargs,
    ):
        if image_shape[0] is None or image_shape[1] is None:
            raise ValueError(
                f"SpatialMiTBackbone needs a static image height and width; got {image_shape!r}"
            )
        rates = np.linspace(0.0, max_drop_path_rate, sum(layerwise_depths))
        image_input = keras.layers.Input(shape=image_shape)
        x = image_input
        pyramid_outputs = {}
        height, width = int(image_shape[0]), int(image_shape[1])
        block = 0
        for i in range(num_layers):
            pad, patch, stride = (
                layerwise_patch_sizes[i] // 2,
                layerwise_patch_sizes[i],
                layerwise_strides[i],
            )
            height = (height + 2 * pad - patch) // stride + 1
            width = (width + 2 * pad - patch) // stride + 1
            embedding = OverlappingPatchingAndEmbedding(
                project_dim=hidden_dims[i],
                patch_size=patch,
                stride=stride,
                name=f"patch_and_embed_{i}",
            )
            _replace_sublayer(embedding, "norm", _layer_norm(1e-5))
            x = embedding(x)
            for k in range(layerwise_depths[i]):
                x = SpatialTransformerEncoder(
                    project_dim=hidden_dims[i],
                    num_heads=layerwise_num_heads[i],
                    size=(height, width),
                    sr_ratio=layerwise_sr_ratios[i],
                    drop_prob=float(rates[block]),
                    name=f"hierarchical_encoder_{i}_{k}",
                )(x)
                block += 1
            x = _layer_norm(1e-5, name=f"norm_{i}")(x)
            x = keras.layers.Reshape((height, width, -1), name=f"output_level_{i}")(x)
            pyramid_outputs[f"P{i + 1}"] = x
        # MiTBackbone.__init__ builds the square-only graph: initialise its base instead.
        keras_hub.models.FeaturePyramidBackbone.__init__(
            self, inputs=image_input, outputs=x, **kwargs
        )
        self.layerwise_depths = layerwise_depths
        self.image_shape = image_shape
        self.hidden_dims = hidden_dims
        self.pyramid_outputs = pyramid_outputs
        self.num_layers = num_layers
        self.layerwise_num_heads = layerwise_num_heads
        self.layerwise_sr_ratios = layerwise_sr_ratios
        self.max_drop_path_rate = max_drop_path_rate
        self.layerwise_patch_sizes = layerwise_patch_sizes
        self.layerwise_strides = layerwise_strides


def mit_config(variant: str, image_shape: tuple[int, int, int]) -> dict:
    """The MiTBackbone arguments of `variant` (keras-hub's names) for `image_shape`."""
    hidden_dims, depths, _ = VARIANTS[variant]
    return {
        "layerwise_depths": list(depths),
        "num_layers": len(depths),
        "layerwise_num_heads": list(NUM_HEADS),
        "layerwise_sr_ratios": list(SR_RATIOS),
        "max_drop_path_rate": DROP_PATH,
        "layerwise_patch_sizes": list(PATCH_SIZES),
        "layerwise_strides": list(STRIDES),
        "image_shape": tuple(image_shape),
        "hidden_dims": list(hidden_dims),
    }


def _resolve_variant(variant: str | None) -> str:
    """The variant key ("b0".."b5"); BadInput naming the valid ones otherwise."""
    return variant_key(
        "segformer", variant, VARIANTS, INFO.default_variant, ("segformer-", "mit-", "mit_")
    )


def build_segformer(
    input_shape: tuple[int, ...],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | None = None,
    variant: str | None = None,
) -> keras.Model:
    """Build SegFormer-B0..B5 for float32 RGB input in [0, 255].

    Args:
        input_shape: (H, W) or (H, W, 3); H and W multiples of 32.
        num_classes: number of output classes (19 for Cityscapes train ids).
        aux: accepted for the common interface; SegFormer trains without auxiliary heads, so
            the model returns its one output either way.
        weights: None (random initialisation) or the path of a Keras weights file saved from
            this model and variant. "imagenet" (keras-hub's MiT presets) needs a download
            from Kaggle that these machines cannot make, so it raises BadInput.
        variant: "b0" (default) to "b5".

    Returns:
        A keras.Model from images to float32 logits (N, H, W, num_classes).
    """
    del aux  # no auxiliary heads (the paper trains the decoder's output only)
    key = _resolve_variant(variant)
    if weights == "imagenet":
        raise BadInput(
            "segformer's pretrained MiT weights are keras-hub presets downloaded from Kaggle "
            "(MiTBackbone.from_preset), which needs network access; pass weights=None or the "
            "path of a Keras .weights.h5 file of this model"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("segformer", height, width, SIZE_MULTIPLE)
    inputs = keras.Input((height, width, 3), name="image")
    x = normalize_input(inputs, INFO.normalization)
    encoder = SpatialMiTBackbone(**mit_config(key, (height, width, 3)), name="mit")
    decoder = keras_hub.models.SegFormerBackbone(
        image_encoder=encoder, projection_filters=VARIANTS[key][2], name="segformer"
    )
    x = decoder(x)
    x = layers.Dropout(CLASSIFIER_DROPOUT, name="head_dropout")(x)
    x = layers.Conv2D(int(num_classes), 1, name="head_classifier")(x)
    logits = logits_output(resize_to(x, (height, width), name="head_upsample"), name="logits")
    model = keras.Model(inputs, logits, name=f"segformer_{key}")
    if weights is not None:
        model.load_weights(str(weights))
    return model


_PAPER = "Xie et al., SegFormer, NeurIPS 2021 (arXiv 2105.15203)"
_HEAD = (
    "published parameters are with the 150-class ADE20K head (paper Table 1, also the "
    "mmsegmentation configs); the 19-class head has {fewer} fewer"
)


def _published(params: float, gflops: float, miou: str, decoder: int) -> Published:
    fewer = f"{decoder * (150 - 19) + (150 - 19):,}"
    return Published(
        params,
        gflops,
        f"{_PAPER}, Table 1(a): encoder + decoder params ({_HEAD.format(fewer=fewer)}), "
        f"Cityscapes GFLOPs at 1024x2048 (multiply-adds as mmcv counts them; our count, with "
        f"the attention's matrix products, is within 4% for b0 and b1), {miou}",
    )


INFO = ModelInfo(
    name="segformer",
    builder=build_segformer,
    size_multiple=SIZE_MULTIPLE,
    # mmsegmentation's img_norm_cfg for SegFormer: ImageNet mean and std.
    normalization="imagenet",
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "NVlabs/SegFormer (mmsegmentation) SegFormerHead: SyncBN, PyTorch momentum 0.1 "
        "(= Keras 0.9), eps 1e-5; the MiT encoder uses LayerNorm only",
    ),
    published={
        "b0": _published(3.8e6, 125.5, "76.2 val mIoU (1024x2048, sliding window)", 256),
        "b1": _published(13.7e6, 243.7, "78.5 val mIoU", 256),
        "b2": _published(27.5e6, 717.1, "81.0 val mIoU", 768),
        "b3": _published(47.3e6, 962.9, "81.7 val mIoU", 768),
        "b4": _published(64.1e6, 1240.6, "82.3 val mIoU", 768),
        "b5": _published(84.7e6, 1460.4, "82.4 val mIoU", 768),
    },
    variant_option="variant",
    # Paper Sec. 4.1 and NVlabs/SegFormer local_configs/segformer/*/
    # segformer.*.1024x1024.city.160k.py: AdamW (betas 0.9/0.999), lr 6e-5 (x10 on the
    # decoder head), weight decay 0.01 (none on the norms), poly schedule with power 1.0 after
    # a 1500-iteration linear warm-up, 160k iterations, batch 8 (1 per GPU x 8) on Cityscapes
    # (160000 * 8 / 2975 = 430 epochs), 1024x1024 random crops (scale 0.5-2.0, flip),
    # cross-entropy.
    recipe=Recipe(
        optimizer="adamw",
        learning_rate=6e-5,
        momentum=0.9,
        weight_decay=0.01,
        crop_size=(1024, 1024),
        batch_size=8,
        epochs=430,
        schedule="polynomial",
        power=1.0,
        loss="ce",
        note=(
            "one learning rate for all layers: Keras' optimizers take no per-layer rate and "
            "Adam is blind to a gradient scale, so the paper's x10 on the decoder head is not "
            "applied; AdamW decays the kernels (Dense and non-depthwise conv), not the norms, "
            "biases or depthwise kernels (mmsegmentation decays biases and depthwise kernels "
            "too); the 1500 warm-up iterations are --warmup-epochs 4 at batch 8"
        ),
    ),
    options=("variant",),
)
