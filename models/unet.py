"""U-Net (Ronneberger et al., MICCAI 2015, arXiv 1505.04597) for Cityscapes.

Contracting path: five stages of two 3x3 convolutions with widths 64-128-256-512-1024 and a 2x2
max pool between stages (total stride 16); dropout 0.5 at the end of the two deepest stages (as
in the paper's "drop-out layers at the end of the contracting path" and zhixuhao/unet).
Expanding path: a 2x2 up-convolution (transposed convolution, stride 2) that halves the
channels, concatenation with the contracting stage of the same resolution, two 3x3 convolutions.
A 1x1 convolution maps the 64 channels to the classes (the reference repository's extra
2-channel convolution for binary masks is left out).

Differences from the paper, by choice:
- 'same' padding, so the output has the input's size (the paper crops 'valid' convolutions).
  The 3x3 convolutions keep the paper's He-normal initialisation.
- Batch normalisation after every 3x3 convolution (conv without bias -> BN -> ReLU). The paper
  has none; we add it so the 31M-parameter network trains from scratch with SGD at usual
  learning rates and under mixed precision. It changes the trainable count by +0.02%
  (31,038,803 instead of 31,032,915 for 19 classes).

Trainable parameters for 19 classes: 31,038,803 (reference 31.0M). No auxiliary heads.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from models.info import DEFAULT, BatchNorm, ModelInfo, Published, Recipe
from models.layers import check_input_size, logits_output, normalize_input
from models.loading import load_weights_option

#: Widths of the contracting stages; the last one is the bottleneck at 1/16.
WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 1024)
#: Dropout rate at the end of the two deepest stages.
DROPOUT = 0.5
SIZE_MULTIPLE = 2 ** (len(WIDTHS) - 1)


def _conv_bn_relu(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """3x3 conv ('same', no bias, He-normal init as in the paper) -> BatchNorm -> ReLU."""
    x = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=name
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _double_conv(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """Two 3x3 conv-BN-ReLU at one resolution, named `{name}_conv1` and `{name}_conv2`."""
    x = _conv_bn_relu(x, filters, f"{name}_conv1")
    return _conv_bn_relu(x, filters, f"{name}_conv2")


def build_unet(
    input_shape: tuple[int, int, int],
    num_classes: int = 19,
    aux: bool = False,
    weights: str | os.PathLike | None = None,
) -> keras.Model:
    """Build U-Net.

    Args:
        input_shape: (H, W, 3); H and W must be multiples of 16.
        num_classes: number of output classes (19 Cityscapes train ids).
        aux: accepted for the common builder signature; there are no auxiliary heads, so the
            model returns its logits alone either way.
        weights: None (random initialisation) or the path of a Keras `.weights.h5` file.

    Returns:
        A keras.Model from float32 RGB in [0, 255] to float32 logits (N, H, W, num_classes).
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    check_input_size("unet", height, width, SIZE_MULTIPLE)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
    inputs = keras.Input(shape=(height, width, 3), name="image")
    x = normalize_input(inputs, "imagenet")
    skips = []
    deepest = len(WIDTHS)
    for level, filters in enumerate(WIDTHS, start=1):
        if level > 1:
            x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        x = _double_conv(x, filters, f"enc{level}")
        if level >= deepest - 1:
            x = layers.Dropout(DROPOUT, name=f"enc{level}_dropout")(x)
        skips.append(x)
    for level in range(deepest - 1, 0, -1):
        filters = WIDTHS[level - 1]
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_upconv")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([skips[level - 1], x])
        x = _double_conv(x, filters, f"dec{level}")
    x = layers.Conv2D(num_classes, 1, name="classifier")(x)
    model = keras.Model(inputs, logits_output(x), name="unet")
    return load_weights_option(model, weights, "unet")


INFO = ModelInfo(
    name="unet",
    builder=build_unet,
    size_multiple=SIZE_MULTIPLE,
    normalization="imagenet",
    # The paper has no batch norm (added here, see the module docstring), so no reference value:
    # PyTorch's BatchNorm2d defaults, as the zoo's PyTorch reference implementations use.
    batch_norm=BatchNorm(
        0.9,
        1e-5,
        "no reference: the paper has no batch norm; PyTorch BatchNorm2d defaults "
        "(momentum 0.1 = Keras 0.9, eps 1e-5)",
    ),
    published={
        DEFAULT: Published(
            31.0e6,
            1500.0,
            "Ronneberger et al. 2015 (arXiv 1505.04597); 31.0M params and about "
            "1.5 T multiply-adds at 1024x2048 measured on zhixuhao/unet's design (github.com/zhixuhao/unet)",
        )
    },
    # The paper trains with SGD, momentum 0.99 (its batches are single large tiles); it gives
    # no learning rate. We keep momentum 0.99 and take lr 1e-3 so that lr / (1 - momentum)
    # equals the usual 0.01 / (1 - 0.9); 512x1024 crops of batch 4 fit a 16 GB GPU.
    recipe=Recipe(
        optimizer="sgd",
        learning_rate=1e-3,
        momentum=0.99,
        weight_decay=1e-4,
        crop_size=(512, 1024),
        batch_size=4,
        epochs=200,
        schedule="polynomial",
        power=0.9,
    ),
    options=(),
)
