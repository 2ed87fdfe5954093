"""evaluate.py, evaluation.cityscapes_eval and bench.eval_speed against cityscapesscripts' evaluation."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import bench.eval_speed as eval_bench
import evaluation.report as eval_report
from evaluation import cityscapes_eval as ce

RNG_SEED = 7
NOISE_IDS = np.array([7, 8, 11, 12, 17, 19, 20, 21, 23, 24, 25, 26, 27, 29, 32, 33], np.uint8)
# Never predicted and never in the synthetic ground truth: their IoU must be NaN.
ABSENT = ("terrain", "train")


def _official(pairs: list[tuple[str, str]], tmp_path: Path, monkeypatch) -> dict:
    """cityscapesscripts 2.3.0's evaluateImgLists on the pairs (np.in1d given back as np.isin)."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    monkeypatch.setattr(np, "in1d", np.isin, raising=False)
    monkeypatch.setattr(official.args, "exportFile", str(tmp_path / "official.json"))
    monkeypatch.setattr(official.args, "quiet", True)
    return official.evaluateImgLists([p for p, _ in pairs], [g for _, g in pairs], official.args)


def _assert_same(ours: dict, theirs: dict) -> None:
    """Every official key present and equal to 1e-9 (NaN where the official is NaN)."""
    for key in (
        "confMatrix",
        "priors",
        "labels",
        "classScores",
        "classInstScores",
        "categoryScores",
        "categoryInstScores",
        "averageScoreClasses",
        "averageScoreInstClasses",
        "averageScoreCategories",
        "averageScoreInstCategories",
    ):
        assert key in ours, key
    assert np.array_equal(np.asarray(ours["confMatrix"]), np.asarray(theirs["confMatrix"]))
    assert ours["labels"] == theirs["labels"]
    for key in ("priors", "classScores", "classInstScores", "categoryScores", "categoryInstScores"):
        assert list(ours[key]) == list(theirs[key]), key
        for name, value in theirs[key].items():
            mine = ours[key][name]
            if math.isnan(value):
                assert math.isnan(mine), (key, name, mine)
            else:
                assert mine == pytest.approx(value, abs=1e-9), (key, name)
    for key in (
        "averageScoreClasses",
        "averageScoreInstClasses",
        "averageScoreCategories",
        "averageScoreInstCategories",
    ):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key


