"""Tests of benchmark.py and bench/: the table and files, derived figures, subcommands, bad input."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

import benchmark
from bench import report as bench_report

MODELS = ["separable_unet", "fastscnn"]
SIZE = (64, 128)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One small inference benchmark: two models at 64x128, TF graph and onnxruntime."""
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--models",
        *MODELS,
        "--sizes",
        f"{SIZE[0]},{SIZE[1]}",
        "--backends",
        "tf,onnxruntime",
        "--budget",
        "60",
        "--min-iters",
        "3",
        "--min-duration",
        "0.05",
        "--warmup",
        "0.05",
        "--output-dir",
        str(out),
    ]
    assert benchmark.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def report(run_dir):
    return json.loads((run_dir / "benchmark.json").read_text())


@pytest.mark.slow
def test_files_are_written(run_dir):
    for ext in ("md", "csv", "json", "png"):
        path = run_dir / f"benchmark.{ext}"
        assert path.is_file() and path.stat().st_size > 0, path
    assert (run_dir / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob(".*tmp*")), "temporary files left behind"


@pytest.mark.slow
def test_every_model_and_backend_has_a_row(report):
    rows = report["rows"]
    assert [(r["model"], r["backend"]) for r in rows] == [
        (m, b) for m in MODELS for b in ("tf", "onnxruntime")
    ]
    for row in rows:
        assert row["status"] == "ok", row
        assert (row["height"], row["width"], row["batch"], row["precision"]) == (*SIZE, 1, "fp32")
        assert row["iterations"] >= 1
        assert row["min_ms"] <= row["median_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["min_ms"] <= row["mean_ms"] <= row["max_ms"]
        assert row["peak_rss_mb"] > 0


@pytest.mark.slow
def test_results_name_machine_versions_and_command(report, run_dir):
    meta = report["meta"]
    assert meta["machine"]["cpu"] and meta["machine"]["cores"] >= 1
    assert {"tensorflow", "onnxruntime", "keras"} <= set(meta["machine"]["versions"])
    assert "--models separable_unet fastscnn" in meta["command"]
    md = (run_dir / "benchmark.md").read_text()
    assert "Machine:" in md and meta["machine"]["cpu"] in md
    assert meta["command"] in md and "onnxruntime" in md and "TF graph" in md
    for model in MODELS:
        assert f"| {model} |" in md


@pytest.mark.slow
def test_params_and_compute_match_the_model(report):
    from bench.flops import model_macs
    from models import build_model, count_params

    for name in MODELS:
        model = build_model(name, (*SIZE, 3))
        expected = model_macs(model, SIZE)
        for row in (r for r in report["rows"] if r["name"] == name):
            assert row["params"] == count_params(model)
            assert row["gmacs"] == pytest.approx(expected.gmacs)
            assert row["gflops"] == pytest.approx(2 * row["gmacs"])


@pytest.mark.slow
def test_percent_of_peak_is_consistent_with_peak_and_gflops(report):
    """% peak = GFLOPs per batch / mean latency / the peak measured in the same run."""
    meta = report["meta"]
    matmul = max(meta["peak_start"][k]["best_gflops"] for k in ("numpy", "onnxruntime"))
    matmul = max(matmul, *(meta["peak_end"][k]["best_gflops"] for k in ("numpy", "onnxruntime")))
    dense = max(
        matmul,
        meta["peak_start"]["onnxruntime_conv"]["best_gflops"],
        meta["peak_end"]["onnxruntime_conv"]["best_gflops"],
        *meta["peak_during_gflops"],
    )
    assert meta["matmul_peak_gflops"] == pytest.approx(matmul)
    assert meta["peak_gflops"] == pytest.approx(dense)
    assert len(meta["peak_during_gflops"]) == len(report["rows"])
    for row in report["rows"]:
        achieved = row["gflops"] * row["batch"] / (row["mean_ms"] / 1e3)
        assert row["achieved_gflops_per_s"] == pytest.approx(achieved)
        assert row["pct_of_matmul_peak"] == pytest.approx(100 * achieved / matmul)
        assert row["pct_of_peak"] == pytest.approx(100 * achieved / dense)
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1e3 / row["mean_ms"])


