"""HRNetV2 backbone: four parallel branches at 1/4, 1/8, 1/16, 1/32 that exchange features.

Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition" (arXiv
1908.07919); layer table from HRNet/HRNet-Semantic-Segmentation's Cityscapes configs:

| part       | HRNetV2-W48 (width 48)                          | W18-Small-v2 (width 18)          |
|------------|-------------------------------------------------|----------------------------------|
| stem       | 3x3 s2 conv 64 + BN + ReLU, twice (1/4)         | same                             |
| stage 1    | 4 bottlenecks, 64 -> 256                        | 2 bottlenecks                    |
| stage 2    | 1 module, 2 branches (W, 2W)                    | 1 module                         |
| stage 3    | 4 modules, 3 branches (W, 2W, 4W)               | 3 modules                        |
| stage 4    | 3 modules, 4 branches (W, 2W, 4W, 8W)           | 2 modules                        |
| per branch | 4 basic blocks (two 3x3 convs) per module       | 2 basic blocks                   |

A new branch starts from the previous lowest-resolution branch with a strided 3x3 conv (+BN,
ReLU); stage 1's 256 channels go to W (3x3 conv) and 2W (strided 3x3 conv). After every module
each output branch i sums all branches j: j == i as is, j > i through 1x1 conv + BN and bilinear
upsampling, j < i through (i - j) strided 3x3 convs (BN, ReLU between, BN only on the last);
then ReLU. Layers are named `stage{s}_m{m}_b{i}_block{k}_conv1`, `stage{s}_m{m}_fuse{i}_from{j}_*`
(branches 1-based, 1 = highest resolution); the last module's outputs are `hrnet_branch1..4`.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from models.layers import conv_bn_relu, resize_to


@dataclasses.dataclass(frozen=True)
class HRNetConfig:
    """Depth of an HRNetV2 variant."""

    stage1_blocks: int
    #: Modules in stages 2, 3, 4.
    modules: tuple[int, int, int]
    #: Basic blocks per branch in every module.
    blocks: int


#: width -> configuration. 48: HRNetV2-W48 (the published Cityscapes model, 65.8M parameters
#: with its segmentation head). 18: HRNetV2-W18-Small-v2 (3.9M with its segmentation head).
HRNET_CONFIGS: dict[int, HRNetConfig] = {
    48: HRNetConfig(stage1_blocks=4, modules=(1, 4, 3), blocks=4),
    18: HRNetConfig(stage1_blocks=2, modules=(1, 3, 2), blocks=2),
}


def _bottleneck(x, planes: int, name: str) -> keras.KerasTensor:
    """ResNet bottleneck (1x1, 3x3, 1x1 x4) with a 1x1 conv + BN shortcut when channels change."""
    shortcut = x
    if int(x.shape[-1]) != 4 * planes:
        shortcut = conv_bn_relu(x, 4 * planes, 1, name=f"{name}_shortcut", relu=False)
    y = conv_bn_relu(x, planes, 1, name=f"{name}_conv1")
    y = conv_bn_relu(y, planes, 3, name=f"{name}_conv2")
    y = conv_bn_relu(y, 4 * planes, 1, name=f"{name}_conv3", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_relu")(y)


def _basic_block(x, name: str) -> keras.KerasTensor:
    """Residual block of two 3x3 conv-BN (ReLU between) with an identity shortcut."""
    filters = int(x.shape[-1])
    y = conv_bn_relu(x, filters, 3, name=f"{name}_conv1")
    y = conv_bn_relu(y, filters, 3, name=f"{name}_conv2", relu=False)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(name=f"{name}_relu")(y)


def _fuse(branches: list, prefix: str, out_names: list[str] | None) -> list[keras.KerasTensor]:
    """Exchange unit: every output branch sums all input branches resampled to its resolution."""
    outputs = []
    for i, target in enumerate(branches):
        size = tuple(int(s) for s in target.shape[1:3])
        filters = int(target.shape[-1])
        name = f"{prefix}_fuse{i + 1}"
        terms = []
        for j, source in enumerate(branches):
            src = f"{name}_from{j + 1}"
            if j == i:
                terms.append(source)
            elif j > i:
                y = conv_bn_relu(source, filters, 1, name=f"{src}_conv", relu=False)
                terms.append(resize_to(y, size, name=f"{src}_upsample"))
            else:
                y = source
                for k in range(i - j):
                    last = k == i - j - 1
                    y = conv_bn_relu(
                        y,
                        filters if last else int(source.shape[-1]),
                        3,
                        strides=2,
                        name=f"{src}_down{k + 1}",
                        relu=not last,
                    )
                terms.append(y)
        y = layers.Add(name=f"{name}_add")(terms)
        outputs.append(layers.ReLU(name=out_names[i] if out_names else f"{name}_relu")(y))
    return outputs


def hrnet_features(x: keras.KerasTensor, width: int = 48) -> list[keras.KerasTensor]:
    """HRNetV2 branches [1/4 W, 1/8 2W, 1/16 4W, 1/32 8W] of a normalised image `x`.

    Args:
        x: normalised (N, H, W, 3) image tensor; H and W multiples of 32.
        width: 48 (HRNetV2-W48) or 18 (HRNetV2-W18-Small-v2); see HRNET_CONFIGS.

    Returns:
        The four branch outputs of the last module, layers named hrnet_branch1..hrnet_branch4.
    """
    if width not in HRNET_CONFIGS:
        raise ValueError(f"HRNet width must be one of {sorted(HRNET_CONFIGS)}; got {width!r}")
    config = HRNET_CONFIGS[width]
    x = conv_bn_relu(x, 64, 3, strides=2, name="stem_conv1")
    x = conv_bn_relu(x, 64, 3, strides=2, name="stem_conv2")
    for k in range(config.stage1_blocks):
        x = _bottleneck(x, 64, name=f"stage1_block{k + 1}")

    branches = [x]
    for stage, num_modules in zip((2, 3, 4), config.modules, strict=True):
        num_branches = stage
        widths = [width * 2**i for i in range(num_branches)]
        # Transition: adapt the existing branches' widths, start the new lower-resolution one.
        new = []
        for i in range(num_branches):
            name = f"transition{stage}_b{i + 1}"
            if i < len(branches):
                y = branches[i]
                if int(y.shape[-1]) != widths[i]:
                    y = conv_bn_relu(y, widths[i], 3, name=name)
            else:
                y = conv_bn_relu(branches[-1], widths[i], 3, strides=2, name=name)
            new.append(y)
        branches = new
        for m in range(num_modules):
            prefix = f"stage{stage}_m{m + 1}"
            for i in range(num_branches):
                for k in range(config.blocks):
                    branches[i] = _basic_block(branches[i], name=f"{prefix}_b{i + 1}_block{k + 1}")
            last = stage == 4 and m == num_modules - 1
            out_names = [f"hrnet_branch{i + 1}" for i in range(num_branches)] if last else None
            branches = _fuse(branches, prefix, out_names)
    return branches


def hrnet_concat(branches: list[keras.KerasTensor]) -> keras.KerasTensor:
    """HRNetV2 representation: every branch upsampled (bilinear) to 1/4 and concatenated (15W)."""
    size = tuple(int(s) for s in branches[0].shape[1:3])
    parts = [branches[0]]
    for i, branch in enumerate(branches[1:], start=2):
        parts.append(resize_to(branch, size, name=f"hrnet_branch{i}_upsample"))
    return layers.Concatenate(name="hrnet_concat")(parts)
