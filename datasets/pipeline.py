"""The tf.data pipeline: batches of ``(images uint8 (N, H, W, 3), train ids uint8 (N, H, W))``.

Each image is decoded (`datasets.cityscapes.load_pair`) and augmented (`datasets.augment`) in one
``tf.numpy_function`` call that tf.data runs in parallel; both steps release the GIL, so they use
every core. Images stay uint8 until they reach the model, which normalises them itself.

A bad file (`datasets.cityscapes.BadFileError`, or any BadInput of `load_pair`) is raised in a
tf.data thread and reaches the consumer as a ``tf.errors.OpError`` whose text buries the message
in a traceback; `bad_file_errors` turns it back into the reader's own BadInput, one line that
names the file, and releases the failed frames' iterators first (see `utils.cli.release_frames`).

Importing this module imports TensorFlow: scripts import it after ``utils.cli.quiet_tensorflow``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from datasets.augment import Augment, augment_pair, resize_pair
from datasets.cityscapes import BadFileError, Sample, load_pair, shard_samples, skip_bad_hint
from utils.cli import release_frames
from utils.errors import BadInput
from utils.io import reuse_freed_buffers
from utils.labels import ID_TO_TRAIN_ID
from utils.machine import available_cores

PREFETCH_BATCHES = 2  #: batches the pipeline prepares ahead of the model
log = logging.getLogger(__name__)
#: The last BadInputs the readers raised inside tf.data (what `reader_error` matches against).
_RAISED: collections.deque[BadInput] = collections.deque(maxlen=32)
#: What skip_bad has logged: each bad file once per process, however many pipelines read it.
_LOGGED: set[str] = set()
_LOCK = threading.Lock()


def reader_error(exc: BaseException) -> BadInput | None:
    """The BadInput a pipeline's reader raised for a bad file, behind the tf.errors.OpError
    `exc` that reading the pipeline gave; None when `exc` is something else."""
    if not isinstance(exc, tf.errors.OpError):
        return None
    text = str(exc.message)
    for error in reversed(list(_RAISED)):
        if str(error) in text:
            return error
    return None


@contextlib.contextmanager
def bad_file_errors(skip_bad_option: bool = False) -> Iterator[None]:
    """Around code that reads `build_dataset` pipelines: a bad file comes out as the reader's
    BadInput (BadFileError: one line naming the file and the fix), not as a tf.errors.OpError.

    The iterators held by the frames the error unwound are released before it goes on (their
    threads must not outlive them into interpreter shutdown). With `skip_bad_option` (a command
    that has --skip-bad, not given) the message ends with ", or pass --skip-bad ...".
    """
    try:
        yield
    except tf.errors.OpError as exc:
        error = reader_error(exc)
        if error is None:
            raise
        release_frames(exc)
        error = skip_bad_hint(error) if skip_bad_option else error
        raise error.with_traceback(None) from None
    except BadFileError as exc:  # read outside tf.data (e.g. the validation of a training run)
        if not skip_bad_option:
            raise
        release_frames(exc)
        raise skip_bad_hint(exc) from None


def build_dataset(
    samples: Sequence[Sample],
    batch_size: int,
    crop_size: Sequence[int] | None,
    training: bool,
    seed: int | None = None,
    cache: bool = False,
    shard: tuple[int, int] | None = None,
    stream_shard: tuple[int, int, int] | None = None,
    repeat: bool = False,
    drop_remainder: bool | None = None,
    epoch: int = 0,
    augment: Augment = Augment(),  # noqa: B008 (a frozen dataclass: immutable)
    skip_bad: bool = False,
    num_parallel_calls: int | None = None,
    skip: int = 0,
    label_lut: np.ndarray | None = None,
) -> tf.data.Dataset:
    """A tf.data pipeline of ``(images uint8 (N, H, W, 3), train ids uint8 (N, H, W))``.

    Args:
        samples: from find_samples.
        batch_size: images per batch (per worker).
        crop_size: (H, W) of the output. Training crops to it after random scaling; evaluation
            resizes to it (None keeps the files' size).
        training: shuffle and augment (scale 0.5-2.0, crop with ignore padding, flip, jitter).
        seed: makes shuffling and augmentation repeatable; None draws a fresh one.
        cache: keep decoded images in memory after the first pass (small data sets only).
        shard: (num_workers, worker_index): this worker's disjoint share of the files.
        stream_shard: (num_workers, worker_index, images per worker and step): this worker's
            share of the one stream every worker computes from all the files (the same order
            and augmentation seeds as a single process reading them): block k of that many
            images goes to worker k mod num_workers. A global step of num_workers such blocks
            then holds the images a single process would batch for that step, so the workers
            train on what one process with the same global batch would. Only the worker's own
            images are read.
        repeat: repeat forever (epoch after epoch, reshuffled).
        drop_remainder: default True when training, False otherwise.
        epoch: epoch number mixed into the seed, so epoch k of a resumed run sees the same order
            and augmentation as epoch k of an uninterrupted one.
        augment: augmentation settings.
        skip_bad: log unreadable or invalid files and leave them out instead of raising.
        num_parallel_calls: images decoded and augmented at once (default: the CPU cores this
            process may use).
        skip: leave out the first `skip` images of the stream before reading them, with their
            order and augmentation seeds unchanged (a run resumed in the middle of an epoch);
            with `skip_bad` and bad files in the skipped part, the stream is off by as many.
        label_lut: uint8[256] from label ids to the classes trained (a class set's
            ``from_label_ids``, `utils.labels.CLASS_SETS`); None: the 19 benchmark classes
            (train ids). Another table needs label-id files (``*_labelIds.png``).

    Errors in a file surface when its batch is read, as a BadInput-bearing
    tf.errors.InvalidArgumentError whose message names the file; read the pipeline inside
    `bad_file_errors` to get the BadInput itself.
    """
    if batch_size < 1:
        raise BadInput(f"batch size must be >= 1; got {batch_size!r}")
    samples = list(samples)
    if shard is not None and stream_shard is not None:
        raise ValueError("give shard (files) or stream_shard (images of one stream), not both")
    if shard is not None:
        samples = shard_samples(samples, *shard)
    if stream_shard is not None:
        workers, index, block = stream_shard
        if workers < 1 or not 0 <= index < workers or block < 1:
            raise ValueError(
                f"stream_shard must be (workers >= 1, index in [0, workers), block >= 1); "
                f"got {stream_shard!r}"
            )
    if not samples:
        raise ValueError("no samples to read (empty split or shard)")
    if training and crop_size is None:
        raise ValueError("training needs a crop size (H, W)")
    if label_lut is not None:
        label_lut = np.ascontiguousarray(label_lut, dtype=np.uint8)
        train_id_files = [sample.label for sample in samples if sample.train_ids]
        if train_id_files:
            raise BadInput(
                f"label {str(train_id_files[0])!r} holds the 19 benchmark classes' train ids, "
                "which another class set cannot be mapped from; give the label-id files "
                "(*_labelIds.png) beside it, or train the 19 classes"
            )
    crop = tuple(int(v) for v in crop_size) if crop_size is not None else None
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    parallel = num_parallel_calls or available_cores()
    reuse_freed_buffers()  # decoded and resized images reuse memory instead of faulting it in
    reader = _Reader(samples, training, crop, augment, skip_bad, label_lut)
    indices, seeds = _index_and_seed_streams(len(samples), training, seed, epoch)
    if skip < 0:
        raise ValueError(f"skip must be >= 0; got {skip!r}")
    if cache:
        ds = _cached_pairs(reader, indices, seeds, repeat, parallel, skip, stream_shard)
    else:
        ds = _decoded_pairs(reader, indices, seeds, repeat, parallel, skip, stream_shard)
    if drop_remainder is None:
        drop_remainder = training
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.with_options(_fixed_options()).prefetch(PREFETCH_BATCHES)


class _Reader:
    """The per-image work of one pipeline, in numpy (run by ``tf.numpy_function``), and the
    graph functions that call it."""

    def __init__(
        self,
        samples: Sequence[Sample],
        training: bool,
        crop: tuple[int, int] | None,
        augment: Augment,
        skip_bad: bool,
        label_lut: np.ndarray | None = None,
    ) -> None:
        self.samples = samples
        self.label_lut = label_lut  # label id -> class; None: train ids (load_pair's own)
        self.training = training
        self.crop = crop
        self.augment = augment
        self.skip_bad = skip_bad
        self.shape = list(crop) if crop is not None else [None, None]
        self._bad: set[int] = set()  # the samples skip_bad left out

    # -- numpy

    def load(self, index: np.ndarray, map_ids: bool = True) -> tuple[np.ndarray, ...]:
        """(image, label, ok) of sample `index`; with skip_bad a bad file gives 1x1 zeros and
        ok False.

        Raises the BadInput of `load_pair` (recorded for `reader_error`), and with skip_bad a
        BadInput once every sample has proved bad (a repeated pipeline would filter forever).
        """
        index = int(index)
        sample = self.samples[index]
        try:
            image, label = load_pair(sample, map_ids=map_ids and self.label_lut is None)
            if map_ids and self.label_lut is not None:
                label = cv2.LUT(label, self.label_lut)
        except BadInput as exc:
            if not self.skip_bad:
                _RAISED.append(exc)
                raise
            with _LOCK:
                self._bad.add(index)
                all_bad = len(self._bad) == len(self.samples)
                first = str(exc) not in _LOGGED
                _LOGGED.add(str(exc))
            if first:
                log.warning("skipping %s: %s", sample.name, exc)
            if all_bad:
                error = BadInput(
                    f"all {len(self.samples)} files of the data set are unreadable (the last: "
                    f"{exc}); check the dataset root"
                )
                _RAISED.append(error)
                raise error from None
            return np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8), np.bool_(False)
        return image, label, np.bool_(True)

    def transform(
        self,
        image: np.ndarray,
        label: np.ndarray,
        item_seed: np.ndarray,
        label_lut: np.ndarray | None = None,
        overwrite: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment (training) or resize (evaluation) one pair."""
        if self.training:
            return augment_pair(
                image,
                label,
                self.crop,
                int(item_seed),
                self.augment,
                label_lut,
                overwrite=overwrite,
            )
        return resize_pair(image, label, self.crop)

    def load_transform(self, index: np.ndarray, item_seed: np.ndarray) -> tuple[np.ndarray, ...]:
        """`load` then `transform` in one call: (image, label, ok)."""
        # Training maps label ids to train ids after cropping, on fewer pixels.
        raw_ids = self.training and not self.samples[int(index)].train_ids
        image, label, ok = self.load(index, map_ids=not raw_ids)
        if not ok:  # skipped with skip_bad: zero arrays of the output shape; the filter drops them
            size = self.crop or (1, 1)
            return np.zeros((*size, 3), np.uint8), np.zeros(size, np.uint8), ok
        # The freshly decoded arrays are this call's own: augmentation may work in place on them.
        lut = (ID_TO_TRAIN_ID if self.label_lut is None else self.label_lut) if raw_ids else None
        return (*self.transform(image, label, item_seed, lut, overwrite=True), ok)

    # -- graph

    def tf_load(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`load` as a dataset map function."""
        image, label, ok = tf.numpy_function(
            self.load, [index], [tf.uint8, tf.uint8, tf.bool], stateful=False
        )
        return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None]), ok

    def tf_transform(
        self, image: tf.Tensor, label: tf.Tensor, item_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`transform` as a dataset map function."""
        image, label = tf.numpy_function(
            self.transform, [image, label, item_seed], [tf.uint8, tf.uint8], stateful=False
        )
        return tf.ensure_shape(image, self.shape + [3]), tf.ensure_shape(label, self.shape)

    def tf_load_transform(self, index: tf.Tensor, item_seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """`load_transform` as a dataset map function: (image, label), plus ok with skip_bad."""
        image, label, ok = tf.numpy_function(
            self.load_transform, [index, item_seed], [tf.uint8, tf.uint8, tf.bool], stateful=False
        )
        pair = tf.ensure_shape(image, self.shape + [3]), tf.ensure_shape(label, self.shape)
        # Without skip_bad every file gives its pair or an error: no filter stage to pass.
        return (*pair, ok) if self.skip_bad else pair


def _index_and_seed_streams(
    num_samples: int, training: bool, seed: int, epoch: int
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Sample indices (shuffled every pass when training) and a stream of per-image seeds."""
    indices = tf.data.Dataset.range(num_samples)
    if training:
        indices = indices.shuffle(
            num_samples, seed=_mix(seed, epoch, 1), reshuffle_each_iteration=True
        )
    return indices, tf.data.Dataset.random(seed=_mix(seed, epoch, 2))


def _cached_pairs(
    reader: _Reader,
    indices: tf.data.Dataset,
    seeds: tf.data.Dataset,
    repeat: bool,
    parallel: int,
    skip: int = 0,
    share: tuple[int, int, int] | None = None,
) -> tf.data.Dataset:
    """Decode once and keep the decoded pairs; augment on every pass (two Python calls)."""
    ds = indices.map(reader.tf_load, num_parallel_calls=parallel, deterministic=True)
    ds = ds.filter(_is_ok).map(_drop_flag).cache()
    ds = tf.data.Dataset.zip(ds, seeds).map(_attach_seed)
    if repeat:
        ds = ds.repeat()
    ds = _own_share(ds, share)
    if skip:
        ds = ds.skip(skip)
    return ds.map(reader.tf_transform, num_parallel_calls=parallel, deterministic=True)


def _decoded_pairs(
    reader: _Reader,
    indices: tf.data.Dataset,
    seeds: tf.data.Dataset,
    repeat: bool,
    parallel: int,
    skip: int = 0,
    share: tuple[int, int, int] | None = None,
) -> tf.data.Dataset:
    """Decode and augment in one Python call: the full-size decoded arrays never become
    tensors, which saves copying them in and out of TensorFlow. Skipped images, and the other
    workers' ones, are left out before they are read."""
    ds = tf.data.Dataset.zip(indices, seeds)
    if repeat:
        ds = ds.repeat()
    ds = _own_share(ds, share)
    if skip:
        ds = ds.skip(skip)
    ds = ds.map(reader.tf_load_transform, num_parallel_calls=parallel, deterministic=True)
    if reader.skip_bad:
        ds = ds.filter(_is_ok).map(_drop_flag)
    return ds


def _own_share(ds: tf.data.Dataset, share: tuple[int, int, int] | None) -> tf.data.Dataset:
    """The elements of `ds` in this worker's blocks (see build_dataset's stream_shard)."""
    if share is None or share[0] == 1:
        return ds
    workers, index, block = (tf.constant(v, tf.int64) for v in share)

    def mine(position: tf.Tensor, _element: Any) -> tf.Tensor:
        return tf.equal((position // block) % workers, index)

    return ds.enumerate().filter(mine).map(lambda _position, element: element)


def _fixed_options() -> tf.data.Options:
    """No auto-sharding (workers take their share themselves) and no autotuner."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    # Fixed parallelism and prefetch instead of tf.data's autotuner: on 2 cores the autotuner
    # settled, in about a third of the runs, on a state where only 1.25 cores worked (31 instead
    # of 47 images/s at 1024x2048); with fixed values every run used both cores.
    options.autotune.enabled = False
    return options


def _is_ok(image: Any, label: Any, ok: Any) -> Any:
    """Filter predicate: the file decoded (only False with skip_bad)."""
    return ok


def _drop_flag(image: Any, label: Any, ok: Any) -> tuple[Any, Any]:
    """Drop the decode flag."""
    return image, label


def _attach_seed(pair: tuple[Any, Any], item_seed: Any) -> tuple[Any, Any, Any]:
    """Flatten ((image, label), seed) into (image, label, seed)."""
    return pair[0], pair[1], item_seed


def _mix(seed: int, epoch: int, stream: int) -> int:
    """A 31-bit seed derived from (seed, epoch, stream)."""
    return int(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), stream]).generate_state(1)[0]
        >> 1
    )
