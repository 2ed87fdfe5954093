"""benchmark.py study: every stage on synthetic data, resumed after a kill, and as a SLURM job
array with a report job (scripts/slurm_study.sh on the one-node cluster of conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.plots import pareto_front

MODELS = ("fastscnn", "bisenetv2")
STUDY = ["--synthetic", "--models", *MODELS, "--budget", "3", "--seed", "0"]
CORRUPT = ["--corruptions", "fog", "gaussian_noise", "--severities", "1,3"]
STAGES = ("train", "eval", "export", "time")


def _study(args, out: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "benchmark.py", "study", *args, "--output-dir", str(out)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> tuple[Path, str, str]:
    """A study of two light models, killed once between stages and rerun to the end:
    (output folder, the rerun's output, a third run's output)."""
    out = tmp_path_factory.mktemp("study")
    first = _study(STUDY + CORRUPT, out)
    marker = out / "study" / "fastscnn" / "eval.done.json"
    end = time.monotonic() + 600
    while not marker.exists() and first.poll() is None and time.monotonic() < end:
        time.sleep(0.2)
    assert marker.exists(), first.communicate()[0] if first.poll() is not None else "timeout"
    os.killpg(first.pid, signal.SIGKILL)  # the study and the stage it has started
    first.communicate()
    assert not (out / "study.json").exists()
    assert not (out / "study" / "fastscnn" / "time.done.json").exists()
    second = _study(STUDY + CORRUPT, out)
    rerun = second.communicate(timeout=900)[0]
    assert second.returncode == 0, rerun
    third = _study(STUDY + CORRUPT, out)
    again = third.communicate(timeout=300)[0]
    assert third.returncode == 0, again
    return out, rerun, again


def test_study_writes_every_file_and_figure(finished_study):
    out, _, _ = finished_study
    for ext in ("md", "csv", "json", "png"):
        assert (out / f"study.{ext}").stat().st_size > 0
    report = json.loads((out / "study.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert list(rows) == list(MODELS)
    assert report["meta"]["synthetic"] is True and "cores" in report["meta"]["machine"]
    for name, row in rows.items():
        folder = out / "study" / name
        assert row["stages_done"] == list(STAGES)
        official = json.loads(
            (folder / "eval" / "resultPixelLevelSemanticLabeling.json").read_text()
        )
        assert row["miou"] == official["averageScoreClasses"]
        assert row["iiou"] == official["averageScoreInstClasses"]
        assert row["miou_categories"] == official["averageScoreCategories"]
        robustness = json.loads((folder / "eval" / "robustness.json").read_text())
        assert set(robustness["miou"]) == {"fog", "gaussian_noise"}
        per = [v for c in robustness["miou"].values() for v in c.values()]
        assert len(per) == 4
        assert row["mean_corruption_miou"] == pytest.approx(sum(per) / 4)
        assert row["relative_robustness"] == pytest.approx(
            row["mean_corruption_miou"] / row["miou"]
        )
        assert 0.0 <= row["ece"] <= 1.0
        assert 0.0 <= row["safety_mean_recall"] <= 1.0
        assert row["params"] > 1e5 and row["gflops"] > 0
        assert row["train_images_per_s"] > 0 and row["epoch_time_s"] > 0 and row["epochs"] == 2
        assert (folder / "export" / "model.onnx").is_file()
        timed = {b: v for b, v in row["backends"].items() if v["median_ms"]}
        assert "onnxruntime" in timed
        fastest = min(timed, key=lambda b: timed[b]["median_ms"])
        assert row["fastest_backend"] == fastest
        assert row["latency_ms"] == timed[fastest]["median_ms"]
        assert timed[fastest]["images_per_s"] == pytest.approx(1000.0 / row["latency_ms"])
    front = {p[0] for p in pareto_front([(m, r["latency_ms"], r["miou"]) for m, r in rows.items()])}
    assert front and [r["pareto"] for r in rows.values()] == [m in front for m in rows]
    md = (out / "study.md").read_text()
    assert "synthetic data" in md and "Pareto" in md and "study.png" in md
    csv_lines = (out / "study.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(MODELS) and csv_lines[0].startswith("model,miou,")


def test_study_resumes_and_skips_finished_stages(finished_study):
    out, rerun, again = finished_study
    # the rerun after the kill: fastscnn's train and eval were done, the rest ran
    fastscnn, bisenet = rerun.split("] bisenetv2")
    assert "train: done before, skipped" in fastscnn and "eval: done before, skipped" in fastscnn
    assert "export: done in" in fastscnn and "time: done in" in fastscnn
    assert "train: done in" in bisenet and "skipped" not in bisenet
    # a third run runs nothing and writes the same rows
    assert again.count("done before, skipped") == len(MODELS) * len(STAGES), again
    assert "done in" not in again


def test_study_refuses_a_stage_done_with_other_settings(finished_study, run_cli):
    out, _, _ = finished_study
    result = run_cli(
        "benchmark.py", "study", *STUDY, *CORRUPT, "--epochs", "3", "--output-dir", str(out)
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.error_lines
    assert str(out / "study" / "fastscnn" / "train") in line and "another --output-dir" in line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--severities", "0,3"], "expected distinct severities 1-5"),
        (["--corruptions", "smoke"], "invalid choice: 'smoke'"),
        (["--classes", "rail19"], "invalid choice: 'rail19'"),
        (["--no-corruptions", "--severities", "1"], "--no-corruptions"),
        (["--weights-dir", "{tmp}"], "has no weights for fastscnn"),
        (["--task", "5"], "--task 5 is out of range"),
    ],
)
def test_study_bad_input(args, words, run_cli, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli("benchmark.py", "study", *STUDY, *args, "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    (line,) = result.error_lines
    assert words in line
    assert not (tmp_path / "out" / "study").exists()


def test_study_takes_corruptions_and_severities_as_evaluate_does():
    """--corruptions and --severities: the names and the parsing of evaluate.py's."""
    import benchmark
    import evaluate

    (commands,) = [a for a in benchmark.build_parser()._actions if a.dest == "command"]
    study, theirs = commands.choices["study"], evaluate.build_parser()
    for dest in ("corruptions", "severities"):
        ours = next(a for a in study._actions if a.dest == dest)
        same = next(a for a in theirs._actions if a.dest == dest)
        assert (ours.choices, ours.type) == (same.choices, same.type), dest
    words = ["--corruptions", "rain", "fog", "--severities", "3,1"]
    args, expected = study.parse_args(words), theirs.parse_args(words)
    assert (args.corruptions, args.severities) == (expected.corruptions, expected.severities)
    assert args.severities == (1, 3)
    args = study.parse_args([])
    assert (args.corruptions, args.severities, args.classes) == ([], None, "cityscapes19")


