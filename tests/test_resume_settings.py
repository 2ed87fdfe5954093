"""A rerun continues a run only with its settings; -r continues deliberately; best/last names.

The comparison is tested setting by setting on TrainConfigs; the folder logic on a run folder
made by hand (an index, dated weights files and meta.json as train.py writes them); the stable
names on real saves of a tiny model; and the whole command on one short synthetic run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import train
import training.checkpoints as checkpoints
from training.checkpoints import (
    RUN_SETTINGS,
    CheckpointSaver,
    compare_settings,
    find_resume_point,
    run_settings,
)
from training.config import TrainConfig

ROOT = "/data/cityscapes"
BASE = dict(model="fastscnn", input_size=(64, 128), batch_size=2, epochs=1)


def settings(root=ROOT, **changes):
    """The recorded settings of a run with BASE and `changes`, through JSON as meta.json has them."""
    return json.loads(json.dumps(run_settings(TrainConfig(**{**BASE, **changes}), root)))


# ----------------------------------------------------------------------------------------------
# The comparison, setting by setting
# ----------------------------------------------------------------------------------------------

# (setting, the base run's other settings, the command's change, the line naming both values)
DIFFERENCES = [
    ("model", {}, {"model": "separable_unet"}, "-m fastscnn -> separable_unet"),
    (
        "model_options",
        {"model": "deeplabv3+"},
        {"model": "deeplabv3+", "model_options": {"backbone": "xception"}},
        "--backbone/--output-stride/--head {} -> {backbone=xception}",
    ),
    ("classes", {}, {"classes": "rail20"}, "--classes cityscapes19 -> rail20"),
    ("input_size", {}, {"input_size": (128, 256)}, "-t 64,128 -> 128,256"),
    ("batch_size", {}, {"batch_size": 12}, "-b 2 -> 12"),
    ("steps_per_epoch", {}, {"steps_per_epoch": 5}, "--steps-per-epoch (default) -> 5"),
    ("optimizer", {}, {"optimizer": "adam"}, "--optimizer sgd -> adam"),
    ("momentum", {}, {"momentum": 0.95}, "--momentum 0.9 -> 0.95"),
    ("weight_decay", {}, {"weight_decay": 4e-5}, "--weight-decay 0 -> 4e-05"),
    ("schedule", {}, {"schedule": "cyclic"}, "--schedule polynomial -> cyclic"),
    ("learning_rate", {}, {"learning_rate": 0.045}, "-l 0.01 -> 0.045"),
    ("min_lr", {}, {"min_lr": 0.001}, "--min-lr (default) -> 0.001"),
    ("max_lr", {}, {"max_lr": 0.1}, "--max-lr (default) -> 0.1"),
    ("power", {}, {"power": 1.0}, "--power 0.9 -> 1"),
    ("cycle", {"schedule": "cyclic"}, {"schedule": "cyclic", "cycle": 4}, "--cycle (default) -> 4"),
    ("warmup_epochs", {}, {"warmup_epochs": 0.5}, "--warmup-epochs 0 -> 0.5"),
    ("lr_scaling", {}, {"lr_scaling": "none"}, "--lr-scaling linear -> none"),
    ("coarse", {}, {"coarse": True}, "-c off -> on"),
    (
        "class_weights",
        {},
        {"class_weights": [2.0] * 19},
        "--class-weights (default) -> [2, 2, 2, ... (19 values)]",
    ),
    ("mixed_precision", {}, {"mixed_precision": True}, "--mixed-precision off -> on"),
    ("bn_momentum", {}, {"bn_momentum": 0.9}, "--bn-momentum (default) -> 0.9"),
    ("freeze_backbone", {}, {"freeze_backbone": True}, "--freeze-backbone off -> on"),
    ("seed", {}, {"seed": 1}, "--seed 0 -> 1"),
    ("loss", {}, {"loss": "ohem"}, "--loss ce -> ohem"),
    (
        "ohem_thresh",
        {"loss": "ohem"},
        {"loss": "ohem", "ohem_thresh": 0.7},
        "--ohem-thresh 0.9 -> 0.7",
    ),
    (
        "ohem_min_kept",
        {"loss": "ohem"},
        {"loss": "ohem", "ohem_min_kept": 4096},
        "--ohem-min-kept 131072 -> 4096",
    ),
]


def test_every_checked_setting_is_tested():
    assert {d[0] for d in DIFFERENCES} | {"data_root"} == set(RUN_SETTINGS)


@pytest.mark.parametrize(
    "key, base, changes, expected", DIFFERENCES, ids=[d[0] for d in DIFFERENCES]
)
def test_a_differing_setting_is_named_with_both_values(key, base, changes, expected):
    check = compare_settings(settings(**base), settings(**changes))
    assert check.changed == [expected]
    assert check and check.unknown == []


def test_a_differing_data_root_is_named():
    check = compare_settings(settings(), settings(root="/other/../data/cityscapes_v2"))
    assert check.changed == ["-p/--synthetic /data/cityscapes -> /data/cityscapes_v2"]


def test_the_data_root_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_settings(TrainConfig(**BASE), "data")["data_root"] == str(tmp_path / "data")


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 20},
        {"output_dir": "elsewhere"},
        {"val_every": 5},
        {"xla": True},
        {"skip_bad": True},
        {"precise_bn": 0},
        {"weights": "imagenet"},
        {"resume": "runs/x/last.weights.h5"},
        {"input_size": [64, 128]},  # the command's tuple against the record's list
    ],
)
def test_settings_that_may_differ(changes):
    check = compare_settings(settings(), settings(**changes))
    assert not check and check.changed == [] and check.unknown == []


def test_a_schedule_parameter_counts_only_for_a_schedule_that_uses_it():
    cyclic = settings(schedule="cyclic", cycle=4)
    assert compare_settings(cyclic, settings(schedule="cyclic", cycle=4, power=2.0)).changed == []
    assert compare_settings(settings(), settings(cycle=4)).changed == []  # polynomial: no cycle
    adam = settings(optimizer="adam")
    assert compare_settings(adam, settings(optimizer="adam", momentum=0.5)).changed == []
    # From one schedule to another, the parameters of either are compared.
    check = compare_settings(settings(warmup_epochs=1.0), settings(schedule="cyclic", cycle=4))
    assert check.changed == [
        "--schedule polynomial -> cyclic",
        "--cycle (default) -> 4",
        "--warmup-epochs 1 -> 0",
    ]


def test_a_setting_the_record_lacks_is_unknown_not_a_difference():
    old = settings()
    del old["data_root"], old["bn_momentum"]
    check = compare_settings(old, settings(root="/elsewhere", bn_momentum=0.5))
    assert not check and check.unknown == ["-p/--synthetic", "--bn-momentum"]
    nothing = compare_settings(None, settings())
    assert not nothing and set(nothing.unknown) == set(RUN_SETTINGS.values()) - {
        "--cycle"  # polynomial: the cycle is not a setting of either
    }


# ----------------------------------------------------------------------------------------------
# The run folder: which checkpoint continues, and when it is refused
# ----------------------------------------------------------------------------------------------

DATED = "weights-002-0.5000-1.0000-20260101-000000"
BEST = "weights-001-0.6000-0.9000-20260101-000000"


def fake_run(folder: Path, recorded: dict | None, model: str = "fastscnn") -> Path:
    """A run folder as train.py leaves it after 2 epochs (best at epoch 1): index, weights
    files, stable copies and state folders with meta.json (`recorded` as its settings)."""
    folder.mkdir(parents=True)
    for stem, epoch in ((DATED, 2), (BEST, 1)):
        (folder / f"{stem}.weights.h5").write_bytes(f"weights of epoch {epoch}".encode())
        (folder / f"{stem}.state").mkdir()
        meta = {"model": model, "epoch": epoch, "best": BEST, "optimizer_step": 2 * epoch}
        if recorded is not None:
            meta["settings"] = recorded
        (folder / f"{stem}.state" / "meta.json").write_text(json.dumps(meta))
    shutil.copyfile(folder / f"{DATED}.weights.h5", folder / "last.weights.h5")
    shutil.copyfile(folder / f"{BEST}.weights.h5", folder / "best.weights.h5")
    index = {"model": model, "last": f"{DATED}.weights.h5", "best": f"{BEST}.weights.h5"}
    (folder / "checkpoints.json").write_text(json.dumps(index | {"epoch": 2}))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_rerun_with_the_same_settings_continues_also_with_more_epochs(tmp_path):
    run = fake_run(tmp_path / "run", settings())
    point = find_resume_point(None, run, "fastscnn", settings(epochs=10))
    assert point.weights == run / f"{DATED}.weights.h5" and point.epoch == 2
    assert point.check.changed == [] and point.check.unknown == []


def test_a_rerun_with_other_settings_is_refused_naming_each_and_the_ways_out(tmp_path):
    run = fake_run(tmp_path / "run", settings())
    before = snapshot(run)
    command = settings(batch_size=12, schedule="cyclic", min_lr=0.001, max_lr=0.01, cycle=4)
    with pytest.raises(ValueError) as info:
        find_resume_point(None, run, "fastscnn", command)
    message = str(info.value)
    for part in (
        "-b 2 -> 12",
        "--schedule polynomial -> cyclic",
        "--min-lr (default) -> 0.001",
        "--max-lr (default) -> 0.01",
        "--cycle (default) -> 4",
        "--output-dir DIR",
        f"-r {run / 'last.weights.h5'}",
        "(trained to epoch 2)",
    ):
        assert part in message
    assert "\n" not in message
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["last.weights.h5", f"{DATED}.weights.h5", f"{DATED}.state"])
def test_r_continues_with_other_settings_and_names_them(tmp_path, name):
    run = fake_run(tmp_path / "run", settings())
    point = find_resume_point(run / name, run, "fastscnn", settings(seed=3))
    assert point.weights == run / f"{DATED}.weights.h5" and point.epoch == 2
    assert point.check.changed == ["--seed 0 -> 3"]


def test_r_best_finds_its_checkpoint_through_the_index(tmp_path):
    run = fake_run(tmp_path / "run", settings())
    point = find_resume_point(run / "best.weights.h5", tmp_path / "new", "fastscnn", settings())
    assert point.weights == run / f"{BEST}.weights.h5"
    assert point.state == run / f"{BEST}.state" and point.epoch == 1


def test_the_folder_wins_over_an_older_r_file_and_must_match(tmp_path):
    run = fake_run(tmp_path / "run", settings())
    with pytest.raises(ValueError, match="-b 2 -> 4"):
        find_resume_point(run / "best.weights.h5", run, "fastscnn", settings(batch_size=4))


def test_a_stable_name_without_its_index(tmp_path):
    lone = tmp_path / "copied"
    lone.mkdir()
    (lone / "best.weights.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot tell which checkpoint.*pass the dated"):
        find_resume_point(lone / "best.weights.h5", tmp_path / "new", "fastscnn", settings())


def test_an_old_run_without_a_recorded_setting_continues_and_says_so(tmp_path):
    old = settings()
    del old["data_root"]
    run = fake_run(tmp_path / "run", old)
    point = find_resume_point(None, run, "fastscnn", settings(root="/anywhere"))
    assert point.epoch == 2 and point.check.unknown == ["-p/--synthetic"]


# ----------------------------------------------------------------------------------------------
# best.weights.h5 and last.weights.h5 beside the dated files
# ----------------------------------------------------------------------------------------------


def tiny_model() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))


def test_stable_names_copy_the_last_and_the_best_at_each_save(tmp_path):
    model = tiny_model()
    checkpoint = tf.train.Checkpoint(model=model)
    saver = CheckpointSaver(tmp_path, "fastscnn")
    names = {}
    for epoch, miou in ((1, 0.5), (2, 0.4), (3, 0.6), (4, float("nan"))):
        model.get_layer("head").kernel.assign(np.full((4, 2), epoch, np.float32))
        saver.save(epoch, {"val_mean_iou": miou}, model, checkpoint, {"settings": None})
        index = json.loads((tmp_path / "checkpoints.json").read_text())
        names[epoch] = (index["last"], index["best"])
        for stable, dated in zip(("last.weights.h5", "best.weights.h5"), names[epoch], strict=True):
            assert (tmp_path / stable).read_bytes() == (tmp_path / dated).read_bytes()
    assert [parse(names[e][0]) for e in names] == [1, 2, 3, 4]
    assert [parse(names[e][1]) for e in names] == [1, 1, 3, 3]
    reloaded = tiny_model()
    reloaded.load_weights(str(tmp_path / "best.weights.h5"))
    assert float(reloaded.get_layer("head").kernel.numpy()[0, 0]) == 3.0
    assert not list(tmp_path.glob(".*tmp*"))


def parse(name: str) -> int:
    return checkpoints.parse_weights_name(name)


def test_a_failed_copy_leaves_the_previous_stable_file_whole(tmp_path, monkeypatch):
    model = tiny_model()
    checkpoint = tf.train.Checkpoint(model=model)
    saver = CheckpointSaver(tmp_path, "fastscnn")
    saver.save(1, {"val_mean_iou": 0.5}, model, checkpoint, {})
    before = (tmp_path / "last.weights.h5").read_bytes()

    def half_copy(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.shutil, "copyfile", half_copy)
    model.get_layer("head").kernel.assign(np.ones((4, 2), np.float32))
    with pytest.raises(OSError, match="disk full"):
        saver.save(2, {"val_mean_iou": 0.4}, model, checkpoint, {})
    assert (tmp_path / "last.weights.h5").read_bytes() == before
    assert not list(tmp_path.glob(".*tmp*"))


# ----------------------------------------------------------------------------------------------
# The command: one short synthetic run, then reruns of it
# ----------------------------------------------------------------------------------------------

COMMAND = ["-m", "fastscnn", "-t", "64,128", "-b", "1", "-e", "1", "--steps-per-epoch", "1"]
COMMAND += ["--precise-bn", "0"]


def run_main(args, capsys):
    """train.main in-process: (exit status, stdout, stderr)."""
    try:
        code = train.main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """A finished 1-epoch run of COMMAND (one optimizer step) and its printed lines."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    code = train.main(COMMAND + ["-p", str(synthetic_root), "--output-dir", str(folder)])
    assert code == 0
    return folder


