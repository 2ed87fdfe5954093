"""Blocks shared by several models: input normalisation, size checks, conv-BN-ReLU, resizing,
and the residual blocks, pyramid pooling and head PIDNet and DDRNet share.

Model-specific blocks live in the model's own file; blocks used by two or more models live here.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from utils.errors import BadInput

#: Normalisations a model's first layer can apply to [0, 255] RGB input: name -> (mean, std).
#: "imagenet" is the torchvision/Keras-applications "torch" mode; "tf" maps to [-1, 1];
#: "unit" maps to [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "unit": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
}


def check_input_size(
    name: str, height: int, width: int, multiple: int, minimum: int | None = None
) -> None:
    """Raise BadInput naming the nearest valid sizes unless H and W are multiples of `multiple`."""
    minimum = minimum or multiple
    ok = height % multiple == 0 and width % multiple == 0 and min(height, width) >= minimum

    def nearest(value: int) -> list[int]:
        lower = max(minimum, (value // multiple) * multiple)
        upper = max(minimum, math.ceil(value / multiple) * multiple)
        return sorted({lower, upper})

    if not ok:
        hs, ws = nearest(height), nearest(width)
        options = ", ".join(f"{h}x{w}" for h in hs for w in ws)
        raise BadInput(
            f"{name} needs height and width that are multiples of {multiple} "
            f"(at least {minimum}); got {height}x{width}. Nearest valid sizes: {options} "
            f"(resize or pad your images, or pass -t/--target-size with one of them)"
        )


def normalize_input(inputs: keras.KerasTensor, mode: str) -> keras.KerasTensor:
    """First layer of every model: [0, 255] RGB to the backbone's expected range."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {mode!r}; choose one of {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[mode]
    # Rescaling with per-channel constants (not layers.Normalization, whose mean and variance
    # tf2onnx exports as extra graph inputs instead of folding them in).
    return layers.Rescaling(
        scale=[1.0 / s for s in std],
        offset=[-m / s for m, s in zip(mean, std, strict=True)],
        name="input_normalization",
    )(inputs)


def logits_output(x: keras.KerasTensor, name: str = "logits") -> keras.KerasTensor:
    """Cast logits to float32 (also under a mixed-precision policy) with a fixed layer name."""
    return layers.Activation("linear", dtype="float32", name=name)(x)


def pad_as_pytorch(
    x: keras.KerasTensor, kernel_size: int, strides: int, dilation_rate: int, name: str
) -> tuple[keras.KerasTensor, str]:
    """(input, padding) of a convolution padded as PyTorch pads: `dilation * (k - 1) // 2` zeros
    on every side (layer `{name}_pad`), then 'valid'. Keras' 'same' with a stride of 2 pads the
    bottom and right only, which shifts the sampling grid by a pixel against the PyTorch
    references; at stride 1 the two agree and 'same' is kept."""
    if int(strides) == 1 or int(kernel_size) == 1:
        return x, "same"
    pad = int(dilation_rate) * (int(kernel_size) - 1) // 2
    return layers.ZeroPadding2D(pad, name=f"{name}_pad")(x), "valid"


def conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int = 3,
    strides: int = 1,
    dilation_rate: int = 1,
    name: str = "conv",
    relu: bool = True,
    use_bias: bool = False,
) -> keras.KerasTensor:
    """Conv2D (padded as PyTorch pads, `pad_as_pytorch`) -> BatchNorm -> ReLU, layers named
    `{name}`, `{name}_bn`, `{name}_relu`."""
    x, padding = pad_as_pytorch(x, kernel_size, strides, dilation_rate, name)
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        name=name,
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def resize_to(
    x: keras.KerasTensor,
    size: tuple[int, int],
    name: str,
    interpolation: str = "bilinear",
    align_corners: bool = False,
) -> keras.KerasTensor:
    """Resize a feature map to a static (H, W) known at build time: half-pixel centres (PyTorch's
    align_corners=False), or with `align_corners` (bilinear only) corner pixels on corner pixels
    as PyTorch's align_corners=True."""
    if tuple(int(s) for s in x.shape[1:3]) == tuple(size):
        return x
    if align_corners:
        return ResizeAlignCorners(size, name=name)(x)
    return layers.Resizing(int(size[0]), int(size[1]), interpolation=interpolation, name=name)(x)


