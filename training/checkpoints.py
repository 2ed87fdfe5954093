"""Checkpoints of a run folder: names, atomic saves, the last and the best, the index, resume.

One `CheckpointSaver` owns a run's folder (like timm's CheckpointSaver). Files, written by the
chief only, each atomically:
- `weights-EEE-ACC-LOSS-DATETIME.weights.h5`: the inference model's weights (main output only;
  what predict.py, evaluate.py and convert_to_onnx.py load), for the last and the best epoch;
- `weights-...-DATETIME.state/`: beside each, the training state (model with auxiliary heads,
  optimizer with its iteration counter and so the schedule position, and `meta.json` with the
  epoch, the best mIoU and the settings), which `-r FILE` and a restarted run read;
- `checkpoints.json`: which files are the last and the best (the commit point of a save);
- `last.weights.h5`, `best.weights.h5`: copies of the last and the best weights under names that
  do not change (what a script or a deployment points at), replaced atomically after the index;
- `preempted.state/`: the training state of a run stopped in the middle of an epoch by SIGTERM
  (training.preemption), with the step in its meta.json; a rerun continues from it, and the
  next epoch's checkpoint removes it. It has no weights file: last.weights.h5 stays the last
  finished epoch's, whose batch-norm statistics were re-estimated (precise batch norm).

The state's meta.json records the run's settings (`run_settings`); a rerun continues the run in
its folder only when the command's settings match them (`compare_settings`), and `-r FILE`
continues with new settings deliberately, naming the ones that changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf

from models.loading import WEIGHTS_FILE_ERRORS
from utils.errors import BadInput
from utils.io import atomic_path, write_json
from utils.labels import DEFAULT_CLASS_SET, record_class_set

__all__ = [
    "BEST_WEIGHTS",
    "INDEX_FILE",
    "LAST_WEIGHTS",
    "PREEMPTED_STATE",
    "RUN_SETTINGS",
    "CheckpointSaver",
    "ResumePoint",
    "SettingsCheck",
    "compare_settings",
    "find_resume_point",
    "parse_weights_name",
    "run_settings",
    "weights_name",
]

INDEX_FILE = "checkpoints.json"
PREEMPTED_STATE = "preempted.state"  # the state of a run stopped mid-epoch (see save_preempted)
WEIGHTS_SUFFIX = ".weights.h5"
STATE_SUFFIX = ".state"
LAST_WEIGHTS = "last" + WEIGHTS_SUFFIX  # stable names: copies of the files the index names
BEST_WEIGHTS = "best" + WEIGHTS_SUFFIX
_STABLE = {LAST_WEIGHTS: "last", BEST_WEIGHTS: "best"}  # name -> its key in the index
_NAME_RE = re.compile(r"^weights-(\d+)-")  # the epoch; the rest may vary (the seed's dates)

#: The settings a run continues with only when the command gives the same (see compare_settings),
#: each with the option that sets it. Epochs are not among them: raising -e continues a run.
#: Left out as not changing what is trained: the output folder, -r, --xla, --val-every,
#: --skip-bad, --precise-bn, --log-every, --weights (initial weights, replaced by the
#: checkpoint's) and --sync-bn (how several replicas combine their batch statistics: a run may
#: continue on another number of GPUs).
RUN_SETTINGS: dict[str, str] = {
    "model": "-m",
    "model_options": "--backbone/--output-stride/--head",
    "classes": "--classes",
    "input_size": "-t",
    "batch_size": "-b",
    "steps_per_epoch": "--steps-per-epoch",
    "optimizer": "--optimizer",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "schedule": "--schedule",
    "learning_rate": "-l",
    "min_lr": "--min-lr",
    "max_lr": "--max-lr",
    "power": "--power",
    "cycle": "--cycle",
    "warmup_epochs": "--warmup-epochs",
    "lr_scaling": "--lr-scaling",
    "data_root": "-p/--synthetic",
    "coarse": "-c",
    "class_weights": "--class-weights",
    "mixed_precision": "--mixed-precision",
    "bn_momentum": "--bn-momentum",
    "freeze_backbone": "--freeze-backbone",
    "seed": "--seed",
    "loss": "--loss",
    "ohem_thresh": "--ohem-thresh",
    "ohem_min_kept": "--ohem-min-kept",
}

#: Settings that only some schedules or optimizers read: compared when one of the two runs uses it.
_USED_WHEN = {
    "power": ("schedule", ("polynomial",)),
    "warmup_epochs": ("schedule", ("polynomial",)),
    "cycle": ("schedule", ("cyclic",)),
    "momentum": ("optimizer", ("sgd", "sgd_nesterov", "rmsprop")),  # trainer.MOMENTUM_OPTIMIZERS
}


def run_settings(config: Any, root: str | os.PathLike | None) -> dict[str, Any]:
    """The settings of a run as its meta.json records them: every TrainConfig field but -r, and
    the data root (absolute), in their JSON form (tuples as lists)."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "resume"}
    settings["data_root"] = None if root is None else str(Path(root).expanduser().resolve())
    return json.loads(json.dumps(settings, default=_json_default))


