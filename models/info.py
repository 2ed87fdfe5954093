"""Metadata kept beside each model builder (see models/__init__.py for the registry)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Default training recipe: what train.py uses when an option is not given."""

    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    crop_size: tuple[int, int] = (1024, 2048)
    batch_size: int = 8
    epochs: int = 200
    schedule: str = "polynomial"
    power: float = 0.9


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Metadata beside each builder."""

    name: str
    builder: Callable[..., keras.Model]
    #: Input height and width must be multiples of this (the network's total downsampling).
    size_multiple: int
    #: Name of the normalisation the model's first layer applies (see models.layers).
    normalization: str
    #: Published trainable parameter count for 19 classes at the default options, or None.
    reference_params: float | None
    #: Where the reference figures come from.
    reference_source: str
    #: Published compute at 1024x2048 in G multiply-adds, or None.
    reference_gmacs: float | None = None
    #: Loss weights of the auxiliary heads built with aux=True, in output order after the main.
    aux_weights: tuple[float, ...] = ()
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
    #: Option names the builder accepts besides input_shape, num_classes, aux and weights.
    options: tuple[str, ...] = ()
    #: Layer-name prefixes of the pretrained backbone (what train.py --freeze-backbone freezes).
    backbone_prefixes: tuple[str, ...] = ()
