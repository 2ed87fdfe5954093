"""Metadata kept beside each model builder (see models/__init__.py for the registry)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from utils.errors import BadInput

if TYPE_CHECKING:
    import keras

#: Losses of the main output a recipe (and train.py --loss) can name.
LOSSES = ("ce", "ohem")
#: Losses of an auxiliary output (ModelInfo.aux_losses): "ce", cross-entropy over the classes
#: against the label map (num_classes channels), whatever the main output's loss (PIDNet's and
#: DDRNet's auxiliary heads under OHEM); "main", the main output's loss (train.py --loss: OHEM
#: under --loss ohem, as BiSeNetV2's reference trains its booster heads); "boundary", PIDNet's
#: class-balanced binary cross-entropy of one channel of boundary logits against the label
#: map's boundaries.
AUX_LOSSES = ("ce", "main", "boundary")


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
    #: Loss of the main output (train.py --loss): "ce" (cross-entropy) or "ohem" (online hard
    #: example mining cross-entropy, training.trainer).
    loss: str = "ce"
    #: OHEM's probability threshold and minimum kept pixels per replica (train.py
    #: --ohem-thresh, --ohem-min-kept; used with loss "ohem"): PIDNet's and DDRNet's 0.9 and
    #: 131072 by default.
    ohem_thresh: float = 0.9
    ohem_min_kept: int = 131072
    #: What of the paper's recipe the suite cannot express, or expresses differently (printed
    #: by train.py --show-recipe); empty when nothing.
    note: str = ""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"recipe loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if not 0.0 < self.ohem_thresh <= 1.0 or self.ohem_min_kept < 1:
            raise ValueError(
                "recipe OHEM threshold must be in (0, 1] and its minimum kept pixels >= 1; "
                f"got {self.ohem_thresh!r} and {self.ohem_min_kept!r}"
            )


@dataclasses.dataclass(frozen=True)
class Published:
    """Published figures of one variant (19 classes), with where they come from."""

    #: Trainable parameters, or None where no figure exists for this exact architecture.
    params: float | None
    #: Compute at 1024x2048 in G multiply-adds, or None.
    gmacs: float | None
    source: str


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    """Batch-norm settings of the implementation that reproduces the model's published result.

    `momentum` is Keras' (moving = momentum * moving + (1 - momentum) * batch): PyTorch's
    momentum m is Keras' 1 - m, TensorFlow slim's decay is Keras' momentum as it is.
    `models.build_model` sets them on every BatchNormalization layer it builds (train.py
    --bn-momentum overrides the momentum); neither is a weight, so pretrained backbones load
    their files whatever the values.
    """

    momentum: float
    epsilon: float
    source: str
    #: Epsilon of the backbone's layers (`ModelInfo.backbone_prefixes`) where its pretrained
    #: weights were trained with another one; None: `epsilon` everywhere.
    backbone_epsilon: float | None = None


#: The key of `ModelInfo.published` for models without variants.
DEFAULT = "default"
NO_FIGURE = Published(None, None, "no published figure for this variant")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Metadata beside each builder."""

    name: str
    builder: Callable[..., keras.Model]
    #: Input height and width must be multiples of this (the network's total downsampling).
    size_multiple: int
    #: Name of the normalisation the model's first layer applies (see models.layers).
    normalization: str
    #: Published figures keyed by variant: the value of `variant_option` (e.g. the backbone),
    #: or DEFAULT for a model without variants. The first key is the builder's default.
    published: dict[str, Published]
    #: Batch-norm momentum and epsilon, with their source.
    batch_norm: BatchNorm
    #: Loss weights of the auxiliary heads built with aux=True, in output order after the main.
    aux_weights: tuple[float, ...] = ()
    #: Loss of each auxiliary output, in the order of aux_weights, from AUX_LOSSES; empty:
    #: "ce" for every one. A "boundary" output has one channel, a "ce" one num_classes.
    aux_losses: tuple[str, ...] = ()
    #: Add the boundary-awareness loss (PIDNet's BAS loss, weight 1): the main output's loss on
    #: the pixels where the sigmoid of the "boundary" output exceeds 0.8. Needs such an output.
    boundary_awareness: bool = False
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
    #: Option names the builder accepts besides input_shape, num_classes, aux and weights.
    options: tuple[str, ...] = ()
    #: Layer-name prefixes of the pretrained backbone (what train.py --freeze-backbone freezes).
    backbone_prefixes: tuple[str, ...] = ()
    #: The builder option that selects a variant (e.g. "backbone"), or "" for none.
    variant_option: str = ""

    def __post_init__(self) -> None:
        if self.aux_losses:
            if len(self.aux_losses) != len(self.aux_weights):
                raise ValueError(
                    f"{self.name}: aux_losses needs one kind per aux weight "
                    f"({len(self.aux_weights)}), got {self.aux_losses!r}"
                )
            unknown = [kind for kind in self.aux_losses if kind not in AUX_LOSSES]
            if unknown:
                raise ValueError(
                    f"{self.name}: aux loss must be one of {', '.join(AUX_LOSSES)}; "
                    f"got {unknown[0]!r}"
                )
        if self.boundary_awareness and "boundary" not in self.aux_loss_kinds:
            raise ValueError(
                f"{self.name}: boundary_awareness needs an auxiliary output with the "
                f"'boundary' loss; aux_losses is {self.aux_loss_kinds!r}"
            )

    @property
    def aux_loss_kinds(self) -> tuple[str, ...]:
        """The loss of each auxiliary output (aux_losses, or "ce" for each when it is empty)."""
        return self.aux_losses or ("ce",) * len(self.aux_weights)

    @property
    def default_variant(self) -> str:
        """The variant the builder builds when no option is given."""
        return next(iter(self.published))

    def published_for(self, options: dict[str, Any] | None = None) -> Published:
        """The published figures of the variant that `options` select (other options ignored)."""
        options = options or {}
        variant = options.get(self.variant_option) if self.variant_option else None
        return self.published.get(variant or self.default_variant, NO_FIGURE)

    def variants(self) -> list[dict[str, Any]]:
        """The option sets of the variants with published entries, the default first."""
        if not self.variant_option:
            return [{}]
        return [{self.variant_option: variant} for variant in self.published]

    @property
    def reference_params(self) -> float | None:
        """Published trainable parameters of the default variant."""
        return self.published_for().params

    @property
    def reference_gmacs(self) -> float | None:
        """Published G multiply-adds at 1024x2048 of the default variant."""
        return self.published_for().gmacs

    @property
    def reference_source(self) -> str:
        """Where the default variant's figures come from."""
        return self.published_for().source


def variant_key(
    model: str, variant: str | None, variants: Any, default: str, prefixes: tuple[str, ...] = ()
) -> str:
    """The key of `variant` among `variants` (None: `default`): lowercased, `prefixes` (e.g.
    "pidnet-") dropped, "_" read as "-" for keys that use "-"; BadInput naming the valid
    keys otherwise."""
    if variant is None:
        return default
    key = str(variant).lower()
    for prefix in prefixes:
        key = key.removeprefix(prefix)
    if key not in variants and key.replace("_", "-") in variants:
        key = key.replace("_", "-")
    if key not in variants:
        raise BadInput(f"{model} variant must be one of {', '.join(variants)}; got {variant!r}")
    return key
