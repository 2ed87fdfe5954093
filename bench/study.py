"""The study: train, evaluate, export and time each model, then one table and one plot.

For each model the study runs four stages, each one of the suite's commands in its own process,
into `OUTPUT/study/MODEL/`:

  train   train.py with the model's recipe (or the weights found in --weights-dir)
  eval    evaluate.py on the val split at --size: official mIoU (classes, categories) and iIoU,
          calibration and safety classes, and with corruptions the Cityscapes-C robustness
  export  convert_to_onnx.py of the trained weights (parity with Keras, TensorRT-construct scan)
  time    benchmark.py's inference benchmark of the model on every backend present

A stage that ends well writes `STAGE.done.json` (its command and what the report needs) by
rename; a rerun finds it and skips the stage, so an interrupted study continues where it
stopped (an interrupted train.py run continues from its last saved step). A stage done with
another command is not reused: the study stops and says which folder to move away. Each stage's
output goes to `STAGE.log` beside it.

The report (`OUTPUT/study.{md,csv,json,png}`) has one row per model and the accuracy-against-
latency plot with the Pareto front: the models no other model beats on both mIoU and latency.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.plots import pareto_front, plot_pareto
from bench.report import fmt, markdown_table, text_table, write_csv
from bench.rows import spec_label
from inference import runtimes
from utils.errors import BadInput
from utils.io import write_json, write_text

REPO = Path(__file__).resolve().parent.parent
STAGES = ("train", "eval", "export", "time")
#: The report's name stem (study.md, .csv, .json, .png) in the output folder.
STEM = "study"
#: Without --synthetic: Cityscapes' full resolution, at which the benchmark's figures are quoted.
FULL_SIZE = (1024, 2048)
#: --synthetic: a small generated tree (images per split, size) and tiny training.
SYNTHETIC_IMAGES = 8
SYNTHETIC_SIZE = (128, 256)
SYNTHETIC_EPOCHS = 2


@dataclasses.dataclass
class StudyConfig:
    """What `benchmark.py study` was asked for (see its --help)."""

    output_dir: str
    models: list[tuple[str, dict[str, Any]]]
    root: str | None = None
    synthetic: bool = False
    weights_dir: str | None = None
    epochs: int | None = None
    crop: tuple[int, int] | None = None
    batch: int | None = None
    size: tuple[int, int] | None = None
    backends: list[str] | None = None
    budget_s: float = 60.0
    corruptions: list[str] | None = None  # None: no corruption runs; []: all of them
    severities: list[int] | None = None
    mc_samples: int = 8
    classes: str = "cityscapes19"
    seed: int = 0
    command: str = ""

    @property
    def eval_size(self) -> tuple[int, int]:
        """The input size of evaluation, export and timing."""
        if self.size is not None:
            return self.size
        return SYNTHETIC_SIZE if self.synthetic else FULL_SIZE


def model_key(name: str, options: dict[str, Any]) -> str:
    """The model's folder name: `pidnet` or `pidnet_variant-m` (no ':' or ',' in paths)."""
    return "_".join([name, *(f"{k}-{v}" for k, v in options.items())])


def _option_args(options: dict[str, Any]) -> list[str]:
    """Model options as the command-line flags of train/evaluate/convert (`--variant m`)."""
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def _size(size: Sequence[int]) -> str:
    return f"{size[0]},{size[1]}"


class StageError(RuntimeError):
    """A stage's command failed; the message names the stage, the exit status and its log."""


@dataclasses.dataclass
class Model:
    """One model of the study and its folder."""

    name: str
    options: dict[str, Any]
    folder: Path

    @property
    def label(self) -> str:
        return spec_label(self.name, self.options)

    def done_path(self, stage: str) -> Path:
        return self.folder / f"{stage}.done.json"

    def done(self, stage: str) -> dict[str, Any] | None:
        """The stage's record, or None when it has not finished."""
        path = self.done_path(stage)
        if not path.is_file():
            return None
        return json.loads(path.read_text())


