"""Checkpoints of a run folder: names, atomic saves, the last and the best, the index, resume.

One `CheckpointSaver` owns a run's folder (like timm's CheckpointSaver). Files, written by the
chief only, each atomically:
- `weights-EEE-ACC-LOSS-DATETIME.weights.h5`: the inference model's weights (main output only;
  what predict.py, evaluate.py and convert_to_onnx.py load), for the last and the best epoch;
- `weights-...-DATETIME.state/`: beside each, the training state (model with auxiliary heads,
  optimizer with its iteration counter and so the schedule position, and `meta.json` with the
  epoch, the best mIoU and the settings), which `-r FILE` and a restarted run read;
- `checkpoints.json`: which files are the last and the best (the commit point of a save).
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf

from utils.io import atomic_path, write_json

__all__ = [
    "INDEX_FILE",
    "CheckpointSaver",
    "ResumePoint",
    "find_resume_point",
    "parse_weights_name",
    "weights_name",
]

INDEX_FILE = "checkpoints.json"
WEIGHTS_SUFFIX = ".weights.h5"
STATE_SUFFIX = ".state"
_NAME_RE = re.compile(r"^weights-(\d+)-")  # the epoch; the rest may vary (the seed's dates)


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

    def find_resume(self, resume: str | os.PathLike | None) -> ResumePoint | None:
        """Where the run restarts: -r `resume` or the run already in the folder (see
        find_resume_point); the one check of both, before anything is built or written."""
        return find_resume_point(resume, self.output_dir, self.model_name)

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
        if point.weights.parent.resolve() == self.output_dir.resolve():
            self._last = point.weights.name[: -len(WEIGHTS_SUFFIX)]
            self._best = point.meta.get("best")

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

        Writes the state, then the weights, then the index; then deletes the checkpoints that
        are neither the last nor the best. `meta` (settings, optimizer step, ...) goes into
        the state's meta.json beside the epoch, the best mIoU and the epoch's `row`.
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
            for old in {self._last, self._best} - {stem, new_best, None}:
                _remove_checkpoint(self.output_dir / old)
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
    """Names of the layers stored in a Keras 3 .weights.h5 file; ValueError if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            group = f.get("layers")
            if group is None:
                raise ValueError("no 'layers' group")
            return set(group.keys())
    except (OSError, ValueError) as exc:
        raise ValueError(
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


def _read_meta(state: Path) -> dict[str, Any]:
    """meta.json of a state folder; ValueError if it is missing or corrupt."""
    try:
        return json.loads((state / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"training state {str(state)!r} is unreadable ({exc}); resume from "
            "another checkpoint or delete it"
        ) from None


def find_resume_point(
    resume: str | os.PathLike | None, output_dir: str | os.PathLike, model_name: str
) -> ResumePoint | None:
    """Resolve -r FILE and the run already in `output_dir` into where training restarts.

    A run in `output_dir` (checkpoints.json) wins over -r when it got further, so rerunning the
    command of a killed run continues it. Raises ValueError for a missing file, a file of another
    model, or an output folder holding another model's run.
    """
    points = []
    index_path = Path(output_dir) / INDEX_FILE
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            last = Path(output_dir) / index["last"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{str(index_path)!r} is corrupt ({exc}); delete it to start over "
                "or choose another --output-dir"
            ) from None
        if index.get("model") != model_name:
            raise ValueError(
                f"output folder {str(output_dir)!r} holds a run of model "
                f"{index.get('model')!r}, not {model_name!r}; choose another "
                "--output-dir"
            )
        points.append(_resume_point(last, model_name))
    if resume is not None:
        points.append(_resume_point(Path(resume), model_name))
    if not points:
        return None
    return max(points, key=lambda p: p.epoch)


def _resume_point(path: Path, model_name: str) -> ResumePoint:
    """A ResumePoint for a weights file or state folder; ValueError if it is unusable."""
    if not str(path).rstrip("/").endswith((WEIGHTS_SUFFIX, STATE_SUFFIX)):
        raise ValueError(
            f"resume file {str(path)!r} is not a .weights.h5 file; pass a "
            "weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 file written by train.py"
        )
    stem = _stem(path)
    weights = Path(str(stem) + WEIGHTS_SUFFIX)
    state = Path(str(stem) + STATE_SUFFIX)
    if not weights.is_file():
        raise ValueError(
            f"resume file {str(weights)!r} does not exist; pass a "
            "weights-*.weights.h5 file written by train.py"
        )
    if state.is_dir():
        meta = _read_meta(state)
        if meta.get("model") != model_name:
            raise ValueError(
                f"resume file {str(weights)!r} was trained as model "
                f"{meta.get('model')!r}, not {model_name!r}; pass -m "
                f"{meta.get('model')} or another file"
            )
        return ResumePoint(weights, state, int(meta["epoch"]), meta)
    epoch = parse_weights_name(weights)
    if epoch is None:
        raise ValueError(
            f"cannot tell the epoch of {str(weights)!r}: its name is not "
            "weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 and it "
            "has no .state folder beside it"
        )
    return ResumePoint(weights, None, epoch, {})


def _restore(
    point: ResumePoint, model: keras.Model, inference: keras.Model, checkpoint: tf.train.Checkpoint
) -> None:
    """Load a resume point into the model (and the optimizer when a state exists)."""
    if point.state is not None:
        try:
            checkpoint.read(str(point.state / "ckpt")).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as exc:
            raise ValueError(
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
        raise ValueError(
            f"weights file {str(point.weights)!r} is from another model or "
            f"options (layers only in the file: {extra}, only in the model: "
            f"{missing}); pass a file of the same -m and options"
        )
    try:
        inference.load_weights(str(point.weights))
    except Exception as exc:  # Keras raises several types for a mismatched or corrupt file
        raise ValueError(
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
    state = Path(str(stem) + STATE_SUFFIX)
    with _atomic_dir(state, write=chief) as tmp:
        checkpoint.write(str(tmp / "ckpt"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    if chief:
        with atomic_path(Path(str(stem) + WEIGHTS_SUFFIX), suffix=WEIGHTS_SUFFIX) as tmp:
            inference.save_weights(str(tmp))


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