@dataclasses.dataclass
class SettingsCheck:
    """A run's recorded settings against a command's: what differs and what was not recorded."""

    changed: list[str]  # "OPTION RUN -> COMMAND", one per differing setting
    unknown: list[str]  # options of the settings the record lacks (older runs): not checked

    def __bool__(self) -> bool:
        """True when a setting differs."""
        return bool(self.changed)


def compare_settings(
    recorded: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> SettingsCheck:
    """Compare the RUN_SETTINGS of a run's record (meta.json "settings"; None when it has none)
    with those of a command (run_settings). A setting the record lacks is unknown, never a
    difference; one that only another schedule or optimizer reads is skipped."""
    recorded = recorded if isinstance(recorded, Mapping) else {}
    current = json.loads(json.dumps(dict(current), default=_json_default))
    changed, unknown = [], []
    for key, option in RUN_SETTINGS.items():
        if key in _USED_WHEN:
            selector, users = _USED_WHEN[key]
            if recorded.get(selector) not in users and current.get(selector) not in users:
                continue
        if key not in recorded:
            unknown.append(option)
        elif recorded[key] != current.get(key):
            changed.append(f"{option} {_show(recorded[key])} -> {_show(current.get(key))}")
    return SettingsCheck(changed, unknown)


def _show(value: Any) -> str:
    """A setting's value, short, for one line."""
    if value is None:
        return "(default)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        if len(value) <= 3:  # a size: 256,512
            return ",".join(f"{v:g}" for v in value)
        return f"[{', '.join(f'{v:g}' for v in value[:3])}, ... ({len(value)} values)]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_show(v)}" for k, v in value.items()) + "}"
    return str(value)