def _job(job_id: str) -> dict[str, str]:
    import re

    text = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def test_study_as_a_slurm_job_array(finished_study, slurm_cluster, repo_root, tmp_path):
    """Two array tasks (one model each, the weights of the study above) and a report job after
    them (afterok) write the same study files."""
    trained, _, _ = finished_study
    out = tmp_path / "slurm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PYTHON=sys.executable,
        STUDY_SBATCH="--gpus-per-task=0 --cpus-per-task=1 --time=15:00",
        CUDA_VISIBLE_DEVICES="",
    )
    args = [*STUDY, "--no-corruptions", "--weights-dir", str(trained / "study")]
    proc = subprocess.run(
        ["bash", "scripts/slurm_study.sh", *args, "--output-dir", str(out)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    array = lines[0].split("job array ")[1].split(":")[0]
    report = lines[-2].split("report job ")[1].split()[0]
    assert "task 0: fastscnn" in proc.stdout and "task 1: bisenetv2" in proc.stdout
    assert _job(report).get("Dependency", "").startswith(f"afterok:{array}")
    end = time.monotonic() + 900
    while time.monotonic() < end and _job(report).get("JobState") not in (
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
    ):  # fmt: skip
        time.sleep(1)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(out.glob("slurm-study-*.out")))
    assert _job(report).get("JobState") == "COMPLETED", logs
    for task in (0, 1):
        assert _job(f"{array}_{task}").get("JobState") == "COMPLETED", logs
    rows = json.loads((out / "study.json").read_text())["rows"]
    assert [r["model"] for r in rows] == list(MODELS)
    for row in rows:
        assert row["stages_done"] == list(STAGES)
        assert row["weights"].startswith(str(trained / "study"))
        assert row["miou"] is not None and row["latency_ms"] > 0
        assert row["mean_corruption_miou"] is None  # --no-corruptions
    assert (out / "study.png").is_file() and (out / "study.md").is_file()
    # the array's tasks wrote no report: only the report job did
    task_logs = sorted(out.glob("slurm-study-[0-9]*_*.out"))
    assert len(task_logs) == 2 and all("results in" not in p.read_text() for p in task_logs)
