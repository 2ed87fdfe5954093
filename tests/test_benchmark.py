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
        achieved = row["gflops"] * row["batch"] / (row["median_ms"] / 1e3)
        assert row["achieved_gflops_per_s"] == pytest.approx(achieved)
        assert row["pct_of_matmul_peak"] == pytest.approx(100 * achieved / matmul)
        assert row["pct_of_peak"] == pytest.approx(100 * achieved / dense)
        # every throughput figure from the median (issue 19)
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1e3 / row["median_ms"])


@pytest.mark.slow
def test_roofline_and_tensorrt_scan_of_the_run(report):
    """Every row carries its export's traffic and TensorRT scan, and the roofline of the run's
    own peak and copy bandwidth."""
    from bench.roofline import roofline

    meta = report["meta"]
    bandwidth = max(
        meta["copy_bandwidth_start"]["best_gbs"], meta["copy_bandwidth_end"]["best_gbs"]
    )
    assert meta["copy_bandwidth_gbs"] == pytest.approx(bandwidth) and bandwidth > 0
    assert meta["ridge_flop_per_byte"] == pytest.approx(meta["peak_gflops"] / bandwidth)
    # input and logits alone: (64 x 128 x 3 + 64 x 128 x 19) float32 values
    least_mb = 4 * SIZE[0] * SIZE[1] * (3 + 19) / 1e6
    for row in report["rows"]:
        assert row["traffic_mb"] > least_mb and 0 < row["weight_mb"] < row["traffic_mb"]
        assert row["tensorrt_ready"] is True and row["tensorrt_problems"] == []
        roof = roofline(row["gflops"] * 1e9, row["traffic_mb"] * 1e6,
                        meta["peak_gflops"] * 1e9, bandwidth * 1e9)  # fmt: skip
        assert row["roofline_bound_ms"] == pytest.approx(1e3 * roof.bound_s)
        assert row["roofline_share_pct"] == pytest.approx(
            100 * roof.bound_s / (row["median_ms"] / 1e3)
        )
        assert row["bound_by"] == roof.bound_by


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
    from bench.latency import DEFAULT_BACKENDS, resolve_backends
    from inference.runtimes import available

    assert benchmark.build_parser().parse_args([]).backends is None
    assert DEFAULT_BACKENDS == ("onnxruntime", "openvino")
    want = ["onnxruntime"] if available("openvino") else ["onnxruntime", "openvino"]
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


def test_options_hold_the_library_defaults_and_stay_light(repo_root):
    """bench.options (benchmark.py's parser) holds the defaults bench.latency uses (one place)
    and imports neither numpy nor TensorFlow itself."""
    import subprocess
    import sys

    from bench import latency, options
    from inference.runtimes import PRECISIONS, RUNTIME_NAMES

    assert latency.InferenceConfig().output_dir == options.DEFAULT_OUTPUT_DIR
    assert latency.InferenceConfig().sizes == [options.REFERENCE_SIZE]
    parser = benchmark.build_parser()
    actions = {a.dest: a for a in parser._actions}
    assert actions["precision"].choices == PRECISIONS
    every = ",".join(RUNTIME_NAMES)
    assert parser.parse_args(["--backends", every]).backends == list(RUNTIME_NAMES)
    code = "import sys, bench.options; print(sorted({'numpy', 'tensorflow'} & set(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stdout


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


# --------------------------------------------------------------------------- roofline (issue 16)