class CheckpointSaver:
    """The checkpoints of one run folder: which are the last and the best, saving and resuming.

    Every worker of a multi-worker run calls `save` (tf.distribute needs all of them to write
    the training state); only the chief (`chief=True`) keeps files, the others write into a
    throwaway folder.

    Args:
        output_dir: the run's folder.
        model_name: the models.MODELS name; a folder or file of another model is refused.
        chief: whether this process writes files.
    """

    def __init__(self, output_dir: str | os.PathLike, model_name: str, chief: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.model_name = model_name
        self.chief = chief
        self.best_miou = -1.0
        self.settings: dict[str, Any] | None = None  # the command's (run_settings), for meta.json
        self._last: str | None = None  # file stems (names without suffix) in output_dir
        self._best: str | None = None

    @property
    def last_weights(self) -> str | None:
        """Path of the last epoch's weights file, None before the first save."""
        return str(self.output_dir / (self._last + WEIGHTS_SUFFIX)) if self._last else None

    @property
    def best_weights(self) -> str | None:
        """Path of the best epoch's weights file (highest validation mIoU), None if none yet."""
        return str(self.output_dir / (self._best + WEIGHTS_SUFFIX)) if self._best else None

    def find_resume(
        self, resume: str | os.PathLike | None, settings: dict[str, Any] | None = None
    ) -> ResumePoint | None:
        """Where the run restarts: -r `resume` or the run already in the folder (see
        find_resume_point); the one check of both, before anything is built or written.
        `settings` (run_settings of the command) are checked against the run's and recorded in
        every checkpoint this saver writes (`self.settings`)."""
        self.settings = settings
        return find_resume_point(resume, self.output_dir, self.model_name, settings)

    def restore(
        self,
        point: ResumePoint,
        model: keras.Model,
        inference: keras.Model,
        checkpoint: tf.train.Checkpoint,
    ) -> None:
        """Load `point` into the model (and the optimizer when it has a state) and take over
        its best mIoU, and its last and best files when it is a checkpoint of this folder."""
        _restore(point, model, inference, checkpoint)
        self.best_miou = float(point.meta.get("best_mean_iou", -1.0))
        if point.weights.parent.resolve() != self.output_dir.resolve():
            return
        if point.step:  # preempted.state: the last and best stay those of the index
            self._last = _strip(point.meta.get("last"))
            self._best = _strip(point.meta.get("best"))
        else:
            self._last = point.weights.name[: -len(WEIGHTS_SUFFIX)]
            self._best = point.meta.get("best")

    def save_preempted(
        self, epoch: int, step: int, checkpoint: tf.train.Checkpoint, meta: dict[str, Any]
    ) -> Path:
        """Save the training state after `step` steps of epoch `epoch` + 1 (`epoch` finished
        epochs) as preempted.state/ (every worker calls it; only the chief keeps it), replacing
        an older one atomically. Returns its path."""
        target = self.output_dir / PREEMPTED_STATE
        meta = {
            "model": self.model_name,
            "epoch": epoch,
            "step_in_epoch": step,
            "best_mean_iou": self.best_miou,
            "last": None if self._last is None else self._last + WEIGHTS_SUFFIX,
            "best": self._best,
            **meta,
        }
        _save_state(target, self.chief, checkpoint, meta)
        return target

    def save(
        self,
        epoch: int,
        row: dict[str, Any],
        inference: keras.Model,
        checkpoint: tf.train.Checkpoint,
        meta: dict[str, Any],
    ) -> None:
        """Save epoch `epoch` (1-based) as the last checkpoint, and as the best if its
        validation mIoU (`row["val_mean_iou"]`, absent without validation) beats the best so far.

        Writes the state, then the weights, then the index (the commit point), then the copies
        under the stable names (last.weights.h5; best.weights.h5 when the best changed or it is
        missing); then deletes the checkpoints that are neither the last nor the best. `meta`
        (settings, optimizer step, ...) goes into the state's meta.json beside the epoch, the
        best mIoU and the epoch's `row`.
        """
        miou = row.get("val_mean_iou")
        improved = miou is not None and math.isfinite(miou) and miou > self.best_miou
        if improved:
            self.best_miou = miou
        stem = weights_name(epoch, row.get("val_pixel_accuracy"), row.get("val_loss"))
        stem = _unique_stem(self.output_dir, stem) if self.chief else stem
        new_best = stem if improved else self._best
        meta = {
            "model": self.model_name,
            "epoch": epoch,
            "best_mean_iou": self.best_miou,
            "best": new_best,
            **meta,
            "history_row": row,
        }
        _save(self.output_dir / stem, self.chief, inference, checkpoint, meta)
        if self.chief:
            write_json(
                self.output_dir / INDEX_FILE,
                {
                    "model": self.model_name,
                    "last": stem + WEIGHTS_SUFFIX,
                    "best": (new_best + WEIGHTS_SUFFIX) if new_best else None,
                    "epoch": epoch,
                    "best_mean_iou": self.best_miou,
                },
            )
            _copy_atomic(self.output_dir / (stem + WEIGHTS_SUFFIX), self.output_dir / LAST_WEIGHTS)
            best_copy = self.output_dir / BEST_WEIGHTS
            if new_best is not None and (improved or not best_copy.is_file()):
                _copy_atomic(self.output_dir / (new_best + WEIGHTS_SUFFIX), best_copy)
            for old in {self._last, self._best} - {stem, new_best, None}:
                _remove_checkpoint(self.output_dir / old)
            shutil.rmtree(self.output_dir / PREEMPTED_STATE, ignore_errors=True)
        self._last, self._best = stem, new_best


def weights_name(
    epoch: int, val_acc: float | None, val_loss: float | None, when: _dt.datetime | None = None
) -> str:
    """The seed's name: weights-[epoch]-[val-acc]-[val-loss]-[datetime] (without the suffix)."""
    when = when or _dt.datetime.now()

    def fmt(value: float | None) -> str:
        return "nan" if value is None or not math.isfinite(value) else f"{value:.4f}"

    return f"weights-{epoch:03d}-{fmt(val_acc)}-{fmt(val_loss)}-{when:%Y%m%d-%H%M%S}"


def parse_weights_name(path: str | os.PathLike) -> int | None:
    """The epoch in a weights-[epoch]-... file name, or None if the name is not of that form."""
    name = Path(path).name
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX, ".hdf5", ".h5"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    match = _NAME_RE.match(name)
    return int(match.group(1)) if match else None


def _stem(path: str | os.PathLike) -> Path:
    """A checkpoint path without its .weights.h5 / .state suffix."""
    text = str(path).rstrip("/")
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX):
        if text.endswith(suffix):
            return Path(text[: -len(suffix)])
    return Path(text)