def copy_run(trained: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    return folder


def test_the_run_records_its_settings_and_stable_names(trained, synthetic_root):
    index = json.loads((trained / "checkpoints.json").read_text())
    assert (trained / "last.weights.h5").read_bytes() == (trained / index["last"]).read_bytes()
    assert (trained / "best.weights.h5").read_bytes() == (trained / index["best"]).read_bytes()
    meta = json.loads(
        (trained / index["last"].replace(".weights.h5", ".state/meta.json")).read_text()
    )
    config = TrainConfig.from_recipe(
        train.build_parser().parse_args(COMMAND + ["--output-dir", "x"])
    )
    assert meta["settings"] == run_settings(config, synthetic_root) | {"output_dir": str(trained)}
    assert meta["settings"]["data_root"] == str(Path(synthetic_root).resolve())


def test_rerun_with_another_batch_and_schedule_exits_2_touching_nothing(
    trained, synthetic_root, tmp_path, capsys
):
    run = copy_run(trained, tmp_path)
    before = snapshot(run)
    args = COMMAND + ["-p", synthetic_root, "--output-dir", run, "-b", "2"]
    args += ["--schedule", "cyclic", "--max-lr", "0.01", "--min-lr", "0.001", "--cycle", "4"]
    code, out, err = run_main(args, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    for part in ("-b 1 -> 2", "--schedule polynomial -> cyclic", "--cycle (default) -> 4"):
        assert part in errors[0]
    assert "--output-dir DIR" in errors[0] and f"-r {run / 'last.weights.h5'}" in errors[0]
    assert "Resuming" not in out and snapshot(run) == before


def test_rerun_with_more_epochs_continues(trained, synthetic_root, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    args = COMMAND + ["-p", synthetic_root, "--output-dir", run, "-e", "2"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    assert "at epoch 2 (optimizer step 1)" in out and "epoch 2/2: loss" in out
    assert "settings changed" not in out
    assert json.loads((run / "checkpoints.json").read_text())["epoch"] == 2


def test_r_last_with_other_settings_continues_and_says_so(
    trained, synthetic_root, tmp_path, capsys
):
    run = copy_run(trained, tmp_path)
    args = COMMAND + ["-p", synthetic_root, "--output-dir", run, "-e", "2", "--seed", "5"]
    args += ["--steps-per-epoch", "2"]
    code, out, err = run_main(args + ["-r", run / "last.weights.h5"], capsys)
    assert code == 0, err
    assert "settings changed from the checkpoint's: --steps-per-epoch 1 -> 2; --seed 0 -> 5" in out
    assert "at epoch 2 (optimizer step 1)" in out
    # 1 epoch of 1 step done, but epochs of 2 steps now: the schedule's position is said.
    assert "warning: the checkpoint is at optimizer step 1, not 2 (1 x the 2 steps" in out
    index = json.loads((run / "checkpoints.json").read_text())
    meta = json.loads((run / index["last"].replace(".weights.h5", ".state/meta.json")).read_text())
    assert index["epoch"] == 2 and meta["settings"]["seed"] == 5
    # The folder's run now has the new settings: the same command, without -r, continues it.
    config = TrainConfig.from_recipe(train.build_parser().parse_args([str(a) for a in args]))
    point = find_resume_point(None, run, "fastscnn", run_settings(config, synthetic_root))
    assert point.epoch == 2 and point.check.changed == []


def test_an_old_run_without_the_data_root_continues_with_a_note(
    trained, synthetic_root, tmp_path, capsys
):
    run = copy_run(trained, tmp_path)
    index = json.loads((run / "checkpoints.json").read_text())
    meta_path = run / index["last"].replace(".weights.h5", ".state/meta.json")
    meta = json.loads(meta_path.read_text())
    del meta["settings"]["data_root"]
    meta_path.write_text(json.dumps(meta))
    code, out, err = run_main(COMMAND + ["-p", synthetic_root, "--output-dir", run], capsys)
    assert code == 0, err
    assert "does not record -p/--synthetic" in out and "not checked" in out
    assert "already trained 1 of 1 epochs" in out


def test_the_header_names_the_cyclic_range_and_warns_of_a_short_run(
    trained, synthetic_root, tmp_path, capsys
):
    args = COMMAND + ["-p", synthetic_root, "--output-dir", tmp_path / "cyclic"]
    args += ["--schedule", "cyclic", "--max-lr", "0.01", "--min-lr", "0.001", "--cycle", "4"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    assert "lr 0.001-0.01 cyclic, 8-step cycles" in out and "lr 0.045" not in out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "8 optimizer steps" in warnings[0]
    assert "the run has only 1 (1 epoch x 1 step)" in warnings[0]


def test_dataclass_fields_are_all_decided():
    """Every TrainConfig field is either a checked setting or one left out on purpose."""
    left_out = {
        "epochs",
        "output_dir",
        "val_every",
        "xla",
        "skip_bad",
        "precise_bn",
        "weights",
        "log_every",
        "sync_bn",
    }
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"resume"}
    assert fields == (set(RUN_SETTINGS) - {"data_root"}) | left_out
