"""predict.py: every output, at the photo's size, in the palette, with the server's names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.labels import ID_TO_TRAIN_ID, TRAIN_ID_PALETTE

SIZE = "64,128"  # the model's input size; the photos are 128x256 and others


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random separable_unet weights saved as train.py would (the tool needs a file)."""
    import keras

    from models import build_model

    path = tmp_path_factory.mktemp("weights") / "separable_unet.weights.h5"
    build_model("separable_unet", (64, 128, 3)).save_weights(path)
    keras.backend.clear_session()
    return path


def _check_outputs(out: Path, name: str, height: int, width: int) -> None:
    """labelIds/color/overlay/panel of `name` exist, at (height, width), consistent palette."""
    label_ids = cv2.imread(str(out / "labelIds" / f"{name}_labelIds.png"), cv2.IMREAD_UNCHANGED)
    assert label_ids is not None and label_ids.shape == (height, width)
    assert label_ids.dtype == np.uint8
    train_ids = ID_TO_TRAIN_ID[label_ids]
    assert (train_ids < 19).all()  # only the 19 evaluated classes' label ids
    color = cv2.imread(str(out / "color" / f"{name}_color.png"))[..., ::-1]
    assert color.shape == (height, width, 3)
    np.testing.assert_array_equal(color, TRAIN_ID_PALETTE[train_ids])
    overlay = cv2.imread(str(out / "overlay" / f"{name}_overlay.png"))
    assert overlay.shape == (height, width, 3)
    panel = cv2.imread(str(out / "panel" / f"{name}_panel.png"))
    # photo | (ground truth) | prediction side by side, with a title and a legend
    assert panel is not None and panel.shape[2] == 3 and panel.shape[1] >= 2 * min(width, 100)


@pytest.fixture(scope="module")
def split_run(synthetic_root, weights, tmp_path_factory, run_cli):
    """predict.py over the synthetic val split: (results folder, completed process)."""
    out = tmp_path_factory.mktemp("split") / "out"
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        SIZE,
        "-p",
        str(synthetic_root),
        "--split",
        "val",
        "-r",
        str(out),
        "--batch",
        "2",
    )
    return out, done


@pytest.mark.slow
def test_cityscapes_split(split_run, synthetic_root, tmp_path, run_cli):
    out, done = split_run
    assert done.returncode == 0, done.stderr
    names = sorted(
        p.name[: -len("_leftImg8bit.png")]
        for p in (synthetic_root / "leftImg8bit" / "val").glob("*/*.png")
    )
    assert len(names) == 3
    for name in names:
        assert len(name.split("_")) == 3  # CITY_SEQ_FRAME, as the server matches it
        _check_outputs(out, name, 128, 256)
    assert sorted(p.name for p in out.iterdir()) == ["color", "labelIds", "overlay", "panel"]
    assert "3 images segmented" in done.stdout and "images/s" in done.stdout
    # the label-id PNGs are what evaluate.py takes
    evaluated = run_cli(
        "evaluate.py",
        "--predictions",
        str(out),
        "-p",
        str(synthetic_root),
        "-r",
        str(tmp_path / "eval"),
        "--no-progress",
    )
    assert evaluated.returncode == 0, evaluated.stderr


@pytest.mark.slow
def test_onnx_matches_keras(split_run, synthetic_root, weights, tmp_path, run_cli):
    from deploy.export import export_onnx

    keras_out, done = split_run
    assert done.returncode == 0, done.stderr
    onnx_file = tmp_path / "model.onnx"
    export_onnx("separable_unet", onnx_file, input_size=(64, 128), batch=1, weights=weights)
    out = tmp_path / "out"
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "separable_unet",
        "--onnx",
        str(onnx_file),
        "-p",
        str(synthetic_root),
        "--split",
        "val",
        "-r",
        str(out),
        "--batch",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "onnxruntime" in done.stdout
    for path in sorted((keras_out / "labelIds").iterdir()):
        ours = cv2.imread(str(out / "labelIds" / path.name), cv2.IMREAD_UNCHANGED)
        assert ours.shape == (128, 256)
        assert np.mean(ours == cv2.imread(str(path), cv2.IMREAD_UNCHANGED)) > 0.999


def _png_bytes(height: int, width: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


def test_input_passes_over_files_that_are_not_images(tmp_path):
    from inference import photos

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(_png_bytes(8, 8))
    (folder / "sub" / "B.JPEG").write_bytes(_png_bytes(8, 8))  # extensions in any case
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "meta.json").write_text("{}")
    found = photos.input_items(str(folder), skip_bad=False)
    assert [item.name for item in found.items] == ["a", "B"]
    assert sorted(p.name for p in found.passed_over) == ["meta.json", "notes.txt"]
    assert found.skipped == []
    # a folder (or glob) with no image at all names itself and the extensions it takes
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "readme.md").write_text("text")
    for spec in (str(docs), str(docs / "*")):
        with pytest.raises(ValueError, match="holds no image file") as info:
            photos.input_items(spec, skip_bad=True)
        assert str(docs) in str(info.value) and ".png" in str(info.value)