def _unique_stem(directory: Path, stem: str) -> str:
    """`stem`, or `stem-N` if a file of that name exists already (two saves in one second)."""
    candidate, n = stem, 1
    while (directory / (candidate + WEIGHTS_SUFFIX)).exists() or (
        directory / (candidate + STATE_SUFFIX)
    ).exists():
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def _h5_layer_names(path: Path) -> set[str]:
    """Names of the layers stored in a Keras 3 .weights.h5 file; BadInput if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            group = f.get("layers")
            if group is None:
                raise ValueError("no 'layers' group")
            return set(group.keys())
    except (OSError, ValueError) as exc:
        raise BadInput(
            f"cannot read weights file {str(path)!r} ({exc}); pass a "
            "weights-*.weights.h5 file written by train.py"
        ) from None


def _weight_layer_names(model: keras.Model) -> set[str]:
    """Names of the model's top-level layers that hold weights (as a .weights.h5 stores them)."""
    return {layer.name for layer in model.layers if layer.weights}


@dataclasses.dataclass
class ResumePoint:
    """Where a run starts: a weights file, its training state (if any) and its epoch."""

    weights: Path
    state: Path | None
    epoch: int
    meta: dict[str, Any]
    #: Against the command's settings: those that changed (-r only; a rerun with changes is
    #: refused) and those the checkpoint does not record (not checked).
    check: SettingsCheck = dataclasses.field(default_factory=lambda: SettingsCheck([], []))
    #: Steps of epoch `epoch` + 1 already trained (a preempted.state; 0 at an epoch's end).
    step: int = 0

    @property
    def position(self) -> tuple[int, int]:
        """(finished epochs, steps into the next): how far the point got."""
        return self.epoch, self.step


