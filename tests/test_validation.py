"""training.validation: the run's validation scores equal evaluate.py's for the same checkpoint."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from datasets.cityscapes import Sample
from training.validation import Validator
from utils.labels import TRAIN_ID_TO_ID


def class_from_red_model(size, num_classes: int = 19) -> keras.Model:
    """A fixed model: the prediction of a pixel is its red value (logits 10 * one-hot)."""
    inputs = keras.Input((*size, 3))
    red = keras.layers.Lambda(lambda x: x[..., 0])(inputs)
    logits = keras.layers.Lambda(lambda r: 10.0 * tf.one_hot(tf.cast(r, tf.int32), num_classes))(
        red
    )
    return keras.Model(inputs, logits)


def write_sample(folder: Path, name: str, red: np.ndarray, train_ids: np.ndarray) -> Sample:
    """An RGB PNG whose red channel is `red` and a labelIds PNG holding `train_ids`."""
    image = np.zeros((*red.shape, 3), np.uint8)
    image[..., 0] = red
    label_ids = np.where(train_ids == 255, 0, TRAIN_ID_TO_ID[np.minimum(train_ids, 18)])
    image_path = folder / f"{name}_leftImg8bit.png"
    label_path = folder / f"{name}_gtFine_labelIds.png"
    cv2.imwrite(str(image_path), image[..., ::-1])
    cv2.imwrite(str(label_path), label_ids.astype(np.uint8))
    return Sample(image_path, label_path, None, name, False)


def test_miou_from_confusion_summed_over_images(tmp_path):
    gt = np.array([[[0, 0, 1, 1], [2, 2, 255, 255]], [[0, 1, 1, 1], [2, 2, 2, 255]]], np.uint8)
    pred = np.array([[[0, 1, 1, 1], [2, 0, 0, 2]], [[0, 1, 1, 0], [2, 2, 1, 7]]], np.uint8)
    samples = [write_sample(tmp_path, f"c_000000_00000{i}", pred[i], gt[i]) for i in range(2)]
    # Model at the images' own size, one image per call: the scores are the model's.
    validator = Validator(class_from_red_model((2, 4)), (2, 4), batch=1)
    scores = validator.evaluate(samples)
    # By hand, rows ground truth / columns prediction (ignored pixels and class 7 not used):
    # class 0: gt (0,0),(0,1),(1,0) -> pred 0, 1, 0;  class 1: 5 pixels -> 1,1,1,1,0
    # class 2: 5 pixels -> 2,0,2,2,1
    cm = np.zeros((19, 19), np.int64)
    cm[0, 0], cm[0, 1] = 2, 1
    cm[1, 1], cm[1, 0] = 4, 1
    cm[2, 2], cm[2, 0], cm[2, 1] = 3, 1, 1
    np.testing.assert_array_equal(scores["confusion_matrix"], cm)
    iou = [2 / (3 + 4 - 2), 4 / (5 + 6 - 4), 3 / (5 + 3 - 3)]  # tp / (gt + pred - tp)
    assert scores["mean_iou"] == pytest.approx(np.mean(iou))
    assert scores["pixel_accuracy"] == pytest.approx(9 / 13)
    assert math.isnan(scores["iou"][5])
    # Loss: 10 * one-hot logits; a correct pixel costs log(1 + 18 e^-10), a wrong one that + 10.
    right = math.log(1 + 18 * math.exp(-10))
    assert scores["loss"] == pytest.approx((9 * right + 4 * (right + 10)) / 13, rel=1e-5)


def test_scores_at_the_ground_truths_resolution(tmp_path):
    """A model at half size is scored on every full-resolution pixel (evaluate.py's way)."""
    gt = np.zeros((8, 16), np.uint8)
    gt[:, 8:] = 1
    gt[0, 0] = 255  # one ignored pixel
    samples = [write_sample(tmp_path, "c_000000_000000", gt, gt)]
    scores = Validator(class_from_red_model((4, 8)), (4, 8)).evaluate(samples)
    # 127 labelled pixels at 8x16 (at the model's 4x8 it would be 32), all right: the halves
    # are 2x2-block aligned, so the area-downsampled red values are the classes themselves.
    cm = scores["confusion_matrix"]
    assert int(cm.sum()) == 127
    assert cm[0, 0] == 63 and cm[1, 1] == 64 and scores["mean_iou"] == 1.0


def test_bad_validation_file_fails_or_is_skipped(tmp_path):
    gt = np.zeros((2, 4), np.uint8)
    good = write_sample(tmp_path, "c_000000_000000", gt, gt)
    bad = write_sample(tmp_path, "c_000000_000001", gt, gt)
    bad.label.write_bytes(bad.label.read_bytes()[:20])
    model = class_from_red_model((2, 4))
    with pytest.raises(ValueError, match="c_000000_000001_gtFine_labelIds.png"):
        Validator(model, (2, 4)).evaluate([good, bad])
    lines = []
    scores = Validator(model, (2, 4), skip_bad=True, log=lines.append).evaluate([bad, good])
    assert int(scores["confusion_matrix"].sum()) == 8 and scores["mean_iou"] == 1.0
    assert len(lines) == 1 and "c_000000_000001" in lines[0]


@pytest.mark.parametrize("batch", [1, 2])
def test_train_validation_equals_evaluate_py(synthetic_root, tmp_path, run_cli, batch):
    """The mIoU train.py writes for its last epoch = evaluate.py's official class mIoU."""
    out = tmp_path / "run"
    common = ["-p", str(synthetic_root), "-t", "64,128"]
    done = run_cli(
        "train.py", "-m", "fastscnn", *common, "-b", str(batch), "-e", "1",
        "--steps-per-epoch", "3", "--output-dir", str(out), timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "log.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]
    index = json.loads((out / "checkpoints.json").read_text())
    scored = run_cli(
        "evaluate.py", "-m", "fastscnn", "-w", str(out / index["last"]), *common,
        "--batch", str(batch), "-r", str(tmp_path / "eval"), "--no-progress", timeout=400,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-2000:]
    official = json.loads((tmp_path / "eval" / "resultPixelLevelSemanticLabeling.json").read_text())
    assert float(row["val_mean_iou"]) == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    scores = json.loads((out / "val_scores.json").read_text())
    assert scores["mean_iou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
