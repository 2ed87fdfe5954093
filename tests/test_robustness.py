"""evaluate.py -m with --corruptions and the calibration figures of every model run, end to end
on a small synthetic tree: the files, their keys, and their numbers against independent runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.corruptions import corrupt, corruption_seed
from evaluation import cityscapes_eval as ce
from utils.labels import CLASS_NAMES, ID_TO_TRAIN_ID

SIZE = (64, 128)  # the model's input size; the synthetic photos are 128x256
SEED = 4  # --corruption-seed
CORRUPTIONS = ("gaussian_noise", "fog")
SEVERITIES = (1, 3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random but fixed separable_unet weights (a model that predicts several classes)."""
    import keras

    from models import build_model

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("weights") / "separable_unet.weights.h5"
    build_model("separable_unet", (*SIZE, 3)).save_weights(path)
    keras.backend.clear_session()
    return path


def _evaluate(run_cli, weights: Path, root: Path, out: Path, *extra: str):
    done = run_cli(
        "evaluate.py",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        f"{SIZE[0]},{SIZE[1]}",
        "-p",
        str(root),
        "-r",
        str(out),
        "--no-progress",
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def robust_run(synthetic_root, weights, tmp_path_factory, run_cli) -> Path:
    """evaluate.py with two corruptions at two severities: its results folder."""
    out = tmp_path_factory.mktemp("robust") / "out"
    _evaluate(
        run_cli,
        weights,
        synthetic_root,
        out,
        "--corruptions",
        *CORRUPTIONS,
        "--severities",
        ",".join(str(s) for s in SEVERITIES),
        "--corruption-seed",
        str(SEED),
    )
    return out


@pytest.mark.slow
def test_robustness_files_and_their_own_arithmetic(robust_run):
    for name in (
        "resultPixelLevelSemanticLabeling.json",
        "evaluation.md",
        "confusion_matrix.png",
        "calibration.json",
        "robustness.json",
        "robustness.png",
    ):
        assert (robust_run / name).is_file(), name
    summary = json.loads((robust_run / "robustness.json").read_text())
    assert set(summary) == {
        "clean_miou",
        "mean_corruption_miou",
        "relative_robustness",
        "seed",
        "severities",
        "miou",
    }
    assert summary["seed"] == SEED and summary["severities"] == list(SEVERITIES)
    assert list(summary["miou"]) == list(CORRUPTIONS)
    values = [v for by in summary["miou"].values() for v in by.values()]
    assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values)
    assert summary["mean_corruption_miou"] == pytest.approx(sum(values) / 4, abs=1e-12)
    official = json.loads((robust_run / "resultPixelLevelSemanticLabeling.json").read_text())
    assert summary["clean_miou"] == official["averageScoreClasses"]
    assert summary["relative_robustness"] == pytest.approx(
        summary["mean_corruption_miou"] / summary["clean_miou"], abs=1e-12
    )
    report = (robust_run / "evaluation.md").read_text()
    assert "## Robustness to corruptions" in report and "| gaussian_noise |" in report
    assert "## Calibration and safety classes" in report
    plot = cv2.imread(str(robust_run / "robustness.png"))
    assert plot is not None and plot.shape[2] == 3


@pytest.mark.slow
def test_corruption_miou_equals_a_plain_run_on_images_corrupted_on_disk(
    robust_run, synthetic_root, weights, tmp_path, run_cli
):
    """gaussian_noise at severity 3, written to disk as PNG (lossless) with the seeds of
    --corruption-seed 4, then scored by a plain evaluate.py run: the same mIoU."""
    name, severity = "gaussian_noise", 3
    root = tmp_path / "corrupted"
    (root / "gtFine").mkdir(parents=True)
    (root / "gtFine" / "val").symlink_to(synthetic_root / "gtFine" / "val")
    for index, gt in enumerate(ce.ground_truth_files(synthetic_root, "val")):
        image = ce.image_path(gt)
        photo = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        bad = corrupt(photo, name, severity, corruption_seed(SEED, index, name, severity))
        target = root / "leftImg8bit" / "val" / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(target), cv2.cvtColor(bad, cv2.COLOR_RGB2BGR))
    out = tmp_path / "plain"
    _evaluate(run_cli, weights, root, out)
    plain = json.loads((out / "resultPixelLevelSemanticLabeling.json").read_text())
    summary = json.loads((robust_run / "robustness.json").read_text())
    assert summary["miou"][name][str(severity)] == pytest.approx(
        plain["averageScoreClasses"], abs=1e-12
    )
    assert not (out / "robustness.json").exists()  # no --corruptions: no robustness file


