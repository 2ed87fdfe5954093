"""The settings of a training run, checked once when they are made."""

from __future__ import annotations

import dataclasses
from typing import Any

from models import get_info
from models.info import LOSSES
from models.layers import check_input_size
from utils.labels import get_class_set


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs (train.py fills it from the command line and the recipe).

    `batch_size` is per replica; the global batch is batch_size x replicas. `learning_rate`,
    `min_lr` and `max_lr` are multiplied by the number of replicas when `lr_scaling` is "linear"
    (the rates are given for one replica's batch).

    The model name, the input size, the batch size and the epochs are checked once, here, when
    the config is made (ValueError naming the value): before anything is built or written.
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

    @property
    def num_classes(self) -> int:
        """Outputs of the model: the classes of `classes` (19, 7 or 20)."""
        return get_class_set(self.classes).num_classes

    def __post_init__(self) -> None:
        get_class_set(self.classes)  # ValueError naming it
        self.input_size = tuple(self.input_size)
        height, width = self.input_size
        check_input_size(self.model, height, width, get_info(self.model).size_multiple)
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(
                f"batch size and epochs must be >= 1, got {self.batch_size!r} and {self.epochs!r}"
            )
        if self.bn_momentum is not None and not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(
                f"batch-norm momentum must be in [0, 1), got {self.bn_momentum!r} (--bn-momentum)"
            )
        if self.log_every < 0:
            raise ValueError(f"--log-every takes a number of steps >= 0, got {self.log_every!r}")
        if self.precise_bn < 0:
            raise ValueError(f"--precise-bn takes a number of images >= 0, got {self.precise_bn!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0.0 < self.ohem_thresh <= 1.0:
            raise ValueError(f"--ohem-thresh must be in (0, 1], got {self.ohem_thresh!r}")
        if isinstance(self.ohem_min_kept, bool) or not isinstance(self.ohem_min_kept, int):
            raise ValueError(f"--ohem-min-kept must be a whole number, got {self.ohem_min_kept!r}")
        if self.ohem_min_kept < 1:
            raise ValueError(f"--ohem-min-kept must be >= 1, got {self.ohem_min_kept!r}")