@pytest.fixture(scope="module")
def eval_tree(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the synthetic val ground truth with more instance classes: some cars become
    trucks and a caravan (ignored in evaluation), some people riders; images are linked."""
    root = tmp_path_factory.mktemp("evaltree")
    shutil.copytree(synthetic_root / "gtFine" / "val", root / "gtFine" / "val")
    (root / "leftImg8bit").mkdir()
    (root / "leftImg8bit" / "val").symlink_to(synthetic_root / "leftImg8bit" / "val")
    relabel = {26: (27, 29), 24: (25,)}  # from label -> labels given to its 1st, 2nd instance
    for gt_path in sorted((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png")):
        inst_path = Path(ce.instance_path(gt_path))
        labels = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(inst_path), cv2.IMREAD_UNCHANGED)
        for source, targets in relabel.items():
            ids = [i for i in np.unique(inst) if i // 1000 == source and i > 1000]
            for inst_id, target in zip(ids, targets, strict=False):
                mask = inst == inst_id
                labels[mask] = target
                inst[mask] = target * 1000 + inst_id % 1000
        # an out-of-roi band (ignored in evaluation) at the top
        labels[:3] = 3
        inst[:3] = 3
        cv2.imwrite(str(gt_path), labels)
        cv2.imwrite(str(inst_path), inst)
    return root


def _noisy(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ground truth with random blocks of other ids, a void-id patch and an unlabeled corner."""
    pred = gt.copy()
    h, w = gt.shape
    for _ in range(40):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        pred[y : y + 8, x : x + 8] = rng.choice(NOISE_IDS)
    pred[-6:, :10] = 0  # predicted "unlabeled": counts as a miss, never a false positive
    pred[pred == 1] = 7  # ego vehicle (void in the ground truth) predicted as road
    return pred


@pytest.fixture(scope="module")
def predictions(eval_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noisy label-id predictions named CITY_SEQ_FRAME_pred.png."""
    folder = tmp_path_factory.mktemp("preds")
    rng = np.random.default_rng(RNG_SEED)
    for gt_path in ce.ground_truth_files(eval_tree, "val"):
        gt = cv2.imread(gt_path, cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(folder / f"{ce.frame_key(gt_path)}_pred.png"), _noisy(gt, rng))
    return folder


def test_library_matches_official(eval_tree, predictions, tmp_path, monkeypatch):
    pairs = ce.match_predictions(predictions, ce.ground_truth_files(eval_tree, "val"))
    ours = ce.evaluate_pairs(pairs, workers=2)
    theirs = _official(pairs, tmp_path, monkeypatch)
    _assert_same(ours, theirs)
    # the cases the comparison is meant to cover
    for name in ABSENT:
        assert math.isnan(theirs["classScores"][name])
    assert not math.isnan(theirs["classInstScores"]["truck"])
    assert not math.isnan(theirs["classInstScores"]["rider"])
    assert math.isnan(theirs["classScores"]["caravan"])  # ignored in evaluation
    assert sum(ours["confMatrix"][3]) > 0  # the out-of-roi band is counted in its own row
    assert json.dumps(ce.evaluate_pairs(pairs, workers=1)) == json.dumps(ours)


@pytest.mark.slow
def test_cli_matches_official_and_writes_outputs(
    eval_tree, predictions, tmp_path, monkeypatch, run_cli
):
    out = tmp_path / "out"
    done = run_cli(
        "evaluate.py",
        "--predictions",
        str(predictions),
        "-p",
        str(eval_tree),
        "--split",
        "val",
        "-r",
        str(out),
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    ours = json.loads((out / eval_report.RESULT_JSON).read_text())
    pairs = ce.match_predictions(predictions, ce.ground_truth_files(eval_tree, "val"))
    _assert_same(ours, _official(pairs, tmp_path, monkeypatch))
    report = (out / eval_report.RESULT_MARKDOWN).read_text()
    assert "| classes | IoU | nIoU |" in report and "| categories | IoU | nIoU |" in report
    assert (
        f"| car | {ours['classScores']['car']:.3f} | {ours['classInstScores']['car']:.3f} |"
        in report
    )
    assert "| terrain | nan | nan |" in report
    assert "void" not in report  # a category of ignored labels only is not listed
    plot = cv2.imread(str(out / eval_report.RESULT_PLOT))
    assert plot is not None and plot.shape[2] == 3


@pytest.mark.slow
def test_no_tensorflow_on_the_png_path(eval_tree, predictions, tmp_path):
    code = (
        "import sys, evaluate; "
        f"evaluate.main(['--predictions', {str(predictions)!r}, '-p', {str(eval_tree)!r}, "
        f"'-r', {str(tmp_path / 'o')!r}, '--no-progress', '--workers', '1']); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(ce.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_train_id_predictions(eval_tree, predictions, tmp_path, monkeypatch, run_cli):
    from cityscapesscripts.helpers.labels import labels

    to_train = np.full(256, 255, np.uint8)
    to_id = np.zeros(256, np.uint8)
    for label in labels:
        if label.id >= 0 and 0 <= label.trainId < 255:
            to_train[label.id] = label.trainId
            to_id[label.trainId] = label.id
    train_dir, back_dir = tmp_path / "train_ids", tmp_path / "back"
    train_dir.mkdir()
    back_dir.mkdir()
    for pred in sorted(predictions.glob("*.png")):
        train = to_train[cv2.imread(str(pred), cv2.IMREAD_UNCHANGED)]
        cv2.imwrite(str(train_dir / pred.name), train)
        cv2.imwrite(str(back_dir / pred.name), to_id[train])  # void (255) -> 0, unlabeled
    out = tmp_path / "out"
    done = run_cli(
        "evaluate.py",
        "--predictions",
        str(train_dir),
        "-p",
        str(eval_tree),
        "--train-ids",
        "-r",
        str(out),
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    pairs = ce.match_predictions(back_dir, ce.ground_truth_files(eval_tree, "val"))
    _assert_same(
        json.loads((out / eval_report.RESULT_JSON).read_text()),
        _official(pairs, tmp_path, monkeypatch),
    )


def test_predict_results_folder_and_palette_png(eval_tree, predictions, tmp_path, monkeypatch):
    """A predict.py results folder (labelIds/ inside) and a palette PNG are read as intended."""
    from PIL import Image

    folder = tmp_path / "predict_out"
    (folder / "labelIds").mkdir(parents=True)
    (folder / "color").mkdir()
    for pred in sorted(predictions.glob("*.png")):
        image = Image.fromarray(cv2.imread(str(pred), cv2.IMREAD_UNCHANGED)).convert("P")
        image.save(folder / "labelIds" / pred.name)
        shutil.copy(pred, folder / "color" / pred.name)  # would be a second match if searched
    pairs = ce.match_predictions(folder, ce.ground_truth_files(eval_tree, "val"))
    assert all("/labelIds/" in p for p, _ in pairs)
    _assert_same(ce.evaluate_pairs(pairs, workers=1), _official(pairs, tmp_path, monkeypatch))


@pytest.mark.slow
def test_model_path(eval_tree, tmp_path, run_cli):
    import keras

    from models import build_model

    weights = tmp_path / "m.weights.h5"
    build_model("separable_unet", (64, 128, 3)).save_weights(weights)
    keras.backend.clear_session()
    out = tmp_path / "out"
    done = run_cli(
        "evaluate.py",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        "64,128",
        "-p",
        str(eval_tree),
        "-r",
        str(out),
        "--batch",
        "2",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / eval_report.RESULT_JSON).read_text())
    gts = ce.ground_truth_files(eval_tree, "val")
    assert np.asarray(result["confMatrix"]).sum() == len(gts) * 128 * 256  # at full size
    assert 0.0 <= result["averageScoreClasses"] <= 1.0


def _bad(
    tmp_path: Path, predictions: Path, eval_tree: Path, run_cli, change, *extra: str
) -> tuple[str, Path]:
    """Copy the predictions, apply `change(folder)`, run evaluate.py: exit 2 with one line."""
    folder = tmp_path / "bad"
    shutil.copytree(predictions, folder)
    culprit = change(folder)
    out = tmp_path / "out"
    done = run_cli(
        "evaluate.py",
        "--predictions",
        str(folder),
        "-p",
        str(eval_tree),
        "-r",
        str(out),
        "--no-progress",
        *extra,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not (out / eval_report.RESULT_JSON).exists()
    return lines[0], culprit


def _first(folder: Path) -> Path:
    return sorted(folder.glob("*.png"))[0]


def _resize(folder: Path) -> Path:
    path = _first(folder)
    cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :100])
    return path


def _three_channels(folder: Path) -> Path:
    path = _first(folder)
    gray = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), np.dstack([gray, gray, gray]))
    return path


def _unknown_ids(folder: Path) -> Path:
    path = _first(folder)
    pred = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    pred[5, 5] = 40
    cv2.imwrite(str(path), pred)
    return path


def _missing(folder: Path) -> Path:
    path = _first(folder)
    path.unlink()
    return path


def _extra(folder: Path) -> Path:
    path = folder / "synthville_999999_000019_pred.png"
    shutil.copy(_first(folder), path)
    return path


def _empty(folder: Path) -> Path:
    for path in folder.glob("*.png"):
        path.unlink()
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, expected",
    [
        (_resize, "ground truth"),
        (_three_channels, "channels"),
        (_unknown_ids, "[40]"),
        (_missing, "no prediction for ground truth"),
        (_extra, "matches no ground-truth file"),
        (_empty, "holds no PNG files"),
    ],
)
def test_bad_predictions(change, expected, tmp_path, predictions, eval_tree, run_cli):
    line, culprit = _bad(tmp_path, predictions, eval_tree, run_cli, change)
    assert expected in line
    name = f"{ce.frame_key(culprit)}_gtFine_labelIds.png" if change is _missing else culprit.name
    assert name in line, line


@pytest.mark.slow
def test_bad_train_ids(tmp_path, predictions, eval_tree, run_cli):
    line, culprit = _bad(tmp_path, predictions, eval_tree, run_cli, _unknown_ids, "--train-ids")
    assert culprit.name in line and "train ids" in line


def test_official_helpers(eval_tree, predictions, tmp_path):
    pairs = ce.match_predictions(predictions, ce.ground_truth_files(eval_tree, "val"))
    had = hasattr(np, "in1d")
    theirs = ce.run_official(pairs, tmp_path / "o.json")
    assert hasattr(np, "in1d") == had  # given back only for the call
    assert eval_bench._max_abs_difference(ce.evaluate_pairs(pairs, workers=1), theirs) <= 1e-9
    assert eval_bench.decode_ceiling(pairs, workers=1) > 0


@pytest.mark.slow
def test_benchmark_evaluation(eval_tree, tmp_path):
    result = eval_bench.benchmark_evaluation(eval_tree, num_files=2, workers=1, work_dir=tmp_path)
    assert result["num_files"] == 2 and result["size"] == "128x256"
    assert result["max_abs_difference"] <= 1e-9
    for key in (
        "ours_s",
        "official_s",
        "ceiling_s",
        "ours_cpu_s",
        "official_cpu_s",
        "ceiling_cpu_s",
        "speedup",
        "ceiling_share",
        "speedup_bound",
    ):
        assert result[key] > 0, key
    page = eval_bench.speed_markdown(result)
    assert "speed-up over the official script" in page and "decode ceiling" in page
    with pytest.raises(ValueError, match="fewer than"):
        eval_bench.benchmark_evaluation(eval_tree, num_files=50, work_dir=tmp_path)


def test_confusion_plot_colours_cells_by_row_share(tmp_path):
    tables = ce.label_tables()
    cm = np.zeros((tables.num_ids, tables.num_ids), np.int64)
    evaluated = [i for i in tables.eval_ids if not tables.ignored[i]]
    terrain = tables.names.index("terrain")
    for i in evaluated:
        if i != terrain:  # terrain is absent from the ground truth: a grey row
            cm[i, i] = 1000
    path = tmp_path / "cm.png"
    eval_report.plot_confusion(
        {"confMatrix": cm.tolist()}, path, title="x" * 500
    )  # long title: cut
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    dark = np.all(rgb == (8, 48, 107), axis=2).sum()  # 100% cells: the end of the ramp
    grey = np.all(rgb == (200, 200, 200), axis=2).sum()
    cell = dark / (len(evaluated) - 1)
    assert 600 < cell <= 34 * 34  # one 34x34 cell per class, less its white "100"
    # The whole terrain row (19 classes + void column), give or take anti-aliased text pixels.
    assert abs(grey - 20 * 34 * 34) < 400
    assert not list(tmp_path.glob(".*"))  # written atomically, no temporary left


def test_no_source_names_every_choice(capsys):
    import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--synthetic"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    for option in ("--predictions", "-m MODEL", "--onnx FILE"):
        assert option in error, error


def test_default_results_folder_is_under_runs(eval_tree, predictions, tmp_path, monkeypatch):
    """evaluate.py without -r writes into runs/evaluation of the working folder, not results/."""
    import evaluate

    monkeypatch.chdir(tmp_path)
    evaluate.main(["--predictions", str(predictions), "-p", str(eval_tree), "--workers", "1"])
    assert (tmp_path / "runs" / "evaluation" / eval_report.RESULT_JSON).is_file()
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """separable_unet exported at 64x128 (random weights): its metadata names the model."""
    import keras

    from deploy.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx("separable_unet", path, input_size=(64, 128), batch=1)
    keras.backend.clear_session()
    return path


def test_segmenter_reads_the_model_from_onnx_metadata(tiny_onnx):
    from inference.segmenter import Segmenter

    segmenter = Segmenter(None, onnx=tiny_onnx)
    assert segmenter.name == "separable_unet" and segmenter.input_size == (64, 128)
    with pytest.raises(ValueError, match="exported from model 'separable_unet'"):
        Segmenter("fastscnn", onnx=tiny_onnx)


@pytest.mark.slow
def test_onnx_without_model_name(eval_tree, tiny_onnx, tmp_path, run_cli):
    out = tmp_path / "out"
    done = run_cli(
        "evaluate.py", "--onnx", str(tiny_onnx), "-p", str(eval_tree), "-r", str(out),
        "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"model separable_unet ({tiny_onnx})" in done.stdout
    result = json.loads((out / eval_report.RESULT_JSON).read_text())
    assert np.asarray(result["confMatrix"]).sum() > 0


@pytest.mark.slow
def test_onnx_of_another_size_or_model_is_one_line(tiny_onnx, tmp_path, run_cli):
    """Issue 16: an ONNX file of another size or model names the expected and the found ones,
    in predict.py and evaluate.py alike, exit status 2."""
    import cv2

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((64, 128, 3), np.uint8))
    size = f"error: ONNX file {str(tiny_onnx)!r} takes 64x128 images; got -t 128,256"
    model = f"ONNX file {str(tiny_onnx)!r} was exported from model 'separable_unet'"
    onnx, photo = ["--onnx", str(tiny_onnx)], ["--input", str(image)]
    runs = [
        (["evaluate.py", *onnx, "-t", "128,256", "--synthetic"], size),
        (["predict.py", "-m", "separable_unet", *onnx, "-t", "128,256", *photo], size),
        (["predict.py", "-m", "fastscnn", *onnx, *photo], model),
    ]
    for k, (argv, want) in enumerate(runs):
        done = run_cli(*argv, "-r", str(tmp_path / f"out{k}"), "--no-progress")
        assert done.returncode == 2, done.stderr
        assert len(done.error_lines) == 1 and want in done.error_lines[0], done.stderr
