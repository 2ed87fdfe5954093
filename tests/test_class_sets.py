"""--classes cityscapes19|categories|rail20: the official formulas over a class set (hand-computed
cases), the synthetic rail track, the pipeline's mapping, and the rail20 round trip through
train.py, evaluate.py, predict.py and the ONNX export (with the mismatch errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluation import cityscapes_eval as ce
from utils.labels import (
    CLASS_SETS,
    TRAIN_ID_PALETTE,
    get_class_set,
    record_class_set,
    recorded_class_set,
)

SIZE = (64, 128)

# A 4x4 image: road (7), rail track (10), sidewalk (8), unlabeled (0, never scored), car (26).
GT = np.array([[7, 7, 10, 10], [7, 7, 10, 10], [8, 8, 26, 26], [0, 0, 26, 26]], np.uint8)
INSTANCES = np.where(GT == 26, 26001, GT.astype(np.uint16)).astype(np.uint16)
PRED = np.array([[7, 10, 10, 10], [7, 7, 7, 10], [8, 7, 26, 26], [26, 0, 26, 8]], np.uint8)


def _scores(pred: np.ndarray, class_set: str) -> dict:
    accumulator = ce.PixelLevelAccumulator(ce.label_tables(class_set))
    accumulator.add(ce.pair_stats(pred, GT, INSTANCES, tables=accumulator.tables))
    return accumulator.result()


def test_option_names_are_the_class_sets():
    from utils.class_options import CLASS_SET_NAMES

    assert CLASS_SET_NAMES == tuple(CLASS_SETS)


def test_palettes_and_label_ids_of_class_indices():
    np.testing.assert_array_equal(CLASS_SETS["cityscapes19"].palette, TRAIN_ID_PALETTE)
    rail = CLASS_SETS["rail20"]
    assert tuple(rail.palette[19]) == (230, 150, 140)  # rail track's colour in the label table
    ids = rail.label_ids(np.array([[0, 19], [255, 13]]))
    np.testing.assert_array_equal(ids, [[7, 10], [0, 26]])  # 255 (void) -> 0, unlabeled


def test_rail20_scores_rail_track_with_the_official_formulas():
    rail, cs19 = _scores(PRED, "rail20"), _scores(PRED, "cityscapes19")
    assert rail["classSet"] == "rail20" and cs19["classSet"] == "cityscapes19"
    # rail track: tp 3, fn 1 (predicted road), fp 1 (road predicted rail track)
    assert rail["classScores"]["rail track"] == pytest.approx(3 / 5)
    assert math.isnan(cs19["classScores"]["rail track"])  # the benchmark ignores it
    # road: tp 3, fn 1; fp the sidewalk pixel, and under rail20 also the rail-track pixel
    assert rail["classScores"]["road"] == pytest.approx(3 / 6)
    assert cs19["classScores"]["road"] == pytest.approx(3 / 5)
    assert rail["classScores"]["sidewalk"] == pytest.approx(1 / 3)
    assert rail["classScores"]["car"] == pytest.approx(3 / 4)  # the unlabeled pixel is no fp
    assert rail["averageScoreClasses"] == pytest.approx((3 / 5 + 3 / 6 + 1 / 3 + 3 / 4) / 4)
    assert cs19["averageScoreClasses"] == pytest.approx((3 / 5 + 1 / 3 + 3 / 4) / 3)


def test_categories_are_the_classes_of_the_categories_set():
    categories = get_class_set("categories")
    flat, vehicle = categories.names.index("flat"), categories.names.index("vehicle")
    pred = np.full(GT.shape, flat, np.uint8)
    pred[2, 2:] = pred[3, 2] = pred[3, 0] = vehicle
    result = _scores(categories.label_ids(pred), "categories")
    assert list(result["classScores"]) == list(categories.names)
    # flat: its 6 scored pixels all found; fp the car pixel called flat (rail track and
    # unlabeled are not scored)
    assert result["classScores"]["flat"] == pytest.approx(6 / 7)
    assert result["classScores"]["vehicle"] == pytest.approx(3 / 4)  # tp 3, fn 1
    assert math.isnan(result["classScores"]["sky"])
    assert result["averageScoreClasses"] == pytest.approx((6 / 7 + 3 / 4) / 2)
    assert result["averageScoreClasses"] == pytest.approx(result["averageScoreCategories"])
    assert not math.isnan(result["classInstScores"]["vehicle"])  # the car is an instance
    assert result["classInstScores"]["vehicle"] == result["categoryInstScores"]["vehicle"]


def test_report_and_plot_follow_the_class_set(tmp_path):
    from evaluation.report import markdown_report, plot_confusion

    result = _scores(PRED, "rail20")
    page = markdown_report(result)
    assert "| rail track | 0.600 | nan |" in page and "## Categories" in page
    path = tmp_path / "cm.png"
    plot_confusion(result, path, title="a rather long title " * 12)
    assert cv2.imread(str(path)).shape[0] > 20 * 34  # 20 rows of 34 pixels
    categories = get_class_set("categories")
    page = markdown_report(_scores(categories.label_ids(np.zeros_like(GT)), "categories"))
    assert "| flat |" in page and "## Categories" not in page  # the classes are the categories


def test_weights_files_record_their_class_set(tmp_path):
    import h5py

    path = tmp_path / "m.weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group("layers")
    assert recorded_class_set(path) is None
    record_class_set(path, "rail20")
    assert recorded_class_set(path) == "rail20"
    assert recorded_class_set(tmp_path / "m.keras") is None
    with pytest.raises(ValueError, match="unknown class set 'coco'"):
        record_class_set(path, "coco")


def test_synthetic_rail_track_covers_road_only(tmp_path):
    from datasets.synthetic import generate

    plain = generate(tmp_path / "plain", num=2, size=(96, 192), seed=3, splits=("val",))
    rail = generate(tmp_path / "rail", num=2, size=(96, 192), seed=3, splits=("val",), rail=True)
    for gt in ce.ground_truth_files(plain, "val"):
        without = cv2.imread(gt, cv2.IMREAD_UNCHANGED)
        with_rail = cv2.imread(gt.replace(str(plain), str(rail)), cv2.IMREAD_UNCHANGED)
        track = with_rail == 10
        assert track.mean() > 0.01 and not (without == 10).any()
        assert (without[track] == 7).all()  # drawn on the road, under everything else
        np.testing.assert_array_equal(with_rail[~track], without[~track])


def test_pipeline_maps_label_ids_onto_the_class_set(tmp_path):
    from datasets.cityscapes import find_samples, read_label
    from datasets.pipeline import build_dataset
    from datasets.synthetic import generate

    root = generate(tmp_path / "rail", num=2, size=(96, 192), seed=3, splits=("val",), rail=True)
    samples = find_samples(root, "val")
    rail = get_class_set("rail20")
    ds = build_dataset(samples, 2, None, training=False, label_lut=rail.from_label_ids)
    _, labels = next(iter(ds))
    for sample, label in zip(samples, np.asarray(labels), strict=True):
        ids = read_label(sample, map_ids=False)
        np.testing.assert_array_equal(label, rail.from_label_ids[ids])
        assert (label == 19).any()
    train = build_dataset(
        samples, 2, (64, 128), training=True, seed=1, label_lut=rail.from_label_ids
    )
    _, labels = next(iter(train))
    assert set(np.unique(labels)) <= set(range(20)) | {255}


@pytest.fixture(scope="module")
def rail_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasets.synthetic import generate

    root = tmp_path_factory.mktemp("rail")
    generate(root, num=2, size=(128, 256), seed=1, splits=("train", "val"), rail=True)
    return root


@pytest.fixture(scope="module")
def rail_weights(rail_root, tmp_path_factory, run_cli) -> Path:
    """train.py --classes rail20 for 2 steps: its last.weights.h5."""
    out = tmp_path_factory.mktemp("run")
    done = run_cli(
        "train.py", "-m", "separable_unet", "-p", str(rail_root), "-t", "64,128", "-b", "2",
        "-e", "1", "--steps-per-epoch", "2", "--precise-bn", "0", "--classes", "rail20",
        "--output-dir", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scores = json.loads((out / "val_scores.json").read_text())
    assert list(scores["iou"])[-1] == "rail track" and len(scores["iou"]) == 20
    return out / "last.weights.h5"


@pytest.mark.slow
def test_rail20_round_trip(rail_root, rail_weights, tmp_path, run_cli):
    from inference.segmenter import Segmenter

    assert recorded_class_set(rail_weights) == "rail20"
    segmenter = Segmenter("separable_unet", weights=rail_weights, input_size=SIZE)
    assert segmenter.class_set.name == "rail20" and segmenter.model.outputs[0].shape[-1] == 20
    common = ("-m", "separable_unet", "-w", str(rail_weights), "-t", "64,128", "-p")
    out = tmp_path / "eval"
    done = run_cli("evaluate.py", *common, str(rail_root), "-r", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "resultPixelLevelSemanticLabeling.json").read_text())
    assert result["classSet"] == "rail20" and not math.isnan(result["classScores"]["rail track"])
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["ece"] is not None and "person" in calibration["safety"]
    wrong = run_cli("evaluate.py", *common, str(rail_root), "--classes", "categories")
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "--classes rail20, not --classes categories" in wrong.error_lines[0]
    assert str(rail_weights) in wrong.error_lines[0]
    preds = tmp_path / "pred"
    done = run_cli("predict.py", *common, str(rail_root), "-r", str(preds), "--no-progress")
    assert done.returncode == 0 and "classes rail20" in done.stdout, done.stderr
    rail = get_class_set("rail20")
    for path in sorted((preds / "labelIds").glob("*.png")):
        ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(ids)) <= set(rail.to_label_ids.tolist())
        color = cv2.imread(str(preds / "color" / path.name.replace("labelIds", "color")))
        np.testing.assert_array_equal(color[..., ::-1], rail.palette[rail.from_label_ids[ids]])


@pytest.mark.slow
def test_rail20_onnx_records_its_class_set(rail_weights, tmp_path):
    import keras

    from deploy.export import export_onnx
    from inference.segmenter import Segmenter

    path = tmp_path / "rail.onnx"
    result = export_onnx("separable_unet", path, input_size=SIZE, weights=rail_weights)
    keras.backend.clear_session()
    assert result.metadata["classes"] == "rail20"
    assert Segmenter(None, onnx=path).class_set.name == "rail20"
    with pytest.raises(ValueError, match="--classes rail20, not --classes cityscapes19"):
        Segmenter(None, onnx=path, classes="cityscapes19")