@keras.saving.register_keras_serializable(package="cityscapes_bench")
class ResizeAlignCorners(layers.Layer):
    """Bilinear resizing with align_corners=True (PyTorch's F.interpolate and ONNX Resize's
    align_corners mode): output pixel i samples input position i * (in - 1) / (out - 1)."""

    def __init__(self, size: tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        self.size = (int(size[0]), int(size[1]))

    def call(self, inputs):
        import tensorflow as tf  # the suite runs Keras on TensorFlow; tf2onnx maps this to Resize

        return tf.compat.v1.image.resize_bilinear(inputs, self.size, align_corners=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def adaptive_pool_matrix(in_size: int, bins: int) -> list[list[float]]:
    """(bins, in_size) averaging matrix of PyTorch's AdaptiveAvgPool: floor(i*n/b)..ceil((i+1)*n/b)."""
    matrix = [[0.0] * in_size for _ in range(bins)]
    for i in range(bins):
        start = (i * in_size) // bins
        end = -((-(i + 1) * in_size) // bins)
        matrix[i][start:end] = [1.0 / (end - start)] * (end - start)
    return matrix


@keras.saving.register_keras_serializable(package="segmentation")
class AdaptiveAveragePooling2D(layers.Layer):
    """Adaptive average pooling to `output_size` bins, as PyTorch's AdaptiveAvgPool2d.

    The input's H and W must be static (known when the model is built): the pooling is two
    constant averaging matrices applied with einsum, so it exports to ONNX as plain MatMul/Einsum
    and works at any input size, divisible by the bins or not.
    """

    def __init__(self, output_size: int | tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = (int(output_size[0]), int(output_size[1]))
        if min(self.output_size) < 1:
            raise ValueError(f"output_size must be positive; got {output_size!r}")

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                f"AdaptiveAveragePooling2D needs a static height and width; got {input_shape!r}"
            )
        self._rows = adaptive_pool_matrix(int(height), self.output_size[0])
        self._cols = adaptive_pool_matrix(int(width), self.output_size[1])

    def call(self, inputs):
        rows = keras.ops.convert_to_tensor(self._rows, dtype=inputs.dtype)
        cols = keras.ops.convert_to_tensor(self._cols, dtype=inputs.dtype)
        x = keras.ops.einsum("ih,nhwc->niwc", rows, inputs)
        return keras.ops.einsum("jw,niwc->nijc", cols, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


def _window_positions(x):
    """The four positions of every 2x2 window, in row-major order: top-left, top-right,
    bottom-left, bottom-right, each (N, H/2, W/2, C) (strided slices: ONNX Slice)."""
    return (x[:, 0::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 0::2, :], x[:, 1::2, 1::2, :])


@keras.saving.register_keras_serializable(package="cityscapes_bench")
class MaxPoolingWithArgmax2D(layers.Layer):
    """2x2 stride-2 max pooling that also returns where in its window each maximum was.

    Returns `(pooled, position)`: `position` (int32, same shape as `pooled`) is 0, 1, 2 or 3
    for the window's top-left, top-right, bottom-left or bottom-right input, and on a tie the
    first of the tied inputs in that row-major order, the rule of
    tf.nn.max_pool_with_argmax, so a `MaxUnpooling2D` of it puts every value where the int64
    argmax index would. The window's four inputs are compared with their maximum (Slice, Max,
    Equal, Where in ONNX): no MaxPool Indices output, no Mod, which TensorRT's ONNX parser
    rejects, and no flat index that float32 or int32 could overflow at large sizes. Height and
    width must be even.
    """

    def build(self, input_shape):
        for size in input_shape[1:3]:
            if size is not None and int(size) % 2:
                raise ValueError(f"{self.name} needs an even height and width; got {input_shape!r}")

    def call(self, inputs):
        # TensorFlow only on the paths that need it
        import tensorflow as tf

        top_left, top_right, bottom_left, bottom_right = _window_positions(inputs)
        pooled = tf.maximum(tf.maximum(top_left, top_right), tf.maximum(bottom_left, bottom_right))
        # pooled is one of the four values bit for bit, so at least one comparison holds;
        # the nesting picks the first that does.
        position = tf.where(
            tf.equal(top_left, pooled),
            tf.constant(0, tf.int32),
            tf.where(
                tf.equal(top_right, pooled),
                tf.constant(1, tf.int32),
                tf.where(
                    tf.equal(bottom_left, pooled),
                    tf.constant(2, tf.int32),
                    tf.constant(3, tf.int32),
                ),
            ),
        )
        return pooled, position

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        half = (n, None if h is None else h // 2, None if w is None else w // 2, c)
        return half, half

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape(tuple(inputs.shape))[0]
        return (
            keras.KerasTensor(shape, dtype=self.compute_dtype),
            keras.KerasTensor(shape, dtype="int32"),
        )


@keras.saving.register_keras_serializable(package="cityscapes_bench")
class MaxUnpooling2D(layers.Layer):
    """Inverse of MaxPoolingWithArgmax2D: each value goes back to the position its maximum had.

    Takes `[values, position]` from a MaxPoolingWithArgmax2D (possibly after convolutions that
    keep the shape) and returns a tensor twice as high and wide, zero except at one position
    per 2x2 window: where the pooled maximum was (the first one on a tie, so nothing is sent
    twice). Four elementwise selects interleaved by a reshape (Equal, Where, Concat, Reshape
    in ONNX): no scatter and no index arithmetic, so it is exact at any size and TensorRT's
    ONNX parser takes it.
    """

    def call(self, inputs):
        # TensorFlow only on the paths that need it
        import tensorflow as tf

        values, position = inputs
        zero = tf.zeros((), values.dtype)  # a scalar: a full-size zeros tensor would be folded
        parts = [tf.where(tf.equal(position, k), values, zero) for k in range(4)]
        top = tf.stack(parts[:2], axis=3)  # (N, h, w, 2, C): dx in axis 3
        bottom = tf.stack(parts[2:], axis=3)
        full = tf.stack([top, bottom], axis=2)  # (N, h, 2, w, 2, C): dy in axis 2
        shape = tf.shape(values)
        return tf.reshape(full, tf.stack([shape[0], 2 * shape[1], 2 * shape[2], shape[3]]))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape[0]
        return (n, None if h is None else 2 * h, None if w is None else 2 * w, c)


#: Keras-applications "caffe" mode (ResNet50/101 ImageNet weights): ImageNet mean subtracted, no
#: scaling, listed in RGB order; models/backbones/resnet.py flips conv1's input channels when it
#: loads those BGR-trained weights, so the model still takes RGB.
NORMALIZATIONS["caffe"] = ((123.68, 116.779, 103.939), (1.0, 1.0, 1.0))


def separable_conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int = 3,
    dilation_rate: int = 1,
    name: str = "sepconv",
) -> keras.KerasTensor:
    """Depthwise (dilated) conv -> BN -> ReLU -> 1x1 conv -> BN -> ReLU, DeepLabV3+ style.

    Layers are named `{name}_depthwise`, `{name}_depthwise_bn`, `{name}_pointwise`, ...
    """
    x = layers.DepthwiseConv2D(
        kernel_size,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        name=f"{name}_depthwise",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    return conv_bn_relu(x, filters, 1, name=f"{name}_pointwise")


def aspp(
    x: keras.KerasTensor,
    filters: int = 256,
    rates: tuple[int, ...] = (6, 12, 18),
    dropout: float = 0.1,
    name: str = "aspp",
) -> keras.KerasTensor:
    """Atrous spatial pyramid pooling (DeepLabV3/V3+) on a feature map of static size.

    Branches: image pooling (global average -> 1x1 -> BN/ReLU -> upsampled to the feature size,
    so it adapts to any input size), a 1x1 conv, and one dilated separable 3x3 per rate, each
    `filters` wide; concatenated, projected by a 1x1 conv to `filters`, then dropout.
    Layers: `{name}_pool_conv`, `{name}_conv1x1`, `{name}_sepconv{i}_depthwise` (i = 1.. in rate
    order), `{name}_project`, `{name}_dropout`.
    """
    size = (int(x.shape[1]), int(x.shape[2]))
    pool = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pool = conv_bn_relu(pool, filters, 1, name=f"{name}_pool_conv")
    pool = layers.UpSampling2D(size, name=f"{name}_pool_upsample")(pool)
    branches = [pool, conv_bn_relu(x, filters, 1, name=f"{name}_conv1x1")]
    for i, rate in enumerate(rates, start=1):
        branches.append(separable_conv_bn_relu(x, filters, 3, rate, name=f"{name}_sepconv{i}"))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    x = conv_bn_relu(x, filters, 1, name=f"{name}_project")
    return layers.Dropout(dropout, name=f"{name}_dropout")(x)


# ----------------------------------------------------------------------------------------------
# Residual blocks, pyramid pooling and head of the PyTorch real-time networks (PIDNet, DDRNet)
# ----------------------------------------------------------------------------------------------

#: Output width of a bottleneck relative to its planes (PIDNet's and DDRNet's Bottleneck).
BOTTLENECK_EXPANSION = 2
#: Average poolings of DAPPM/PAPPM: (kernel, stride, zero padding), then a global pooling.
PPM_POOLS = ((5, 2, 2), (9, 4, 4), (17, 8, 8))


def bn_relu_conv(
    x: keras.KerasTensor, filters: int, kernel_size: int, name: str
) -> keras.KerasTensor:
    """Pre-activation unit: BN -> ReLU -> conv (no bias), layers `{name}_bn/_relu/` and `{name}`."""
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=name)(x)


def _residual_sum(
    x: keras.KerasTensor, y: keras.KerasTensor, filters: int, strides: int, relu: bool, name: str
) -> keras.KerasTensor:
    """y + the shortcut of x (a 1x1 conv-BN `{name}_down` where the stride or width changes),
    then ReLU unless `relu` is off."""
    shortcut = x
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = conv_bn_relu(x, filters, 1, strides=strides, name=f"{name}_down", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu")(y) if relu else y


def basic_block(
    x: keras.KerasTensor, filters: int, strides: int, relu: bool, name: str
) -> keras.KerasTensor:
    """Residual basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut, ReLU unless `relu` off."""
    y = conv_bn_relu(x, filters, 3, strides=strides, name=f"{name}_conv1")
    y = conv_bn_relu(y, filters, 3, name=f"{name}_conv2", relu=False)
    return _residual_sum(x, y, filters, strides, relu, name)


def bottleneck(
    x: keras.KerasTensor, planes: int, strides: int, relu: bool, name: str
) -> keras.KerasTensor:
    """Residual bottleneck: 1x1, 3x3 (stride), 1x1 to BOTTLENECK_EXPANSION x planes, + shortcut,
    ReLU unless `relu` is off."""
    filters = planes * BOTTLENECK_EXPANSION
    y = conv_bn_relu(x, planes, 1, name=f"{name}_conv1")
    y = conv_bn_relu(y, planes, 3, strides=strides, name=f"{name}_conv2")
    y = conv_bn_relu(y, filters, 1, name=f"{name}_conv3", relu=False)
    return _residual_sum(x, y, filters, strides, relu, name)


def residual_stage(
    x: keras.KerasTensor, block: str, planes: int, blocks: int, strides: int, name: str
) -> keras.KerasTensor:
    """`blocks` residual blocks ("basic" or "bottleneck"), the first with the stride, as the
    references' _make_layer: the last of several blocks ends without ReLU; a lone basic block
    keeps its ReLU and a lone (or first) bottleneck has none, the reference blocks' defaults."""
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck'; got {block!r}")
    for i in range(blocks):
        last = i == blocks - 1
        stride = strides if i == 0 else 1
        if block == "basic":
            x = basic_block(x, planes, stride, not (last and i > 0), name=f"{name}_block{i + 1}")
        else:
            x = bottleneck(x, planes, stride, not last and i > 0, name=f"{name}_block{i + 1}")
    return x


def pooled_branches(x: keras.KerasTensor, filters: int, name: str) -> list[keras.KerasTensor]:
    """The four pooled branches of DAPPM/PAPPM (PPM_POOLS, then a global pooling), each
    BN-ReLU-1x1 conv, upsampled to x's size."""
    size = (int(x.shape[1]), int(x.shape[2]))
    branches = []
    for i, (kernel, stride, pad) in enumerate(PPM_POOLS, start=1):
        # PyTorch's AvgPool2d(k, s, p) counts the zero padding in each average.
        y = layers.ZeroPadding2D(pad, name=f"{name}_scale{i}_pad")(x)
        y = layers.AveragePooling2D(kernel, stride, padding="valid", name=f"{name}_scale{i}_pool")(
            y
        )
        y = bn_relu_conv(y, filters, 1, name=f"{name}_scale{i}_conv")
        branches.append(resize_to(y, size, name=f"{name}_scale{i}_upsample"))
    i = len(PPM_POOLS) + 1
    y = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_scale{i}_pool")(x)
    y = bn_relu_conv(y, filters, 1, name=f"{name}_scale{i}_conv")
    branches.append(resize_to(y, size, name=f"{name}_scale{i}_upsample"))
    return branches


def dappm(
    x: keras.KerasTensor, filters: int, out_filters: int, name: str = "dappm"
) -> keras.KerasTensor:
    """Deep aggregation pyramid pooling (DDRNet; PIDNet-L): each pooled branch added to the
    previous scale and 3x3 conv'd, all scales concatenated, 1x1 compression + 1x1 shortcut."""
    outputs = [bn_relu_conv(x, filters, 1, name=f"{name}_scale0_conv")]
    for i, branch in enumerate(pooled_branches(x, filters, name), start=1):
        y = layers.Add(name=f"{name}_scale{i}_add")([branch, outputs[-1]])
        outputs.append(bn_relu_conv(y, filters, 3, name=f"{name}_process{i}"))
    y = layers.Concatenate(name=f"{name}_concat")(outputs)
    y = bn_relu_conv(y, out_filters, 1, name=f"{name}_compression")
    shortcut = bn_relu_conv(x, out_filters, 1, name=f"{name}_shortcut")
    return layers.Add(name=f"{name}_out")([y, shortcut])


def preactivation_head(
    x: keras.KerasTensor,
    mid_filters: int,
    out_filters: int,
    size: tuple[int, int],
    name: str,
    align_corners: bool = False,
) -> keras.KerasTensor:
    """Segmentation head of PIDNet and DDRNet: BN-ReLU-3x3 conv-BN-ReLU-1x1 conv (with bias),
    bilinear to `size` (`align_corners` as the reference resizes), float32 logits
    (`{name}_logits`)."""
    x = bn_relu_conv(x, mid_filters, 3, name=f"{name}_conv")
    x = layers.BatchNormalization(name=f"{name}_classifier_bn")(x)
    x = layers.ReLU(name=f"{name}_classifier_relu")(x)
    x = layers.Conv2D(out_filters, 1, name=f"{name}_classifier")(x)
    x = resize_to(x, size, name=f"{name}_upsample", align_corners=align_corners)
    return logits_output(x, name=f"{name}_logits")