def _conv_relu_add_graph(batch_dim=1):
    """Conv (3->4, 3x3, pad 1) on (1, 3, 8, 8), Relu, Add of a Constant scalar: no value_info,
    so every intermediate shape comes from shape inference."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["Y"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["Y"], ["Z"]),
        helper.make_node(
            "Constant", [], ["C"], value=numpy_helper.from_array(np.ones(1, np.float32))
        ),
        helper.make_node("Add", ["Z", "C"], ["OUT"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu_add",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch_dim, 3, 8, 8])],
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "W"),
            numpy_helper.from_array(np.zeros(4, np.float32), "B"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_traffic_of_a_hand_made_graph_equals_the_hand_count(tmp_path):
    import onnx

    from bench.roofline import onnx_traffic

    x, y = 1 * 3 * 8 * 8 * 4, 1 * 4 * 8 * 8 * 4  # bytes of the input and of each 4-channel map
    # Conv reads X, writes Y; Relu reads Y, writes Z; Add reads Z, writes OUT (the Constant
    # and the initializers are weights, read once: W 4*3*3*3, B 4, C 1 float32 values)
    want_activations = (x + y) + (y + y) + (y + y)
    want_weights = 4 * (4 * 3 * 3 * 3 + 4 + 1)
    path = tmp_path / "g.onnx"
    onnx.save(_conv_relu_add_graph(), str(path))
    for source in (path, _conv_relu_add_graph()):
        traffic = onnx_traffic(source)
        assert (traffic.activation_bytes, traffic.weight_bytes) == (want_activations, want_weights)
        assert traffic.total_bytes == 5888 + 452 and traffic.nodes == 3 and not traffic.unknown
    # a symbolic batch leaves the shapes unknown: named, not counted
    unknown = onnx_traffic(_conv_relu_add_graph("N"))
    assert unknown.activation_bytes == 0 and {"X", "Y", "Z", "OUT"} <= set(unknown.unknown)


def test_roofline_bound_by_hand():
    from bench.roofline import roofline

    # 2 GFLOP moving 1 GB on a 100 GFLOP/s, 10 GB/s machine: 0.02 s of compute, 0.1 s of traffic
    roof = roofline(2e9, 1e9, 100e9, 10e9)
    assert roof.compute_s == pytest.approx(0.02) and roof.memory_s == pytest.approx(0.1)
    assert roof.bound_s == pytest.approx(0.1) and roof.bound_by == "memory"
    assert roof.intensity == pytest.approx(2.0) and roof.ridge == pytest.approx(10.0)
    assert roof.share_pct(0.2) == pytest.approx(50.0)
    heavy = roofline(3e12, 1e9, 100e9, 10e9)  # 3000 FLOP/byte, far above the ridge
    assert heavy.bound_s == pytest.approx(30.0) and heavy.bound_by == "compute"
    with pytest.raises(ValueError, match="positive"):
        roofline(1e9, 0, 100e9, 10e9)
    with pytest.raises(ValueError, match="positive"):
        roof.share_pct(0.0)


def _timed_row(backend="onnxruntime", **values):
    from bench.rows import job_rows

    row = job_rows("fastscnn", {}, (1024, 2048), 1, [backend], "fp32")[0]
    row.record({"status": "ok", "params": 1_100_000, "gflops": 14.0, "mean_ms": 320.0,
                "median_ms": 280.0, "p90_ms": 350.0, "images_per_s": 1e3 / 280.0,
                "traffic_mb": 2800.0, "weight_mb": 4.5, "tensorrt_ready": True,
                "tensorrt_problems": [], "iterations": 12, "budget_limited": False,
                "overhead_pct": 0.1, "timed_s": 3.4, "warmup_iters": 1, **values})  # fmt: skip
    return row


def test_finish_rows_adds_the_roofline_from_the_median():
    from bench.latency import finish_rows

    row = _timed_row()
    finish_rows([row], peak_gflops=400.0, min_iters=10, min_duration_s=3.0,
                matmul_peak_gflops=350.0, bandwidth_gbs=20.0)  # fmt: skip
    # 14 GFLOP at 400 GFLOP/s: 35 ms; 2.8 GB at 20 GB/s: 140 ms -> memory-bound, bound 140 ms
    assert row.roofline_bound_ms == pytest.approx(140.0)
    assert row.bound_by == "memory" and row.arithmetic_intensity == pytest.approx(14e9 / 2.8e9)
    assert row.roofline_share_pct == pytest.approx(50.0)  # 140 ms of a 280 ms median
    assert row.achieved_gflops_per_s == pytest.approx(14.0 / 0.280)  # the median, not the mean
    assert row.pct_of_matmul_peak == pytest.approx(100 * 50.0 / 350.0)
    no_export = _timed_row(traffic_mb=None)
    finish_rows([no_export], 400.0, 10, 3.0, 350.0, 20.0)
    assert no_export.roofline_bound_ms is None and no_export.bound_by is None


# --------------------------------------------------------------------------- tables (issue 19)


def _meta():
    from utils.machine import machine_info

    peak = {"n": 2048, "conv": "3x3 256->256 on 128x128",
            "numpy": {"best_gflops": 340.0, "median_gflops": 320.0}}  # fmt: skip
    bandwidth = {"best_gbs": 21.0, "median_gbs": 19.0, "mib": 256, "threads": 2}
    return {
        "command": "python benchmark.py", "date_utc": "today", "machine": machine_info(),
        "peak_start": peak, "peak_end": peak, "peak_during_gflops": [380.0],
        "peak_gflops": 400.0, "matmul_peak_gflops": 350.0, "copy_bandwidth_start": bandwidth,
        "copy_bandwidth_end": bandwidth, "copy_bandwidth_gbs": 21.0, "ridge_flop_per_byte": 19.0,
        "settings": {"precision": "fp32", "warmup_s": 0.2, "min_iters": 10,
                     "min_duration_s": 3.0, "budget_s": 420.0},
        "conventions": "conventions text",
    }  # fmt: skip


def test_compact_table_columns_and_marks(tmp_path):
    from bench.latency import finish_rows
    from utils.machine import machine_info

    ort = _timed_row()
    ov = _timed_row("openvino", median_ms=200.0, budget_limited=True)
    failed = _timed_row("tf", status="error: killed (signal 9; out of memory?)")
    rows = [ort, ov, failed]
    finish_rows(rows, 400.0, 10, 3.0, 350.0, 21.0)
    (tmp_path / "study.json").write_text(
        json.dumps({"meta": {}, "rows": [{"model": "fastscnn", "miou": 0.634}]})
    )
    report = {"meta": _meta(), "rows": rows}
    bench_report.write_reports(report, tmp_path, "benchmark")
    text = bench_report.text_summary(report, tmp_path / "benchmark")
    lines = text.splitlines()
    info = machine_info()
    assert info["cpu"] in lines[0] and "not a Jetson" in lines[0]
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["model", "backend", "precision", "params", "(M)", "GFLOPs/img",
                                "median", "ms", "p90", "ms", "img/s", "TRT-ready", "mIoU", "%"]  # fmt: skip
    cells = {line.split()[1]: line.split() for line in table[2:5]}
    # img/s from the median (1000 / 280 ms), the faster CPU runtime starred, budget-limited ~
    assert cells["onnxruntime"][2:] == ["fp32", "1.10", "14.0", "280.0", "350.0", "3.57", "yes",
                                        "63.4"]  # fmt: skip
    assert cells["OpenVINO*"][5] == "~200.0"
    assert cells["TF"][6:9] == ["-", "-", "-"]  # "TF graph" is two words
    assert "killed (signal 9" in text and "budget-limited" in text
    assert max(len(line) for line in lines) <= 120
    assert ort.miou == pytest.approx(0.634) and ort.miou_source == "study.json"
    # the full page explains every one of its columns, and names the machine
    md = (tmp_path / "benchmark.md").read_text()
    notes = bench_report.column_notes(report["meta"])
    assert set(bench_report.TABLE_HEADER) <= set(notes)
    for header in bench_report.TABLE_HEADER:
        assert f"- **{header}**: " in md
    assert "this CPU, not a Jetson" in md and "ridge point 19.0 FLOP/byte" in md
    assert {h for h, _ in bench_report.COMPACT_COLUMNS} <= set(notes)
    header = (tmp_path / "benchmark.csv").read_text().splitlines()[0].split(",")
    want = {"roofline_share_pct", "roofline_bound_ms", "traffic_mb", "bound_by",
            "arithmetic_intensity", "tensorrt_ready", "miou", "miou_source"}  # fmt: skip
    assert want <= set(header)
    assert (tmp_path / "benchmark_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_accuracy_results_read_study_and_evaluate_files(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"meta": {}, "rows": [
        {"model": "fastscnn", "miou": 0.61}, {"model": "fastscnn", "miou": 0.63},
        {"model": "unet", "miou": 0.55}, {"model": "bad", "miou": "n/a"}]}))  # fmt: skip
    (tmp_path / "unet_val.json").write_text(
        json.dumps({"model": "unet", "averageScoreClasses": 0.57})
    )
    (tmp_path / "benchmark.json").write_text(json.dumps({"averageScoreClasses": 0.9}))
    found = bench_report.accuracy_results(tmp_path)
    # a model on several study rows keeps its best; evaluate.py's file wins over the study
    assert found == {"fastscnn": (0.63, "study.json"), "unet": (0.57, "unet_val.json")}
    assert bench_report.load_accuracy_results(tmp_path) == {"fastscnn": 0.63, "unet": 0.57}


def test_pareto_front_and_plot(tmp_path):
    from bench import plots

    points = [("a", 100.0, 0.60), ("b", 50.0, 0.50), ("c", 200.0, 0.55), ("d", 400.0, 0.70),
              ("e", 50.0, 0.40)]  # fmt: skip
    assert [p[0] for p in plots.pareto_front(points)] == ["b", "a", "d"]
    path = bench_report.plot_pareto(points, tmp_path / "p.png", "mIoU against latency", "here")
    assert path.read_bytes()[:4] == b"\x89PNG"
    for bad in ([], [("a", 0.0, 0.5)], [("a", 10.0, 63.0)]):
        with pytest.raises(ValueError, match="point"):
            bench_report.plot_pareto(bad, tmp_path / "bad.png", "t", "m")
    assert not (tmp_path / "bad.png").exists()
    assert plots.needs_log([1.0, 101.0]) and not plots.needs_log([1.0, 100.0])