@pytest.mark.slow
def test_calibration_file_matches_calibration_of_the_same_probabilities(
    robust_run, synthetic_root, weights
):
    """ECE from the segmenter's probabilities at full resolution, recomputed here; the safety
    recall and precision from the official label-id confusion matrix of the result JSON."""
    from evaluation.calibration import Calibration
    from inference.segmenter import Segmenter

    segmenter = Segmenter("separable_unet", weights=weights, input_size=SIZE)
    calibration = Calibration(15)
    for gt_path in ce.ground_truth_files(synthetic_root, "val"):
        photo = cv2.cvtColor(cv2.imread(str(ce.image_path(gt_path))), cv2.COLOR_BGR2RGB)
        (result,) = segmenter.predict([photo], probabilities=True)
        assert result.probabilities.shape == (*photo.shape[:2], 19)
        np.testing.assert_allclose(result.probabilities.sum(-1), 1.0, atol=1e-5)
        # the prediction is a most probable class (softmax may round near-equal logits to ties)
        chosen = np.take_along_axis(result.probabilities, result.train_ids[..., None], -1)
        assert (chosen[..., 0] >= result.probabilities.max(-1) - 1e-6).all()
        gt = cv2.imread(gt_path, cv2.IMREAD_UNCHANGED)
        calibration.update(result.probabilities, ID_TO_TRAIN_ID[gt], result.train_ids)
    saved = json.loads((robust_run / "calibration.json").read_text())
    assert saved["bins"] == 15 and saved["mc"] is None
    assert saved["ece"] == pytest.approx(calibration.ece(), abs=1e-9)
    official = json.loads((robust_run / "resultPixelLevelSemanticLabeling.json").read_text())
    cm = np.asarray(official["confMatrix"])
    tables = ce.label_tables()
    evaluated = [i for i in tables.eval_ids if not tables.ignored[i]]
    for name, scores in saved["safety"].items():
        label = tables.names.index(name)
        hit, truth = cm[label, label], cm[label].sum()
        predicted = cm[evaluated, label].sum()  # predicted as it, on scored ground truth
        assert scores["recall"] == (None if truth == 0 else pytest.approx(hit / truth)), name
        expected = None if predicted == 0 else pytest.approx(hit / predicted)
        assert scores["precision"] == expected, name
    assert set(saved["safety"]) <= set(CLASS_NAMES)
    recalls = [s["recall"] for s in saved["safety"].values() if s["recall"] is not None]
    assert saved["safety_mean_recall"] == pytest.approx(float(np.mean(recalls)))
    assert not math.isnan(saved["ece"])


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--corruptions", "smoke"], "invalid choice: 'smoke'"),
        (["--corruptions", "--severities", "0,2"], "severities 1-5"),
        (["--corruptions", "fog", "--severities", "6"], "severities 1-5"),
    ],
)
def test_bad_corruption_arguments(extra, expected, run_cli):
    done = run_cli("evaluate.py", "-m", "separable_unet", "-w", "x.weights.h5", *extra)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.error_lines and expected in done.error_lines[0], done.stderr


def test_corruptions_need_a_model(tmp_path, run_cli):
    done = run_cli("evaluate.py", "--predictions", str(tmp_path), "--corruptions", "fog")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--corruptions runs the model" in done.error_lines[0]
