"""A corrupt file stops every command with one line naming it (exit 2, promptly, every time), or
with --skip-bad is logged and left out; evaluate.py --predictions needs only gtFine.

The failure these tests guard against was intermittent: a tf.data iterator left in a traceback
kept its threads calling into Python while the interpreter shut down, so the process aborted
("terminate called without an active exception") or hung. Each command is therefore run
REPEATS times under a timeout (TF_REPEATS times for the commands that load TensorFlow, about 8 s
a run: the suite's time on 2 cores); one run per command stays in the quick loop.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import subprocess
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from datasets import cityscapes as cs
from datasets import options

REPEATS = 10
TF_REPEATS = 5
SIZE = (64, 128)
TARGET = "64,128"
#: Seconds a command may take before it counts as hung (a clean run takes under 15 s).
HANG_S = 120


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Cityscapes tree of 64x128 images: 4 train and 3 val."""
    from datasets.synthetic import generate

    root = tmp_path_factory.mktemp("tiny")
    generate(root, num=4, size=SIZE, seed=3, splits=("train",))
    generate(root, num=3, size=SIZE, seed=4, splits=("val",))
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random fastscnn weights at 64x128, saved as train.py saves them."""
    import keras

    from models import build_model

    path = tmp_path_factory.mktemp("weights") / "fastscnn.weights.h5"
    build_model("fastscnn", (*SIZE, 3)).save_weights(path)
    keras.backend.clear_session()
    return path


def _truncate(path: Path) -> Path:
    """Cut a PNG to 300 bytes (what the user did): its header survives, its data does not."""
    path.write_bytes(path.read_bytes()[:300])
    return path


def _second(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[1]


def _perfect_predictions(gt_root: Path, folder: Path) -> Path:
    """The ground truth itself as prediction PNGs named CITY_SEQ_FRAME_pred.png."""
    folder.mkdir(parents=True)
    for gt in sorted((gt_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png")):
        shutil.copy(gt, folder / gt.name.replace("_gtFine_labelIds", "_pred"))
    return folder


# ---------------------------------------------------------------------------- the commands


def _train(root: Path, out: Path, weights: Path) -> list[str]:
    return [
        "train.py", "-m", "fastscnn", "-p", str(root), "-t", TARGET, "-b", "2", "-e", "1",
        "--steps-per-epoch", "2", "--output-dir", str(out),
    ]  # fmt: skip


def _evaluate_model(root: Path, out: Path, weights: Path) -> list[str]:
    return [
        "evaluate.py", "-m", "fastscnn", "-w", str(weights), "-t", TARGET, "-p", str(root),
        "-r", str(out), "--no-progress",
    ]  # fmt: skip


def _evaluate_predictions(root: Path, out: Path, weights: Path) -> list[str]:
    preds = out.parent / "preds"
    if not preds.exists():
        _perfect_predictions(root, preds)
    return [
        "evaluate.py", "--predictions", str(preds), "-p", str(root), "-r", str(out),
        "--no-progress", "--workers", "2",
    ]  # fmt: skip


def _predict(root: Path, out: Path, weights: Path) -> list[str]:
    return [
        "predict.py", "-m", "fastscnn", "-w", str(weights), "-t", TARGET, "-p", str(root),
        "--split", "val", "-r", str(out), "--no-progress",
    ]  # fmt: skip


def _benchmark_data(root: Path, out: Path, weights: Path) -> list[str]:
    return [
        "benchmark.py", "data", "-p", str(root), "--size", TARGET, "-b", "2",
        "--num-images", "4", "--repeats", "1", "--output-dir", str(out),
    ]  # fmt: skip


TRAIN_LABEL = "root/gtFine/train/*/*_gtFine_labelIds.png"
VAL_IMAGE = "root/leftImg8bit/val/*/*_leftImg8bit.png"
VAL_LABEL = "root/gtFine/val/*/*_gtFine_labelIds.png"
#: name -> (command line, the file made corrupt (the 2nd match under the work folder), text of
#: the fix the line names, whether it offers --skip-bad: only where the command has it)
COMMANDS: dict[str, tuple[Callable[[Path, Path, Path], list[str]], str, str, bool]] = {
    "train": (_train, TRAIN_LABEL, "re-extract it", True),
    "train-validation": (_train, VAL_IMAGE, "re-extract it", True),  # met by the validation
    "evaluate-model": (_evaluate_model, VAL_IMAGE, "re-extract it", False),
    "evaluate-prediction": (_evaluate_predictions, "preds/*.png", "write it again", False),
    "evaluate-ground-truth": (_evaluate_predictions, VAL_LABEL, "re-extract gtFine", False),
    "predict": (_predict, VAL_IMAGE, "re-extract it", True),
    "benchmark-data": (_benchmark_data, TRAIN_LABEL, "re-extract it", False),
}
#: The commands without TensorFlow (under a second each): repeated in the quick loop too.
QUICK = ("evaluate-prediction", "evaluate-ground-truth")
#: Cases beyond one per command that take over 15 s even once: slow, and run once (the 10
#: repetitions are per command: train repeats with a bad training label).
SLOW_ONCE = ("train-validation",)


def _run_once(name: str, base: Path, tiny_root: Path, weights: Path, run_cli, attempt: int) -> None:
    """Run command `name` on a fresh copy of the tree with one truncated file; check the end."""
    command, pattern, fix, offers_skip_bad = COMMANDS[name]
    work = base / f"{name}-{attempt}"
    root = shutil.copytree(tiny_root, work / "root")
    argv = command(root, work / "out", weights)
    bad = _truncate(_second(work, pattern))
    try:
        done = run_cli(*argv, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}, run {attempt}: still running after {HANG_S} s (hung)")
    where = f"{name}, run {attempt}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert done.returncode == 2, where  # not 134 (abort) nor 1 (a traceback)
    assert "Traceback" not in done.stderr, where
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), where
    assert str(bad) in lines[0], where  # the full path of the file
    assert fix in lines[0], where
    assert ("--skip-bad" in lines[0]) == offers_skip_bad, where
    shutil.rmtree(work)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ONCE else n for n in COMMANDS],
)
def test_corrupt_file_gives_one_line(name, tmp_path, tiny_root, weights, run_cli):
    """One run per command: exit 2, the one line names the file and the command's fix."""
    _run_once(name, tmp_path, tiny_root, weights, run_cli, 1)