def _read_meta(state: Path) -> dict[str, Any]:
    """meta.json of a state folder; BadInput if it is missing or corrupt."""
    try:
        return json.loads((state / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(
            f"training state {str(state)!r} is unreadable ({exc}); resume from "
            "another checkpoint or delete it"
        ) from None


def find_resume_point(
    resume: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    model_name: str,
    settings: Mapping[str, Any] | None = None,
) -> ResumePoint | None:
    """Resolve -r FILE and the run already in `output_dir` into where training restarts.

    A run in `output_dir` (checkpoints.json) wins over -r when it got further, so rerunning the
    command of a killed run continues it; it is continued only when its recorded settings match
    `settings` (run_settings of the command), as those of a rerun must. -r FILE continues
    deliberately, whatever its settings; the ones that changed are in the point's `check`.
    Raises BadInput for a missing file, a file of another model, an output folder holding
    another model's run, or a run in the folder with other settings than the command's.
    """
    folder_point = given = None
    index_path = Path(output_dir) / INDEX_FILE
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            last = Path(output_dir) / index["last"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInput(
                f"{str(index_path)!r} is corrupt ({exc}); delete it to start over "
                "or choose another --output-dir"
            ) from None
        if index.get("model") != model_name:
            raise BadInput(
                f"output folder {str(output_dir)!r} holds a run of model "
                f"{index.get('model')!r}, not {model_name!r}; choose another "
                "--output-dir"
            )
        folder_point = _resume_point(last, model_name)
    preempted = _preempted_point(Path(output_dir), model_name)
    if preempted is not None and (
        folder_point is None or preempted.position > folder_point.position
    ):
        folder_point = preempted
    if resume is not None:
        given = _resume_point(Path(resume), model_name)
    if folder_point is not None and (given is None or folder_point.position > given.position):
        point, deliberate = folder_point, False
    elif given is not None:
        point, deliberate = given, True
    else:
        return None
    if settings is not None:
        point.check = compare_settings(point.meta.get("settings"), settings)
        if point.check and not deliberate:
            raise BadInput(
                f"the run in {str(output_dir)!r} (trained to epoch {point.epoch}) has other "
                f"settings than this command (run -> command: {'; '.join(point.check.changed)}); "
                "pass --output-dir DIR to start a new run in another folder, or -r "
                f"{str(Path(output_dir) / LAST_WEIGHTS)} to continue this run deliberately "
                "with the new settings"
            )
    return point


def _resume_point(path: Path, model_name: str) -> ResumePoint:
    """A ResumePoint for a weights file or state folder; BadInput if it is unusable."""
    if path.name in _STABLE:
        path = _stable_target(path)
    if not str(path).rstrip("/").endswith((WEIGHTS_SUFFIX, STATE_SUFFIX)):
        raise BadInput(
            f"resume file {str(path)!r} is not a .weights.h5 file; pass a "
            "weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 file written by train.py"
        )
    stem = _stem(path)
    weights = Path(str(stem) + WEIGHTS_SUFFIX)
    state = Path(str(stem) + STATE_SUFFIX)
    if not weights.is_file():
        raise BadInput(
            f"resume file {str(weights)!r} does not exist; pass a "
            "weights-*.weights.h5 file written by train.py"
        )
    if state.is_dir():
        meta = _read_meta(state)
        if meta.get("model") != model_name:
            raise BadInput(
                f"resume file {str(weights)!r} was trained as model "
                f"{meta.get('model')!r}, not {model_name!r}; pass -m "
                f"{meta.get('model')} or another file"
            )
        return ResumePoint(weights, state, int(meta["epoch"]), meta)
    epoch = parse_weights_name(weights)
    if epoch is None:
        raise BadInput(
            f"cannot tell the epoch of {str(weights)!r}: its name is not "
            "weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 and it "
            "has no .state folder beside it"
        )
    return ResumePoint(weights, None, epoch, {})


def _preempted_point(output_dir: Path, model_name: str) -> ResumePoint | None:
    """The preempted.state of `output_dir` as a ResumePoint, None when there is none."""
    state = output_dir / PREEMPTED_STATE
    if not state.is_dir():
        return None
    meta = _read_meta(state)
    if meta.get("model") != model_name:
        raise BadInput(
            f"output folder {str(output_dir)!r} holds a stopped run of model "
            f"{meta.get('model')!r}, not {model_name!r}; choose another --output-dir"
        )
    try:
        epoch, step = int(meta["epoch"]), int(meta["step_in_epoch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(
            f"training state {str(state)!r} does not say where it stopped ({exc}); "
            "delete it to continue from the last finished epoch"
        ) from None
    return ResumePoint(state, state, epoch, meta, step=step)


def _strip(name: Any) -> str | None:
    """A weights file name without its suffix (None stays None)."""
    if not isinstance(name, str) or not name:
        return None
    return name[: -len(WEIGHTS_SUFFIX)] if name.endswith(WEIGHTS_SUFFIX) else name


def _stable_target(path: Path) -> Path:
    """The dated weights file that the stable name `path` (last/best.weights.h5) copies, from
    the checkpoints.json beside it; BadInput if the folder has no usable index."""
    index_path = path.parent / INDEX_FILE
    try:
        name = json.loads(index_path.read_text())[_STABLE[path.name]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(
            f"cannot tell which checkpoint {str(path)!r} is: it is a copy named in "
            f"{str(index_path)!r}, which is missing or corrupt ({exc}); pass the dated "
            "weights-[epoch]-...weights.h5 file beside it"
        ) from None
    if not isinstance(name, str) or not name:
        raise BadInput(
            f"{str(index_path)!r} names no {_STABLE[path.name]} checkpoint (no validation has "
            f"run yet); pass {LAST_WEIGHTS} or a dated weights-*.weights.h5 file"
        )
    return path.parent / name


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy `source` onto `target` through a temporary file in target's folder and a rename,
    so `target` is always a complete file (the old one or the new one)."""
    with atomic_path(target, suffix=WEIGHTS_SUFFIX) as tmp:
        shutil.copyfile(source, tmp)


def _restore(
    point: ResumePoint, model: keras.Model, inference: keras.Model, checkpoint: tf.train.Checkpoint
) -> None:
    """Load a resume point into the model (and the optimizer when a state exists)."""
    if point.state is not None:
        try:
            checkpoint.read(str(point.state / "ckpt")).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as exc:
            raise BadInput(
                f"training state {str(point.state)!r} does not fit this model or "
                f"is corrupt ({str(exc).splitlines()[0][:200]}); pass a checkpoint "
                "of the same model and options"
            ) from None
        return
    stored = _h5_layer_names(point.weights)
    expected = _weight_layer_names(inference)
    if stored != expected:
        extra = sorted(stored - expected)[:3]
        missing = sorted(expected - stored)[:3]
        raise BadInput(
            f"weights file {str(point.weights)!r} is from another model or "
            f"options (layers only in the file: {extra}, only in the model: "
            f"{missing}); pass a file of the same -m and options"
        )
    try:
        inference.load_weights(str(point.weights))
    except WEIGHTS_FILE_ERRORS as exc:  # what Keras raises for a mismatched or corrupt file
        raise BadInput(
            f"cannot load weights file {str(point.weights)!r} "
            f"({str(exc).splitlines()[0][:200]}); pass a file of the same model "
            "and options"
        ) from None


@contextlib.contextmanager
def _atomic_dir(path: Path, write: bool) -> Iterator[Path]:
    """Yield a temporary folder that becomes `path` on success (a throwaway one if not `write`)."""
    parent = path.parent if write else Path(tempfile.gettempdir())
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        if write:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save(
    stem: Path,
    chief: bool,
    inference: keras.Model,
    checkpoint: tf.train.Checkpoint,
    meta: dict[str, Any],
) -> None:
    """Write `stem`.state/ (every worker, so collectives match; only the chief keeps it) and
    `stem`.weights.h5 (chief), each atomically; the state goes first."""
    _save_state(Path(str(stem) + STATE_SUFFIX), chief, checkpoint, meta)
    if chief:
        with atomic_path(Path(str(stem) + WEIGHTS_SUFFIX), suffix=WEIGHTS_SUFFIX) as tmp:
            inference.save_weights(str(tmp))
            # the class set, for predict.py, evaluate.py and convert_to_onnx.py to check
            record_class_set(tmp, (meta.get("settings") or {}).get("classes", DEFAULT_CLASS_SET))


def _save_state(
    state: Path, chief: bool, checkpoint: tf.train.Checkpoint, meta: dict[str, Any]
) -> None:
    """Write a state folder (checkpoint and meta.json) atomically; every worker writes (so the
    collectives match), only the chief keeps it. An existing folder of that name is replaced:
    moved aside, the new one renamed into place, then the old one deleted."""
    with _atomic_dir(state, write=chief) as tmp:
        checkpoint.write(str(tmp / "ckpt"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        if chief and state.exists():
            aside = Path(
                tempfile.mkdtemp(prefix=f".{state.name}.", suffix=".old", dir=state.parent)
            )
            os.replace(state, aside / state.name)
        else:
            aside = None
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _remove_checkpoint(stem: Path) -> None:
    """Delete a superseded weights file and its state folder."""
    Path(str(stem) + WEIGHTS_SUFFIX).unlink(missing_ok=True)
    shutil.rmtree(Path(str(stem) + STATE_SUFFIX), ignore_errors=True)


def _json_default(value: Any) -> Any:
    """JSON encoder for NumPy scalars and arrays."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
