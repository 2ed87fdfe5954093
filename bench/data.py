"""The data benchmark: training-pipeline images/s against decode-only ceilings on the same files.

Importing this module imports TensorFlow: scripts import it after ``utils.cli.quiet_tensorflow``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import tensorflow as tf

from datasets.augment import augment_pair
from datasets.cityscapes import Sample, find_samples, load_pair, read_image, read_label
from datasets.pipeline import bad_file_errors, build_dataset
from utils.io import read_png
from utils.labels import ID_TO_TRAIN_ID
from utils.machine import available_cores, peak_rss_mb

Rate = tuple[float, float]  #: (images/s, process CPU ms per image)


def benchmark_pipeline(
    root: str | os.PathLike,
    size: Sequence[int] = (1024, 2048),
    batch_size: int = 1,
    num_images: int = 40,
    split: str = "train",
    workers: int | None = None,
    repeats: int = 5,
) -> dict[str, Any]:
    """Training-pipeline images/s against the decode-only ceiling on the same files and cores.

    The ceiling decodes each image and label PNG (nothing else) with a pool of `workers`
    threads and the pipeline's decoder (`utils.io.read_png`; it releases the GIL). Two more
    ceilings decode the same files with OpenCV and with TensorFlow's decoder in tf.data, for
    comparison. The pipeline is build_dataset(training=True) at `size` with `workers` parallel
    calls: two warm-up batches, then `num_images` timed images, read to the end (an iterator
    dropped while its Python calls are in flight can deadlock on the GIL). Files are cycled if
    the split has fewer. The four are measured in turn `repeats` times and the fastest of each
    is reported (the machine may be shared), with every run listed, and the process CPU time
    per image of the fastest run. A one-thread breakdown (decode, label check, augmentation)
    shows where the pipeline's time beyond decoding goes.

    Every file read is checked first (`check_files`): a bad one raises BadFileError naming it
    before any timing (TensorFlow's decoder, the third ceiling, would fail without the name).
    """
    workers = workers or available_cores()
    samples = find_samples(root, split)
    files = [samples[i % len(samples)] for i in range(num_images)]
    check_files(samples[:num_images], workers)
    tf_decoded = _tf_decoded(files, workers)
    runs: dict[str, list[Rate]] = {"ceiling": [], "opencv": [], "tf": [], "pipeline": []}
    for _ in range(max(1, repeats)):
        runs["ceiling"].append(_threaded(_decode, files, workers))
        runs["opencv"].append(_threaded(_cv2_decode, files, workers))
        runs["tf"].append(_tf_ceiling(tf_decoded, workers, num_images))
        runs["pipeline"].append(_pipeline(files, size, batch_size, workers))
    best = {name: max(values) for name, values in runs.items()}
    return {
        "size": f"{int(size[0])}x{int(size[1])}",
        "batch_size": batch_size,
        "images": num_images,
        "workers": workers,
        "repeats": max(1, repeats),
        "decode_ceiling_images_per_s": best["ceiling"][0],
        "pipeline_images_per_s": best["pipeline"][0],
        "share_of_ceiling": best["pipeline"][0] / best["ceiling"][0],
        "opencv_decode_ceiling_images_per_s": best["opencv"][0],
        "share_of_opencv_decode_ceiling": best["pipeline"][0] / best["opencv"][0],
        "tf_decode_ceiling_images_per_s": best["tf"][0],
        "share_of_tf_decode_ceiling": best["pipeline"][0] / best["tf"][0],
        "all_runs_images_per_s": "; ".join(
            f"{name} " + " / ".join(f"{v[0]:.1f}" for v in values) for name, values in runs.items()
        ),
        "decode_ceiling_cpu_ms_per_image": best["ceiling"][1],
        "pipeline_cpu_ms_per_image": best["pipeline"][1],
        **stage_times(files, size),
        "peak_rss_mb": peak_rss_mb(),
    }


def check_files(samples: Sequence[Sample], workers: int) -> None:
    """Decode and check every image and label (`load_pair`, in `workers` threads); BadFileError
    naming the first bad file."""
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(load_pair, samples):
            pass


def stage_times(files: Sequence[Sample], size: Sequence[int]) -> dict[str, float]:
    """Mean ms per image of the pipeline's steps on one thread: image decode, label decode and
    check, augmentation (`augment_pair` with the pipeline's settings)."""
    crop = (int(size[0]), int(size[1]))
    totals = {"image": 0.0, "label": 0.0, "augment": 0.0}
    for seed, sample in enumerate(files):
        t0 = time.perf_counter()
        image = read_image(sample.image)
        t1 = time.perf_counter()
        label = read_label(sample, map_ids=False)  # as the pipeline: ids mapped after cropping
        t2 = time.perf_counter()
        lut = None if sample.train_ids else ID_TO_TRAIN_ID
        augment_pair(image, label, crop, seed, label_lut=lut, overwrite=True)
        t3 = time.perf_counter()
        totals["image"] += t1 - t0
        totals["label"] += t2 - t1
        totals["augment"] += t3 - t2
    return {f"{name}_ms_one_thread": 1000 * value / len(files) for name, value in totals.items()}


def _timed(run: Callable[[], Any], num_images: int) -> Rate:
    """(images/s, CPU ms per image) of `run`, which processes `num_images` images."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return num_images / wall, 1000 * cpu / num_images


def _decode(sample: Sample) -> None:
    """Decode a sample's image and label PNGs with the pipeline's decoder, nothing else."""
    read_png(sample.image)
    read_png(sample.label)


def _cv2_decode(sample: Sample) -> None:
    """Decode a sample's image and label PNGs with OpenCV."""
    cv2.imread(str(sample.image), cv2.IMREAD_COLOR_RGB)
    cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)


def _threaded(function: Callable[[Sample], None], files: Sequence[Sample], workers: int) -> Rate:
    """`function` over `files` in a pool of `workers` threads, after a warm-up over a few."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(function, files[: min(len(files), workers * 2)]))  # warm the cache
        return _timed(lambda: list(pool.map(function, files)), len(files))


def _tf_decoded(files: Sequence[Sample], workers: int) -> tf.data.Dataset:
    """The files decoded by TensorFlow's own PNG decoder in tf.data, for comparison (in tf.data
    a corrupt file then fails without its name, so the pipeline does not use it)."""

    paths = tf.data.Dataset.from_tensor_slices(
        ([str(f.image) for f in files], [str(f.label) for f in files])
    )
    return paths.map(_tf_decode, num_parallel_calls=workers).prefetch(workers)


def _tf_decode(image_path: tf.Tensor, label_path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Read and decode one image and label PNG in the graph."""
    image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
    return image, tf.io.decode_png(tf.io.read_file(label_path), channels=1)


def _tf_ceiling(decoded: tf.data.Dataset, workers: int, num_images: int) -> Rate:
    """One timed pass over `decoded`, after `workers` warm-up elements."""
    for _ in decoded.take(workers):
        pass
    return _timed(lambda: [None for _ in decoded], num_images)


def _pipeline(files: Sequence[Sample], size: Sequence[int], batch_size: int, workers: int) -> Rate:
    """The training pipeline over `files` in steady state, as in training: two batches warm the
    threads and buffers, then the clock runs over the remaining images. The consumer only
    counts."""
    warm = 2 * batch_size
    cycled = [files[i % len(files)] for i in range(warm + len(files))]
    ds = build_dataset(
        cycled,
        batch_size,
        size,
        training=True,
        seed=0,
        drop_remainder=False,
        num_parallel_calls=workers,
    )
    with bad_file_errors():  # a file that went bad since check_files: named, iterator released
        batches = iter(ds)
        seen = 0
        while seen < warm:
            seen += int(next(batches)[0].shape[0])
        return _timed(lambda: [None for _ in batches], len(files))