@pytest.mark.slow
def test_speedup_and_overhead_are_consistent(report):
    rows = {(r["name"], r["backend"]): r for r in report["rows"]}
    for name in MODELS:
        tf_row, ort_row = rows[(name, "tf")], rows[(name, "onnxruntime")]
        assert tf_row["speedup_vs_tf"] == pytest.approx(1.0)
        assert ort_row["speedup_vs_tf"] == pytest.approx(tf_row["median_ms"] / ort_row["median_ms"])
        for row in (tf_row, ort_row):
            overhead_ms = row["feed_overhead_ms"] + row["loop_overhead_ms"]
            assert row["overhead_pct"] == pytest.approx(100 * overhead_ms / row["mean_ms"])


@pytest.mark.slow
def test_csv_matches_json(report, run_dir):
    with open(run_dir / "benchmark.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(report["rows"])
    for got, want in zip(rows, report["rows"], strict=True):
        assert got["model"] == want["model"] and got["backend"] == want["backend"]
        assert float(got["median_ms"]) == pytest.approx(want["median_ms"], rel=1e-5)
        assert float(got["pct_of_peak"]) == pytest.approx(want["pct_of_peak"], rel=1e-5)


@pytest.mark.slow
def test_accuracy_plot_when_evaluate_results_exist(report, run_dir, tmp_path):
    (tmp_path / "fastscnn_val.json").write_text(
        json.dumps({"model": "fastscnn", "averageScoreClasses": 0.42})
    )
    assert bench_report.load_accuracy_results(tmp_path) == {"fastscnn": 0.42}
    paths = bench_report.write_reports(report, tmp_path, "benchmark")
    assert paths["accuracy_png"].read_bytes()[:4] == b"\x89PNG"
    assert not (run_dir / "benchmark_accuracy.png").exists()


def test_rows_round_trip_and_csv_columns_are_row_fields():
    from bench.rows import CSV_COLUMNS, FIELDS, Row, job_rows

    rows = job_rows("deeplabv3+", {"backbone": "xception"}, SIZE, 2, ["tf", "onnxruntime"], "fp32")
    assert [(r.model, r.layout) for r in rows] == [
        ("deeplabv3+:backbone=xception", "NHWC"),
        ("deeplabv3+:backbone=xception", "NHWC"),
    ]
    rows[1].record({"status": "ok", "mean_ms": 2.5, "providers": ["CPUExecutionProvider"]})
    assert Row.from_dict(json.loads(json.dumps(rows[1].as_dict()))) == rows[1]
    assert set(CSV_COLUMNS) <= FIELDS
    with pytest.raises(ValueError, match="no field"):
        rows[0].record({"mean": 1.0})


def test_default_backends_are_onnxruntime_and_openvino():
    """The default CPU table sets onnxruntime and OpenVINO side by side (where it is installed)."""
    from bench.inference import DEFAULT_BACKENDS, resolve_backends
    from inference.openvino_backend import openvino_missing

    assert benchmark.build_parser().parse_args([]).backends is None
    assert DEFAULT_BACKENDS == ("onnxruntime", "openvino")
    want = ["onnxruntime"] if openvino_missing() else ["onnxruntime", "openvino"]
    assert resolve_backends(None) == want
    assert resolve_backends(["tf", "onnxruntime"]) == ["tf", "onnxruntime"]
    assert benchmark.build_parser().parse_args(["--backends", "openvino"]).backends == ["openvino"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "fastscnn", "--sizes", "100,200"], "Nearest valid sizes"),
        (["--models", "no_such_model"], "unknown model"),
        (["--models", "deeplabv3+:backbone"], "key=value"),
        (["--backends", "tf,cuda"], "backends"),
        (["--sizes", "64"], "H,W"),
    ],
)
def test_bad_input_is_one_error_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark.main([*argv, "--output-dir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert not list(tmp_path.iterdir()), "nothing is written on bad input"


def test_models_lists_the_registry(capsys):
    from models import MODELS as REGISTRY

    assert benchmark.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out


@pytest.mark.slow
def test_models_params_counts_and_writes(tmp_path, capsys):
    from models import build_model, count_params

    argv = [
        "models",
        "--params",
        "--models",
        "fastscnn",
        "deeplabv3+:backbone=mobilenetv2",
        "--size",
        "64,128",
        "--output-dir",
        str(tmp_path),
    ]
    assert benchmark.main(argv) == 0
    data = json.loads((tmp_path / "models.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["fastscnn", "deeplabv3+:backbone=mobilenetv2"]
    fast = data["rows"][0]
    assert fast["params"] == count_params(build_model("fastscnn", (64, 128, 3)))
    assert fast["reference_params"] == pytest.approx(1.11e6)
    assert fast["gflops"] == pytest.approx(2 * fast["gmacs"])
    assert (tmp_path / "models.md").read_text().count("fastscnn") >= 1
    assert (tmp_path / "models.csv").is_file()
    assert "GMACs" in capsys.readouterr().out


def test_model_variants_cover_both_backbones():
    from models import get_info

    assert [v["backbone"] for v in get_info("deeplabv3+").variants()] == [
        "mobilenetv2",
        "xception",
    ]
    assert get_info("fastscnn").variants() == [{}]


@pytest.mark.slow
def test_data_subcommand(synthetic_root, tmp_path):
    argv = [
        "data",
        "-p",
        str(synthetic_root),
        "--size",
        "64,128",
        "-b",
        "2",
        "--num-images",
        "4",
        "--repeats",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    assert benchmark.main(argv) == 0
    row = json.loads((tmp_path / "benchmark_data.json").read_text())["rows"][0]
    assert row["pipeline_images_per_s"] > 0 and row["decode_ceiling_images_per_s"] > 0
    assert row["repeats"] == 2 and row["all_runs_images_per_s"].count("/") == 4
    assert row["pipeline_cpu_ms_per_image"] > 0 and row["decode_ceiling_cpu_ms_per_image"] > 0
    assert all(row[f"{step}_ms_one_thread"] > 0 for step in ("image", "label", "augment"))
    assert "Machine:" in (tmp_path / "benchmark_data.md").read_text()


@pytest.mark.slow
def test_eval_subcommand(synthetic_root, tmp_path):
    work = tmp_path / "root"
    shutil.copytree(synthetic_root, work)
    out = tmp_path / "out"
    argv = ["eval", "-p", str(work), "--num-files", "2", "--repeats", "1", "--output-dir", str(out)]
    assert benchmark.main(argv) == 0
    row = json.loads((out / "benchmark_eval.json").read_text())["rows"][0]
    assert row["ours_s"] > 0 and row["max_abs_difference"] == 0
    assert row["numpy_matmul_gflops"] > 0 and "cityscapesscripts" in row["versions"]
    page = (out / "benchmark_eval.md").read_text()
    assert "speed-up over the official script" in page and "Machine:" in page


@pytest.mark.slow
def test_train_subcommand(tmp_path):
    argv = [
        "train",
        "--models",
        "fastscnn",
        "--size",
        "64,128",
        "-b",
        "1",
        "--steps",
        "1",
        "--warmup-steps",
        "1",
        "--output-dir",
        str(tmp_path),
    ]
    assert benchmark.main(argv) == 0
    row = json.loads((tmp_path / "benchmark_train.json").read_text())["rows"][0]
    assert row["model"] == "fastscnn" and row["images_per_s"] > 0


@pytest.mark.slow
def test_slow_onnxruntime_rows_are_profiled(report, run_dir):
    """--profile auto explains every onnxruntime row below half the dense peak seen so far."""
    meta = report["meta"]
    rows = [r for r in report["rows"] if r["backend"] == "onnxruntime"]
    for i, row in enumerate(report["rows"]):
        if row["backend"] != "onnxruntime":
            continue
        seen = max(meta["peak_during_gflops"][: i + 1])
        if row["achieved_gflops_per_s"] < 0.5 * seen:
            ops = row["profile"]["by_op_type"]
            assert ops and sum(o["pct"] for o in ops) == pytest.approx(100.0)
            assert "ORT time by op" in row["note"]
    if any(r.get("profile") for r in rows):
        assert "Where onnxruntime spends the time" in (run_dir / "benchmark.md").read_text()


def test_default_output_is_under_runs(synthetic_root, tmp_path, monkeypatch):
    """A subcommand without --output-dir writes into runs/benchmark, never the committed results/."""
    monkeypatch.chdir(tmp_path)
    argv = ["data", "-p", str(synthetic_root), "--size", "64,128", "-b", "2"]
    assert benchmark.main([*argv, "--num-images", "2", "--repeats", "1", "--workers", "1"]) == 0
    assert (tmp_path / "runs" / "benchmark" / "benchmark_data.json").is_file()
    assert not (tmp_path / "results").exists()
    # the top-level --output-dir reaches the subcommands too
    parser = benchmark.build_parser()
    assert parser.parse_args(["--output-dir", "D", "models"]).output_dir == "D"
    assert parser.parse_args(["models", "--output-dir", "E"]).output_dir == "E"
    assert parser.parse_args([]).output_dir == benchmark.DEFAULT_OUTPUT_DIR == "runs/benchmark"
