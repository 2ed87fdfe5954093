"""Blocks shared by several models: input normalisation, size checks, conv-BN-ReLU, resizing.

Model-specific blocks live in the model's own file; blocks used by two or more models live here.
"""

from __future__ import annotations

import math

import keras
from keras import layers

#: Normalisations a model's first layer can apply to [0, 255] RGB input: name -> (mean, std).
#: "imagenet" is the torchvision/Keras-applications "torch" mode; "tf" maps to [-1, 1];
#: "unit" maps to [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "unit": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
}


def check_input_size(name: str, height: int, width: int, multiple: int,
                     minimum: int | None = None) -> None:
    """Raise ValueError naming the nearest valid sizes unless H and W are multiples of `multiple`."""
    minimum = minimum or multiple
    ok = height % multiple == 0 and width % multiple == 0 and min(height, width) >= minimum

    def nearest(value: int) -> list[int]:
        lower = max(minimum, (value // multiple) * multiple)
        upper = max(minimum, math.ceil(value / multiple) * multiple)
        return sorted({lower, upper})

    if not ok:
        hs, ws = nearest(height), nearest(width)
        options = ", ".join(f"{h}x{w}" for h in hs for w in ws)
        raise ValueError(
            f"{name} needs height and width that are multiples of {multiple} "
            f"(at least {minimum}); got {height}x{width}. Nearest valid sizes: {options} "
            f"(resize or pad your images, or pass -t/--target-size with one of them)"
        )


def normalize_input(inputs: keras.KerasTensor, mode: str) -> keras.KerasTensor:
    """First layer of every model: [0, 255] RGB to the backbone's expected range."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {mode!r}; choose one of {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[mode]
    return layers.Normalization(mean=list(mean), variance=[s * s for s in std],
                                name="input_normalization")(inputs)


def logits_output(x: keras.KerasTensor, name: str = "logits") -> keras.KerasTensor:
    """Cast logits to float32 (also under a mixed-precision policy) with a fixed layer name."""
    return layers.Activation("linear", dtype="float32", name=name)(x)


def conv_bn_relu(x: keras.KerasTensor, filters: int, kernel_size: int = 3, strides: int = 1,
                 dilation_rate: int = 1, name: str = "conv", relu: bool = True,
                 use_bias: bool = False) -> keras.KerasTensor:
    """Conv2D ('same' padding) -> BatchNorm -> ReLU, layers named `{name}`, `{name}_bn`, `{name}_relu`."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                      dilation_rate=dilation_rate, use_bias=use_bias, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def resize_to(x: keras.KerasTensor, size: tuple[int, int], name: str,
              interpolation: str = "bilinear") -> keras.KerasTensor:
    """Resize a feature map to a static (H, W) known at build time (half-pixel centres)."""
    if tuple(int(s) for s in x.shape[1:3]) == tuple(size):
        return x
    return layers.Resizing(int(size[0]), int(size[1]), interpolation=interpolation,
                           name=name)(x)