def given_weights(config: StudyConfig, model: Model) -> Path | None:
    """The trained weights --weights-dir holds for `model` (MODEL.weights.h5, MODEL.keras, a
    train.py folder MODEL/last.weights.h5 or an earlier study's folder MODEL/train/), None
    without --weights-dir; ValueError if missing."""
    if config.weights_dir is None:
        return None
    folder = Path(config.weights_dir)
    key = model_key(model.name, model.options)
    candidates = [
        folder / f"{key}.weights.h5",
        folder / f"{key}.keras",
        folder / key / "last.weights.h5",
        folder / key / "train" / "last.weights.h5",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise BadInput(
        f"--weights-dir {str(folder)!r} has no weights for {model.label}: looked for "
        + ", ".join(repr(str(p.relative_to(folder))) for p in candidates)
        + "; add them or leave the model out of --models"
    )


# --------------------------------------------------------------------------- stage commands


def _python(script: str) -> list[str]:
    return [sys.executable, str(REPO / script)]


def train_command(config: StudyConfig, model: Model, root: str) -> list[str]:
    cmd = [*_python("train.py"), "-m", model.name, *_option_args(model.options)]
    cmd += ["-p", root, "--output-dir", str(model.folder / "train"), "--seed", str(config.seed)]
    epochs = config.epochs or (SYNTHETIC_EPOCHS if config.synthetic else None)
    crop = config.crop or (config.eval_size if config.synthetic else None)
    batch = config.batch or (2 if config.synthetic else None)
    if epochs:
        cmd += ["-e", str(epochs)]
    if crop:
        cmd += ["-t", _size(crop)]
    if batch:
        cmd += ["-b", str(batch)]
    if config.classes != "cityscapes19":
        cmd += ["--classes", config.classes]
    return cmd


def eval_command(config: StudyConfig, model: Model, root: str, weights: str) -> list[str]:
    cmd = [*_python("evaluate.py"), "-m", model.name, *_option_args(model.options)]
    cmd += ["-w", weights, "-p", root, "--split", "val", "-t", _size(config.eval_size)]
    cmd += ["-r", str(model.folder / "eval"), "--no-progress"]
    if config.corruptions is not None:
        cmd += ["--corruptions", *config.corruptions]
        if config.severities:
            cmd += ["--severities", ",".join(map(str, config.severities))]
        cmd += ["--corruption-seed", str(config.seed)]
    if model.name == "bayes_segnet" and config.mc_samples:
        cmd += ["--mc-samples", str(config.mc_samples)]
    if config.classes != "cityscapes19":
        cmd += ["--classes", config.classes]
    return cmd


def export_command(config: StudyConfig, model: Model, weights: str) -> list[str]:
    cmd = [*_python("convert_to_onnx.py"), "-m", model.name, *_option_args(model.options)]
    return cmd + ["-w", weights, "-t", _size(config.eval_size), "-o", str(_onnx_path(model))]


def time_command(config: StudyConfig, model: Model) -> list[str]:
    cmd = [*_python("benchmark.py"), "--output-dir", str(model.folder / "time"), "--name", "time"]
    cmd += ["--models", model.label, "--sizes", _size(config.eval_size)]
    cmd += ["--budget", str(config.budget_s), "--profile", "off"]
    backends = config.backends or default_backends()
    return cmd + ["--backends", ",".join(backends)]


def default_backends() -> list[str]:
    """Every runtime of the exported file that can run on this machine (the registry's
    `available`): the CPU runtimes, and TensorRT where its Python package, CuPy and an NVIDIA
    GPU are present."""
    return [
        name
        for name, e in runtimes.RUNTIMES.items()
        if e.source != "keras" and runtimes.available(name) is None
    ]


def _onnx_path(model: Model) -> Path:
    return model.folder / "export" / "model.onnx"


# --------------------------------------------------------------------------- stage results


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def read_train(folder: Path) -> dict[str, Any]:
    """Training images/s and seconds per epoch from a train.py folder's log.csv (the mean over
    its epochs; None where it has no log)."""
    log = folder / "log.csv"
    rows: list[dict[str, str]] = []
    if log.is_file():
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))

    def column(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) not in (None, "")]

    return {
        "epochs": len(rows) or None,
        "train_images_per_s": _mean(column("images_per_s")),
        "epoch_time_s": _mean(column("epoch_time_s")),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_eval(folder: Path) -> dict[str, Any]:
    """The figures of an evaluate.py folder: official scores, calibration, robustness."""
    official = _read_json(folder / "resultPixelLevelSemanticLabeling.json")
    if official is None:
        raise StageError(f"evaluate.py wrote no {folder / 'resultPixelLevelSemanticLabeling.json'}")
    result: dict[str, Any] = {
        "miou": official.get("averageScoreClasses"),
        "iiou": official.get("averageScoreInstClasses"),
        "miou_categories": official.get("averageScoreCategories"),
        "iiou_categories": official.get("averageScoreInstCategories"),
        "class_set": official.get("classSet", "cityscapes19"),
    }
    calibration = _read_json(folder / "calibration.json") or {}
    result["ece"] = calibration.get("ece")
    result["safety_mean_recall"] = calibration.get("safety_mean_recall")
    result["safety"] = calibration.get("safety")
    mc = calibration.get("mc") or {}
    result["mc_auroc"] = mc.get("auroc")
    robustness = _read_json(folder / "robustness.json") or {}
    result["mean_corruption_miou"] = robustness.get("mean_corruption_miou")
    result["relative_robustness"] = robustness.get("relative_robustness")
    result["corruption_miou"] = robustness.get("miou")
    return result


def read_time(folder: Path) -> dict[str, Any]:
    """Per backend: median ms, images/s, what ran; and the model's params and GFLOPs."""
    report = _read_json(folder / "time.json")
    if report is None:
        raise StageError(f"benchmark.py wrote no {folder / 'time.json'}")
    result: dict[str, Any] = {"params": None, "gflops": None, "backends": {}}
    for row in report["rows"]:
        result["params"] = result["params"] or row.get("params")
        result["gflops"] = result["gflops"] or row.get("gflops")
        ok = row.get("status") == "ok" and row.get("median_ms")
        result["backends"][row["backend"]] = {
            "median_ms": row.get("median_ms") if ok else None,
            "p90_ms": row.get("p90_ms") if ok else None,
            "images_per_s": (1000.0 * row["batch"] / row["median_ms"]) if ok else None,
            "ran_on": row.get("ran_on"),
            "status": row.get("status"),
        }
    result["machine"] = report["meta"].get("machine")
    return result


# --------------------------------------------------------------------------- running


Log = Callable[[str], None]


def run_stage(model: Model, stage: str, command: list[str], log: Log) -> None:
    """Run one stage's command with its output in STAGE.log; StageError when it fails."""
    log_path = model.folder / f"{stage}.log"
    model.folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "w") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        status = subprocess.run(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    seconds = time.monotonic() - start
    if status != 0:
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        last = (errors or lines or ["(no output)"])[-1]
        raise StageError(
            f"{model.label}: stage {stage} failed (exit status {status}) after {seconds:.0f} s: "
            f"{last}  [log: {log_path}]"
        )
    log(f"  {stage}: done in {seconds:.0f} s")


def _shown(command: list[str]) -> str:
    """A stage's command as a user would type it: `python train.py -m ...`."""
    return shlex.join(["python", Path(command[1]).name, *command[2:]])


def _check_same(model: Model, stage: str, record: dict[str, Any], command: list[str]) -> None:
    """A stage done with another command would mix settings in one row: refuse it."""
    if record.get("command") != command:
        raise BadInput(
            f"{model.folder / stage} was made by another command than this study's "
            f"({shlex.join(record.get('command') or [])!r}, now {shlex.join(command)!r}); "
            "use another --output-dir, or move that folder away to redo the stage"
        )


def run_model(config: StudyConfig, model: Model, root: str, log: Log) -> None:
    """Run the stages of one model that are not done yet."""
    # train (or take the given weights)
    weights = given_weights(config, model)
    if weights is None:
        command = train_command(config, model, root)
        record = model.done("train")
        if record is None:
            log(f"  train: {_shown(command)}")
            run_stage(model, "train", command, log)
            figures = read_train(model.folder / "train")
            weights = model.folder / "train" / "last.weights.h5"
            if not weights.is_file():
                raise StageError(f"{model.label}: train.py ended without {weights}")
            record = {"command": command, "weights": str(weights), **figures}
            write_json(model.done_path("train"), record)
        else:
            _check_same(model, "train", record, command)
            log("  train: done before, skipped")
    else:
        record = model.done("train")
        command = ["weights", str(weights)]
        if record is None:
            figures = read_train(weights.parent if weights.name.startswith("last.") else Path("-"))
            write_json(model.done_path("train"), {"command": command, "weights": str(weights),
                                                  **figures})  # fmt: skip
        else:
            _check_same(model, "train", record, command)
        log(f"  train: weights from {weights}")
    weights_path = str((model.done("train") or {})["weights"])

    for stage, command, read in (
        ("eval", eval_command(config, model, root, weights_path), read_eval),
        ("export", export_command(config, model, weights_path), None),
        ("time", time_command(config, model), read_time),
    ):
        record = model.done(stage)
        if record is not None:
            _check_same(model, stage, record, command)
            log(f"  {stage}: done before, skipped")
            continue
        log(f"  {stage}: {_shown(command)}")
        run_stage(model, stage, command, log)
        if read is not None:
            figures = read(model.folder / stage)
        else:
            onnx = _onnx_path(model)
            figures = {"onnx": str(onnx), "onnx_mb": onnx.stat().st_size / 1e6}
        write_json(model.done_path(stage), {"command": command, **figures})


def study_models(config: StudyConfig) -> list[Model]:
    """The study's models and their folders, in --models order."""
    folder = Path(config.output_dir) / STEM
    return [Model(n, dict(o), folder / model_key(n, o)) for n, o in config.models]


def study_root(config: StudyConfig) -> str:
    """The data root: -p/$CITYSCAPES_DATASET, or with --synthetic a generated (cached) tree."""
    from datasets.options import resolve_root

    size = config.size or SYNTHETIC_SIZE
    return str(
        resolve_root(
            config.root,
            synthetic=config.synthetic,
            num_synthetic=SYNTHETIC_IMAGES,
            synthetic_size=size,
        )
    )


def run_study(
    config: StudyConfig, log: Log = print, task: int | None = None, report: bool = True
) -> tuple[list[str], dict[str, Path]]:
    """Run every model's missing stages (only model `task` when given), then write the report.

    Returns the failures (one line each) and the report's files. A failing stage stops its
    model, not the study: the other models run and the report shows what is there.
    """
    models = study_models(config)
    if task is not None:
        if not 0 <= task < len(models):
            raise BadInput(f"--task {task} is out of range: the study has {len(models)} models")
        models = [models[task]]
    for model in models:  # before hours of work: every --weights-dir file is there
        given_weights(config, model)
    root = study_root(config) if models else ""
    failures: list[str] = []
    for i, model in enumerate(models, 1):
        log(f"[{i}/{len(models)}] {model.label} -> {model.folder}")
        try:
            run_model(config, model, root, log)
        except StageError as exc:
            failures.append(str(exc))
            log(f"  failed: {exc}")
    paths = write_report(config) if report else {}
    return failures, paths


# --------------------------------------------------------------------------- the report


def collect(config: StudyConfig) -> list[dict[str, Any]]:
    """One row per model from the finished stages (None where a stage is missing)."""
    rows = []
    for model in study_models(config):
        row: dict[str, Any] = {"model": model.label, "name": model.name, "options": model.options}
        row["stages_done"] = [s for s in STAGES if model.done(s) is not None]
        for stage in STAGES:
            record = model.done(stage) or {}
            row.update({k: v for k, v in record.items() if k != "command"})
        rows.append(row)
    for row in rows:
        speeds = {b: v for b, v in (row.get("backends") or {}).items() if v.get("median_ms")}
        fastest = min(speeds, key=lambda b: speeds[b]["median_ms"], default=None)
        row["fastest_backend"] = fastest
        row["latency_ms"] = speeds[fastest]["median_ms"] if fastest else None
    points = _points(rows)
    front = {p[0] for p in pareto_front(points)}
    for row in rows:
        row["pareto"] = row["model"] in front
    return rows


def _points(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(model, latency ms, mIoU) of the rows that have both figures."""
    return [(r["model"], r["latency_ms"], r["miou"]) for r in rows
            if r.get("latency_ms") and r.get("miou") is not None]  # fmt: skip


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _backends(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(b for r in rows for b in (r.get("backends") or {})))


def table(rows: list[dict[str, Any]], full: bool) -> tuple[list[str], list[list[str]]]:
    """The study's header and cells: `full` adds the per-backend columns and the training ones."""
    backends = _backends(rows)
    header = ["model", "mIoU %", "cat. mIoU %", "iIoU %", "corr. mIoU %", "rel. robust.",
              "ECE %", "safety recall %", "params (M)", "GFLOPs", "fastest", "ms", "img/s",
              "Pareto"]  # fmt: skip
    if full:
        header += [f"{b} ms" for b in backends] + [f"{b} img/s" for b in backends]
        header += ["train img/s", "s/epoch", "epochs", "stages done"]
    cells = []
    for r in rows:
        fastest = (r.get("backends") or {}).get(r["fastest_backend"] or "", {})
        line = [
            r["model"],
            _pct(r.get("miou")),
            _pct(r.get("miou_categories")),
            _pct(r.get("iiou")),
            _pct(r.get("mean_corruption_miou")),
            fmt(r.get("relative_robustness"), 2),
            _pct(r.get("ece")),
            _pct(r.get("safety_mean_recall")),
            fmt(r.get("params") and r["params"] / 1e6, 2),
            fmt(r.get("gflops"), 1),
            r["fastest_backend"] or "-",
            fmt(r.get("latency_ms"), 1),
            fmt(fastest.get("images_per_s"), 2),
            "yes" if r["pareto"] else "",
        ]
        if full:
            per = r.get("backends") or {}
            line += [fmt((per.get(b) or {}).get("median_ms"), 1) for b in backends]
            line += [fmt((per.get(b) or {}).get("images_per_s"), 2) for b in backends]
            line += [
                fmt(r.get("train_images_per_s"), 2),
                fmt(r.get("epoch_time_s"), 1),
                str(r.get("epochs") or "-"),
                ",".join(r["stages_done"]) or "none",
            ]
        cells.append(line)
    return header, cells


CSV_COLUMNS = ("model", "miou", "miou_categories", "iiou", "iiou_categories",
               "mean_corruption_miou", "relative_robustness", "ece", "safety_mean_recall",
               "mc_auroc", "params", "gflops", "fastest_backend", "latency_ms", "pareto",
               "train_images_per_s", "epoch_time_s", "epochs", "weights", "onnx", "class_set")  # fmt: skip


def _machine(rows: list[dict[str, Any]]) -> str:
    """Which machine timed the rows (the first timed row's), in words."""
    from utils.machine import measured_on

    for r in rows:
        if r.get("machine"):
            return measured_on(r["machine"])
    return "no model timed yet"


NOTES = (
    "mIoU %, cat. mIoU %, iIoU %: the official Cityscapes pixel-level scores (evaluate.py, "
    "cityscapesscripts' definitions) on the val split at the input size below, class scores "
    "resized to the full-resolution ground truth",
    "corr. mIoU %: the mean mIoU over the corruptions and severities evaluated (fog, rain, snow, "
    "sun flare, shadow, gaussian noise, motion blur, JPEG, brightness/contrast; fixed seeds); "
    "rel. robust.: corr. mIoU / mIoU (Kamann and Rother, CVPR 2020)",
    "ECE %: pixel-level expected calibration error of the softmax confidence, 15 bins; safety "
    "recall %: mean recall of person, rider, car, truck, bus, bicycle, motorcycle, traffic light, "
    "traffic sign and pole",
    "params, GFLOPs: of the inference graph at the input size; fastest, ms, img/s: the backend "
    "with the lowest median latency at batch 1 and its images/s (from the median); latencies are "
    "this machine's, not a Jetson's",
    "Pareto: no other model has both a higher mIoU and a lower latency",
)


def write_report(config: StudyConfig) -> dict[str, Path]:
    """Write study.{json,csv,md,png} into the output folder; returns their paths."""
    rows = collect(config)
    out = Path(config.output_dir)
    paths = {ext: out / f"{STEM}.{ext}" for ext in ("json", "csv", "md", "png")}
    machine = _machine(rows)
    meta = {
        "command": config.command,
        "machine": machine,
        "input_size": list(config.eval_size),
        "synthetic": config.synthetic,
        "root": config.root,
        "class_set": config.classes,
    }
    write_json(paths["json"], {"meta": meta, "rows": rows})
    write_csv(paths["csv"], rows, CSV_COLUMNS)
    header, cells = table(rows, full=True)
    h, w = config.eval_size
    data = (
        "synthetic data (generated; not a result about Cityscapes)"
        if config.synthetic
        else (f"Cityscapes at {config.root or '$CITYSCAPES_DATASET'}")
    )
    lines = [
        "# Study: accuracy, robustness and speed per model",
        "",
        f"- Command: `{config.command}`",
        f"- Data: {data}; input {h}x{w}, batch 1",
        f"- Timing: {machine}",
        "",
        markdown_table(header, cells),
        "",
        *[f"- {note}" for note in NOTES],
        "",
        f"![accuracy against latency]({paths['png'].name})",
        "",
    ]
    write_text(paths["md"], "\n".join(lines))
    points = _points(rows)
    if points:
        title = f"Study: val mIoU against latency, {h}x{w}, batch 1" + (
            " (synthetic data)" if config.synthetic else ""
        )
        plot_pareto(points, paths["png"], title, machine)
    else:
        paths.pop("png")
    return paths


def text_summary(config: StudyConfig) -> str:
    """The compact table for the terminal."""
    header, cells = table(collect(config), full=False)
    return text_table(header, cells)