@pytest.mark.parametrize("name", QUICK)
def test_corrupt_file_every_time_quick(name, tmp_path, tiny_root, weights, run_cli):
    """The commands without TensorFlow, REPEATS times (a few seconds in all)."""
    for attempt in range(1, REPEATS + 1):
        _run_once(name, tmp_path, tiny_root, weights, run_cli, attempt)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in COMMANDS if n not in QUICK + SLOW_ONCE])
def test_corrupt_file_every_time(name, tmp_path, tiny_root, weights, run_cli):
    """TF_REPEATS runs of each TensorFlow command: never an abort, a hang or a traceback."""
    for attempt in range(1, TF_REPEATS + 1):
        _run_once(name, tmp_path, tiny_root, weights, run_cli, attempt)


# ---------------------------------------------------------------------------- the checkpoint


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ("weights" in p.name or ".state" in str(p))
    }


@pytest.mark.slow
def test_last_good_checkpoint_stays(tmp_path, tiny_root, run_cli):
    """Epoch 1 on good data, then a file goes bad: the resumed epoch 2 stops with one line and
    epoch 1's checkpoint is left exactly as it was, with nothing half-written beside it."""
    root = shutil.copytree(tiny_root, tmp_path / "root")
    out = tmp_path / "run"
    common = ["train.py", "-m", "fastscnn", "-p", str(root), "-t", TARGET, "-b", "2"]
    common += ["--steps-per-epoch", "2", "--output-dir", str(out)]
    done = run_cli(*common, "-e", "1", timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    before = _digests(out)
    assert any(name.endswith(".weights.h5") for name in before), before
    bad = _truncate(_second(tmp_path, TRAIN_LABEL))
    done = run_cli(*common, "-e", "2", timeout=HANG_S)
    assert done.returncode == 2, done.stderr
    assert done.error_lines and str(bad) in done.error_lines[0], done.stderr
    assert _digests(out) == before
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


# ---------------------------------------------------------------------------- --skip-bad


@pytest.mark.slow
def test_train_skip_bad_logs_the_file_and_finishes(tmp_path, tiny_root, run_cli):
    root = shutil.copytree(tiny_root, tmp_path / "root")
    bad = _truncate(_second(tmp_path, TRAIN_LABEL))
    out = tmp_path / "run"
    done = run_cli(*_train(root, out, Path()), "--skip-bad", timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert str(bad) in done.stderr and not done.error_lines, done.stderr
    assert done.stderr.count(str(bad)) == 1, done.stderr  # logged once, not once per pass
    assert list(out.glob("weights-*.weights.h5"))


def test_predict_skip_bad_logs_the_file_and_finishes(tmp_path, tiny_root, weights, run_cli):
    root = shutil.copytree(tiny_root, tmp_path / "root")
    out = tmp_path / "out"
    bad = _truncate(_second(tmp_path, VAL_IMAGE))
    done = run_cli(*_predict(root, out, weights), "--skip-bad", timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert str(bad) in done.stderr and not done.error_lines, done.stderr
    written = sorted(p.name for p in (out / "labelIds").glob("*.png"))
    good = sorted(p for p in (root / "leftImg8bit" / "val").glob("*/*.png") if p != bad)
    assert written == [p.name.replace("leftImg8bit", "labelIds") for p in good]


def test_check_command_skip_bad(tmp_path, tiny_root, run_cli):
    root = shutil.copytree(tiny_root, tmp_path / "root")
    bad = _truncate(_second(tmp_path, VAL_LABEL))
    done = run_cli("-m", "datasets.cityscapes", "-p", str(root), "--split", "val")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(bad) in done.error_lines[0] and "--skip-bad" in done.error_lines[0]
    done = run_cli("-m", "datasets.cityscapes", "-p", str(root), "--split", "val", "--skip-bad")
    assert done.returncode == 0, done.stderr
    assert str(bad) in done.stderr and "2 images read without error" in done.stdout


# ---------------------------------------------------------------------------- in process


def _consume(dataset, refs: list) -> None:
    """Iterate `dataset` to its end, keeping a weak reference to the iterator."""
    iterator = iter(dataset)
    refs.append(weakref.ref(iterator))
    for _ in iterator:
        pass


def test_pipeline_error_is_the_readers_error_and_frees_the_iterator(tmp_path, tiny_root):
    from datasets import pipeline

    root = shutil.copytree(tiny_root, tmp_path / "root")
    bad = _truncate(_second(tmp_path, TRAIN_LABEL))
    samples = cs.find_samples(root, "train")
    dataset = pipeline.build_dataset(samples, 1, SIZE, training=True, seed=0, repeat=True)
    refs: list = []
    with pytest.raises(cs.BadFileError) as info:
        with pipeline.bad_file_errors(skip_bad_option=True):
            _consume(dataset, refs)
    message = str(info.value)
    assert info.value.path == str(bad) and "\n" not in message
    assert message.startswith(f"cannot read label {str(bad)!r}: corrupt or truncated PNG")
    assert message.endswith("or pass --skip-bad to skip bad files")
    gc.collect()
    assert refs[0]() is None  # the iterator (and its threads) went with the failed frames
    # Without the context manager the error is TensorFlow's, the file named in its text.
    import tensorflow as tf

    with pytest.raises(tf.errors.OpError, match=bad.name) as info:
        _consume(dataset, [])
    assert pipeline.reader_error(info.value) is not None
    assert pipeline.reader_error(tf.errors.InvalidArgumentError(None, None, "other")) is None


def test_skip_bad_all_files_bad_stops_instead_of_looping(tmp_path, tiny_root):
    from datasets import pipeline

    root = shutil.copytree(tiny_root, tmp_path / "root")
    samples = cs.find_samples(root, "train")
    for sample in samples:
        _truncate(sample.image)
    dataset = pipeline.build_dataset(
        samples, 1, SIZE, training=True, seed=0, repeat=True, skip_bad=True
    )
    with pytest.raises(ValueError, match="all 4 files of the data set are unreadable"):
        with pipeline.bad_file_errors():
            _consume(dataset, [])


def test_guard_frees_what_the_failed_frames_held():
    from utils.cli import guard
    from utils.errors import BadInput

    class Resource:
        pass

    refs: list = []

    def inner() -> None:
        held = Resource()
        refs.append(weakref.ref(held))
        raise BadInput("bad value 'x'; pass another")

    @guard
    def main() -> None:
        inner()

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert refs[0]() is None  # released before exit, though the exception still exists


# ---------------------------------------------------------------------------- roots


def test_predictions_need_only_gtfine(tmp_path, tiny_root, run_cli):
    """A root with only gtFine scores predictions (perfect ones: every present class IoU 1)."""
    root = tmp_path / "gt_only"
    shutil.copytree(tiny_root / "gtFine", root / "gtFine")
    preds = _perfect_predictions(root, tmp_path / "preds")
    out = tmp_path / "out"
    done = run_cli("evaluate.py", "--predictions", str(preds), "-p", str(root), "-r", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "resultPixelLevelSemanticLabeling.json").read_text())
    assert result["averageScoreClasses"] == 1.0
    assert sum(map(sum, result["confMatrix"])) == 3 * SIZE[0] * SIZE[1]


def test_model_still_needs_leftimg8bit(tmp_path, tiny_root, weights, run_cli):
    root = tmp_path / "gt_only"
    shutil.copytree(tiny_root / "gtFine", root / "gtFine")
    out = tmp_path / "out"
    done = run_cli(
        "evaluate.py", "-m", "fastscnn", "-w", str(weights), "-t", TARGET, "-p", str(root),
        "-r", str(out), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"dataset root {str(root)!r} has no leftImg8bit folder" in lines[0]
    assert "--predictions needs only gtFine/" in lines[0]
    assert not (out / "resultPixelLevelSemanticLabeling.json").exists()


def test_resolve_root_requires_only_what_is_asked(tmp_path):
    (tmp_path / "gtFine").mkdir()
    assert options.resolve_root(tmp_path, require=("gtFine",)) == tmp_path
    with pytest.raises(ValueError, match="has no leftImg8bit folder"):
        options.resolve_root(tmp_path)


def test_predict_skip_bad_draws_a_panel_without_a_bad_ground_truth(
    tmp_path, tiny_root, weights, run_cli
):
    root = shutil.copytree(tiny_root, tmp_path / "root")
    out = tmp_path / "out"
    bad = _truncate(sorted(tmp_path.glob("root/gtFine/val/*/*_gtFine_labelIds.png"))[0])
    done = run_cli(*_predict(root, out, weights), "--skip-bad", timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert str(bad) in done.stderr and "without ground truth" in done.stderr, done.stderr
    assert len(list((out / "panel").glob("*.png"))) == 3  # every photo still gets its panel
    failed = run_cli(*_predict(root, tmp_path / "out2", weights), timeout=HANG_S)
    assert failed.returncode == 2 and len(failed.error_lines) == 1
    assert str(bad) in failed.error_lines[0]


@pytest.mark.slow
def test_train_skip_bad_with_a_bad_first_validation_file(tmp_path, tiny_root, run_cli):
    root = shutil.copytree(tiny_root, tmp_path / "root")
    bad = _truncate(sorted(tmp_path.glob("root/gtFine/val/*/*_gtFine_labelIds.png"))[0])
    out = tmp_path / "run"
    done = run_cli(*_train(root, out, Path()), "--skip-bad", timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert str(bad) in done.stdout + done.stderr and not done.error_lines
    assert list(out.glob("weights-*.weights.h5"))