@pytest.mark.slow
def test_folder_of_other_images_skips_bad_files(weights, tmp_path, run_cli):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photos / "street_a.jpg"), rng.integers(0, 255, (100, 150, 3), np.uint8))
    cv2.imwrite(str(photos / "sub" / "b.png"), rng.integers(0, 255, (90, 200, 3), np.uint8))
    (photos / "notes.txt").write_text("not an image")  # passed over: not an image's extension
    (photos / "sub" / "fake.jpg").write_text("not an image either")  # no decoder recognises it
    (photos / "broken.png").write_bytes(_png_bytes(40, 60)[:40])  # a PNG signature, truncated
    out = tmp_path / "out"
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        SIZE,
        "--input",
        str(photos),
        "-r",
        str(out),
        "--skip-bad",
    )
    assert done.returncode == 0, done.stderr
    passed = [line for line in done.stderr.splitlines() if "passed over" in line]
    assert len(passed) == 1 and "1 file" in passed[0] and "notes.txt" in passed[0], done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, done.stderr
    for name in ("fake.jpg", "broken.png"):
        assert sum(name in line for line in warnings) == 1, done.stderr
    assert "2 images segmented (2 skipped)" in done.stdout, done.stdout
    _check_outputs(out, "street_a", 100, 150)
    _check_outputs(out, "b", 90, 200)
    assert len(list((out / "labelIds").iterdir())) == 2
    # a glob works too
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        SIZE,
        "--input",
        str(photos / "*.jpg"),
        "-r",
        str(tmp_path / "glob"),
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "glob" / "labelIds").iterdir()] == ["street_a_labelIds.png"]


@pytest.mark.slow
def test_mc_samples_uncertainty(synthetic_root, tmp_path, run_cli):
    import keras

    from models import build_model

    weights = tmp_path / "bayes.weights.h5"
    build_model("bayes_segnet", (32, 64, 3)).save_weights(weights)
    keras.backend.clear_session()
    image = next((synthetic_root / "leftImg8bit" / "val").glob("*/*.png"))
    out = tmp_path / "out"
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "bayes_segnet",
        "-w",
        str(weights),
        "-t",
        "32,64",
        "--mc-samples",
        "2",
        "--input",
        str(image),
        "-r",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    name = image.name[: -len("_leftImg8bit.png")]
    _check_outputs(out, name, 128, 256)
    heat = cv2.imread(str(out / "uncertainty" / f"{name}_uncertainty.png"))
    assert heat.shape == (128, 256, 3)
    # the ground truth beside a Cityscapes file is found for the panel
    assert (out / "panel" / f"{name}_panel.png").is_file()


def _assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_unreadable_image_stops_without_skip_bad(weights, tmp_path, run_cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.zeros((40, 60, 3), np.uint8))
    (photos / "notes.txt").write_text("not an image")  # passed over, not an error
    (photos / "fake.jpg").write_text("not an image either")
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        SIZE,
        "--input",
        str(photos),
        "-r",
        str(tmp_path / "out"),
    )
    _assert_one_line_error(done, "fake.jpg", "--skip-bad")
    assert "notes.txt" not in done.stderr.splitlines()[-1]
    assert not (tmp_path / "out" / "labelIds").exists()


@pytest.mark.slow
def test_corrupt_image_is_named(weights, tmp_path, run_cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = cv2.imencode(".png", np.zeros((40, 60, 3), np.uint8))[1].tobytes()
    (photos / "broken.png").write_bytes(good[:40])  # a PNG signature, then truncated
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        SIZE,
        "--input",
        str(photos),
        "-r",
        str(tmp_path / "out"),
    )
    _assert_one_line_error(done, "broken.png")


@pytest.mark.slow
def test_weights_of_another_model(weights, tmp_path, run_cli, synthetic_root):
    image = next((synthetic_root / "leftImg8bit" / "val").glob("*/*.png"))
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "fastscnn",
        "-w",
        str(weights),
        "-t",
        SIZE,
        "--input",
        str(image),
        "-r",
        str(tmp_path / "out"),
    )
    _assert_one_line_error(done, weights.name, "fastscnn")


@pytest.mark.slow
def test_results_folder_not_writable(weights, tmp_path, run_cli, synthetic_root):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    image = next((synthetic_root / "leftImg8bit" / "val").glob("*/*.png"))
    done = run_cli(
        "predict.py",
        "--no-progress",
        "-m",
        "separable_unet",
        "-w",
        str(weights),
        "-t",
        SIZE,
        "--input",
        str(image),
        "-r",
        str(blocker / "out"),
    )
    _assert_one_line_error(done, str(blocker / "out"))


@pytest.mark.parametrize("script", ["predict.py", "evaluate.py", "train.py"])
def test_help_is_instant_and_imports_no_tensorflow(script, repo_root):
    """--help in under a second (issue 19), without TensorFlow or Keras, listing --classes."""
    import sys

    code = (
        "import sys, time, runpy\n"
        f"sys.argv = [{script!r}, '--help']\n"
        "start = time.perf_counter()\n"
        "try:\n"
        f"    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('took', time.perf_counter() - start, 'tensorflow' in sys.modules, "
        "'keras' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[0] == "took" and float(last[1]) < 1.0, last
    assert last[2:] == ["False", "False"], last
    assert "--classes {cityscapes19,categories,rail20}" in done.stdout
