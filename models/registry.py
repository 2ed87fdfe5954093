"""The registry: CLI name -> ModelInfo (builder and metadata), build_model, count_params.

The model contract is in the package docstring (models/__init__.py).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from models import (
    bayes_segnet,
    bisenetv2,
    ddrnet,
    deeplabv3plus,
    fastfcn,
    fastscnn,
    hrnet_ocr,
    pidnet,
    segformer,
    separable_unet,
    unet,
)
from models.info import ModelInfo
from models.loading import all_layers
from utils.errors import BadInput

MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        unet.INFO,
        separable_unet.INFO,
        bayes_segnet.INFO,
        deeplabv3plus.INFO,
        fastscnn.INFO,
        fastfcn.INFO,
        hrnet_ocr.INFO,
        pidnet.INFO,
        ddrnet.INFO,
        bisenetv2.INFO,
        segformer.INFO,
    )
}


def get_info(name: str) -> ModelInfo:
    """The ModelInfo of `name`; BadInput listing the valid names otherwise."""
    if name not in MODELS:
        raise BadInput(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(
    name: str,
    input_shape: tuple[int, ...] = (1024, 2048, 3),
    num_classes: int = 19,
    bn_momentum: float | None = None,
    **options: Any,
) -> keras.Model:
    """Build model `name` for `input_shape` (H, W[, 3]).

    Every BatchNormalization layer gets the model's batch-norm momentum and epsilon
    (`ModelInfo.batch_norm`); `bn_momentum` overrides the momentum.

    Options that are None are dropped so argparse defaults fall through to the builder's own.
    Raises BadInput for an unknown name, an unknown option or a size the model cannot take
    (naming the nearest sizes it can).
    """
    info = get_info(name)
    options = {k: v for k, v in options.items() if v is not None}
    allowed = {"aux", "weights", *info.options}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise BadInput(
            f"model {name!r} takes no option {unknown[0]!r}; it takes {', '.join(sorted(allowed))}"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    if len(input_shape) == 3 and input_shape[2] != 3:
        raise BadInput(f"models take RGB images with 3 channels; got input shape {input_shape!r}")
    model = info.builder(input_shape=(height, width, 3), num_classes=num_classes, **options)
    set_batch_norm(model, info, bn_momentum)
    return model


def set_batch_norm(model: keras.Model, info: ModelInfo, momentum: float | None = None) -> int:
    """Give every BatchNormalization layer of `model` the momentum and epsilon of `info`.

    Layers of the backbone (`info.backbone_prefixes`) get `info.batch_norm.backbone_epsilon`
    when it is set. `momentum` (None: the model's) must be in [0, 1). Returns the layer count.
    Neither value is a weight: call it before the model is traced, weights load either way.
    """
    spec = info.batch_norm
    momentum = spec.momentum if momentum is None else float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise BadInput(f"batch-norm momentum must be in [0, 1), got {momentum!r}")
    count = 0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            in_backbone = bool(info.backbone_prefixes) and layer.name.startswith(
                info.backbone_prefixes
            )
            layer.momentum = momentum
            layer.epsilon = (
                spec.backbone_epsilon
                if in_backbone and spec.backbone_epsilon is not None
                else spec.epsilon
            )
            count += 1
    return count


def count_params(model: keras.Model) -> int:
    """Trainable parameters, as papers and PyTorch count them (no batch-norm moving statistics)."""
    return int(sum(math.prod(int(d) for d in w.shape) for w in model.trainable_weights))
