"""The settings of a training run, checked once when they are made, and how train.py's options
and a model's recipe make them (`TrainConfig.from_recipe`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from models import get_info
from models.info import LOSSES
from models.layers import check_input_size
from models.options import model_options
from utils.errors import BadInput
from utils.labels import DEFAULT_CLASS_SET, get_class_set


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs (train.py fills it from the command line and the recipe).

    `batch_size` is per replica; the global batch is batch_size x replicas. `learning_rate`,
    `min_lr` and `max_lr` are multiplied by the number of replicas when `lr_scaling` is "linear"
    (the rates are given for one replica's batch).

    The model name, the input size, the batch size and the epochs are checked once, here, when
    the config is made (BadInput naming the value): before anything is built or written.
    """

    model: str
    input_size: tuple[int, int]
    batch_size: int
    epochs: int
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float | None = 0.9
    weight_decay: float = 0.0
    schedule: str = "polynomial"
    power: float = 0.9
    min_lr: float | None = None
    max_lr: float | None = None
    cycle: int | None = None
    warmup_epochs: float = 0.0
    lr_scaling: str = "linear"
    mixed_precision: bool = False
    xla: bool = False
    seed: int = 0
    output_dir: str = "runs"
    val_every: int = 1
    class_weights: list[float] | None = None
    freeze_backbone: bool = False
    weights: str | None = None
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps_per_epoch: int | None = None
    resume: str | None = None
    coarse: bool = False
    skip_bad: bool = False
    #: The class set trained (--classes, utils.labels.CLASS_SETS): the label ids map onto its
    #: classes, and the model has one output per class (`num_classes`).
    classes: str = "cityscapes19"
    #: Batch-norm momentum for every BatchNormalization layer (None: the model's, ModelInfo).
    bn_momentum: float | None = None
    #: Batch-norm statistics over the global batch (all replicas) while training, as PyTorch's
    #: SyncBatchNorm; off: each replica normalises over its own images.
    sync_bn: bool = False
    #: Training images whose batch statistics re-estimate the moving statistics before each
    #: validation and checkpoint (training.precise_bn); 0 turns precise batch norm off.
    precise_bn: int = 256
    #: In a job log (standard output not a terminal), a progress line every this many steps
    #: besides the one per epoch (0: per epoch only).
    log_every: int = 0
    #: Loss of the main output: "ce" or "ohem" (train.py --loss; default: the recipe's).
    loss: str = "ce"
    #: OHEM: keep the pixels whose predicted probability of their true class is below this...
    ohem_thresh: float = 0.9
    #: ... and at least this many of each replica's pixels (the hardest; the references'
    #: 131072 is per GPU, for 6 crops of 1024x1024: about 2% of them).
    ohem_min_kept: int = 131072

    @classmethod
    def from_recipe(cls, args: argparse.Namespace) -> TrainConfig:
        """The run's settings from train.py's options (`args`, its parsed command line): each
        option left out (None) takes the value of the model's recipe
        (`models.get_info(args.model).recipe`); the OHEM settings apply to --loss ohem only.

        Checks the rates, the class-weights file, the model, the input size, the batch and the
        epochs (BadInput naming the option) before anything is built or written.
        """
        recipe = get_info(args.model).recipe
        classes = args.classes or DEFAULT_CLASS_SET
        _check_rates(args)
        loss = args.loss or recipe.loss
        ohem = {"ohem_thresh": args.ohem_thresh, "ohem_min_kept": args.ohem_min_kept}
        ohem = {key: value for key, value in ohem.items() if value is not None}
        if ohem and loss != "ohem":
            option = "--" + next(iter(ohem)).replace("_", "-")
            raise BadInput(
                f"{option} applies to --loss ohem only, and the loss of this run is {loss!r}; "
                "add --loss ohem or drop it"
            )
        if loss == "ohem":  # the recipe's OHEM settings where no option gives them
            ohem = {
                "ohem_thresh": recipe.ohem_thresh,
                "ohem_min_kept": recipe.ohem_min_kept,
                **ohem,
            }
        return cls(
            model=args.model,
            input_size=tuple(args.target_size) if args.target_size else tuple(recipe.crop_size),
            batch_size=args.batch or recipe.batch_size,
            epochs=args.epochs or recipe.epochs,
            optimizer=args.optimizer or recipe.optimizer,
            learning_rate=args.learning_rate or recipe.learning_rate,
            momentum=args.momentum if args.momentum is not None else recipe.momentum,
            weight_decay=(
                args.weight_decay if args.weight_decay is not None else recipe.weight_decay
            ),
            schedule=args.schedule or recipe.schedule,
            power=args.power if args.power is not None else recipe.power,
            min_lr=args.min_lr,
            max_lr=args.max_lr,
            cycle=args.cycle,
            warmup_epochs=args.warmup_epochs,
            lr_scaling=args.lr_scaling,
            mixed_precision=args.mixed_precision,
            xla=args.xla,
            seed=args.seed,
            output_dir=str(args.output_dir or Path("runs") / args.model),
            val_every=args.val_every,
            class_weights=_class_weights(args.class_weights, get_class_set(classes).num_classes),
            freeze_backbone=args.freeze_backbone,
            weights=args.weights,
            model_options=model_options(args),
            steps_per_epoch=args.steps_per_epoch,
            resume=args.resume,
            coarse=args.coarse,
            skip_bad=args.skip_bad,
            classes=classes,
            bn_momentum=args.bn_momentum,
            sync_bn=args.sync_bn,
            precise_bn=args.precise_bn,
            log_every=args.log_every,
            loss=loss,
            **ohem,
        )

    @property
    def num_classes(self) -> int:
        """Outputs of the model: the classes of `classes` (19, 7 or 20)."""
        return get_class_set(self.classes).num_classes

    def __post_init__(self) -> None:
        get_class_set(self.classes)  # BadInput naming it
        self.input_size = tuple(self.input_size)
        height, width = self.input_size
        check_input_size(self.model, height, width, get_info(self.model).size_multiple)
        if self.batch_size < 1 or self.epochs < 1:
            raise BadInput(
                f"batch size and epochs must be >= 1, got {self.batch_size!r} and {self.epochs!r}"
            )
        if self.bn_momentum is not None and not 0.0 <= self.bn_momentum < 1.0:
            raise BadInput(
                f"batch-norm momentum must be in [0, 1), got {self.bn_momentum!r} (--bn-momentum)"
            )
        if self.log_every < 0:
            raise BadInput(f"--log-every takes a number of steps >= 0, got {self.log_every!r}")
        if self.precise_bn < 0:
            raise BadInput(f"--precise-bn takes a number of images >= 0, got {self.precise_bn!r}")
        if self.loss not in LOSSES:
            raise BadInput(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0.0 < self.ohem_thresh <= 1.0:
            raise BadInput(f"--ohem-thresh must be in (0, 1], got {self.ohem_thresh!r}")
        if isinstance(self.ohem_min_kept, bool) or not isinstance(self.ohem_min_kept, int):
            raise BadInput(f"--ohem-min-kept must be a whole number, got {self.ohem_min_kept!r}")
        if self.ohem_min_kept < 1:
            raise BadInput(f"--ohem-min-kept must be >= 1, got {self.ohem_min_kept!r}")


def _class_weights(path: str | None, count: int = 19) -> list[float] | None:
    """Read --class-weights; BadInput naming the file if it is not `count` (the class set's
    classes) non-negative numbers."""
    if path is None:
        return None
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(
            f"cannot read class weights {path!r} ({exc}); pass a JSON file "
            f"holding a list of {count} numbers"
        ) from None
    if (
        not isinstance(values, list)
        or len(values) != count
        or not all(isinstance(v, (int, float)) and v >= 0 for v in values)
    ):
        raise BadInput(
            f"class weights {path!r} must be a JSON list of {count} numbers >= 0 (one per "
            "class of --classes)"
        )
    return [float(v) for v in values]


def _check_rates(args: argparse.Namespace) -> None:
    """The bad-input checks on the rates of train.py's options (before anything is built)."""
    for name in ("learning_rate", "min_lr", "max_lr"):
        value = getattr(args, name)
        if value is not None and value < 0:
            flag = {"learning_rate": "-l/--learning-rate"}.get(name, "--" + name.replace("_", "-"))
            raise BadInput(f"{flag} must be >= 0, got {value!r}")
    if args.learning_rate is not None and args.learning_rate == 0:
        raise BadInput("-l/--learning-rate must be > 0, got 0.0")
    if args.min_lr is not None and args.max_lr is not None and args.min_lr > args.max_lr:
        raise BadInput(f"--min-lr {args.min_lr!r} is above --max-lr {args.max_lr!r}; swap them")
    if args.momentum is not None and not 0 <= args.momentum < 1:
        raise BadInput(f"--momentum must be in [0, 1), got {args.momentum!r}")
    if args.power is not None and args.power <= 0:
        raise BadInput(f"--power must be > 0, got {args.power!r}")
