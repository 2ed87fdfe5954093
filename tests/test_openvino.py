"""OpenVINO as a CPU runtime (inference/runtimes/openvino_runtime.py) and the runtime that
actually ran.

References are independent of the code under test: onnxruntime run directly on the same file,
the float32 parity rule (inference/parity.py), a session whose providers are those it reports.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("openvino")

from deploy.export import export_onnx  # noqa: E402
from inference.parity import FLOAT32_MAX_DIFF, FLOAT32_MIN_AGREEMENT, compare  # noqa: E402
from inference.runtimes import onnx_runtime, open_runtime, openvino_runtime  # noqa: E402
from utils.errors import BadInput  # noqa: E402

SIZE = (64, 128)
MODEL = "fastscnn"
#: The registered model the benchmark test builds and exports (the quickest to export).
BENCH_MODEL = "separable_unet"


def _tiny_model():
    """A small 19-class model with the zoo's constructs: in-graph normalisation, strided,
    separable and dilated convolutions, batch norm, bilinear and nearest resizes, concat."""
    import keras
    from keras import layers

    from models.layers import logits_output, normalize_input

    keras.utils.set_random_seed(5)
    inputs = keras.Input((*SIZE, 3))
    x = normalize_input(inputs, "imagenet")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    a = layers.SeparableConv2D(8, 3, padding="same", dilation_rate=2, name="atrous")(x)
    p = layers.AveragePooling2D(4, name="pool")(x)
    p = layers.Resizing(SIZE[0] // 2, SIZE[1] // 2, interpolation="nearest", name="up_nn")(p)
    x = layers.Concatenate(name="concat")([x, a, p])
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(19, 1, name="classifier")(x)
    x = layers.Resizing(*SIZE, interpolation="bilinear", name="up_out")(x)
    return keras.Model(inputs, logits_output(x), name="tiny")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A tiny model at 64x128 exported twice: NHWC with a fixed batch, NCHW with a dynamic one."""
    folder = tmp_path_factory.mktemp("openvino")
    nhwc, nchw = folder / "nhwc.onnx", folder / "nchw.onnx"
    model = _tiny_model()
    export_onnx(model, nhwc, batch=1)
    export_onnx(model, nchw, batch=None, nchw=True)
    return {"nhwc": nhwc, "nchw": nchw}


def _images(num: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(num, *SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout, num", [("nhwc", 1), ("nchw", 2)])
def test_run_openvino_equals_onnxruntime(exports, layout, num):
    path = exports[layout]
    compiled = open_runtime("openvino", path, threads=1)
    assert compiled.ran_on() == ["CPU"] and compiled.threads == 1
    assert compiled.inference_precision == "f32" and compiled.precision == "fp32"
    assert compiled.nchw == (layout == "nchw")
    assert compiled.metadata["model"] == "tiny" and compiled.metadata["input_size"] == "64,128"
    images = _images(num)
    got = compiled.run(images)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = images.astype(np.float32)
    if layout == "nchw":
        feed = feed.transpose(0, 3, 1, 2)
    ref = session.run(None, {"input": feed})[0]
    if layout == "nchw":
        ref = ref.transpose(0, 2, 3, 1)
    assert got.shape == ref.shape == (num, *SIZE, 19) and got.dtype == np.float32
    scale = max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(got - ref).max()) <= FLOAT32_MAX_DIFF * scale
    assert float(np.mean(got.argmax(-1) == ref.argmax(-1))) >= FLOAT32_MIN_AGREEMENT
    parity = compare(got, ref)
    assert parity.max_abs_diff == pytest.approx(float(np.abs(got - ref).max()))
    assert parity.judge("fp32").errors == [] and parity.passed
    # an (H, W, 3) image is one batch; a wrong size names the expected shape
    assert compiled.run(images[0]).shape == (1, *SIZE, 19)
    with pytest.raises(BadInput, match="export at this size"):
        compiled.run(np.zeros((1, 32, 64, 3), np.uint8))


def test_openvino_bad_input(tmp_path, monkeypatch):
    with pytest.raises(BadInput, match="convert_to_onnx.py"):
        open_runtime("openvino", tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(BadInput, match="OpenVINO cannot read"):
        open_runtime("openvino", bad)
    with pytest.raises(BadInput, match="computes in fp32 here; got precision 'bf16'"):
        open_runtime("openvino", bad, precision="bf16")
    monkeypatch.setattr(openvino_runtime, "available", lambda name=None: "install openvino==X")
    with pytest.raises(BadInput, match="openvino==X"):
        open_runtime("openvino", bad)


def test_onnxruntime_fallback_is_an_error(exports, monkeypatch):
    """A session that runs on fewer providers than asked (onnxruntime's silent fallback)."""
    from bench.jobs import JobSpec, run_job

    path = exports["nhwc"]
    asked = ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert set(asked) <= set(ort.get_available_providers())
    # both really run here: no error, and the job records what ran
    assert onnx_runtime.session(path, providers=asked).get_providers() == asked
    spec = JobSpec(
        backend="onnxruntime", height=SIZE[0], width=SIZE[1], batch_size=1, onnx_path=str(path),
        warmup_s=0.0, min_iters=1, min_duration_s=0.0, providers=asked, threads=1,
    )  # fmt: skip
    assert run_job(spec, path.parent)["providers"] == asked
    # what onnxruntime does when a provider's libraries are missing: it keeps only the CPU
    monkeypatch.setattr(
        ort.InferenceSession, "get_providers", lambda self: ["CPUExecutionProvider"]
    )
    with pytest.raises(BadInput, match="fell back from AzureExecutionProvider") as exc:
        onnx_runtime.session(path, providers=asked)
    assert str(asked) in str(exc.value) and "['CPUExecutionProvider']" in str(exc.value)
    with pytest.raises(BadInput, match="fell back from AzureExecutionProvider"):
        run_job(spec, path.parent)
    # without explicit providers nothing was asked for: no check
    assert onnx_runtime.session(path).get_providers() == ["CPUExecutionProvider"]


@pytest.mark.slow
def test_benchmark_sets_onnxruntime_and_openvino_side_by_side(tmp_path):
    import benchmark

    argv = [
        "--models", BENCH_MODEL, "--sizes", f"{SIZE[0]},{SIZE[1]}", "--backends", "onnxruntime,openvino",
        "--budget", "10", "--min-iters", "3", "--min-duration", "0.05", "--warmup", "0.05",
        "--threads", "1", "--profile", "off", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    assert benchmark.main(argv) == 0
    rows = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    by = {r["backend"]: r for r in rows}
    assert list(by) == ["onnxruntime", "openvino"]
    ort_row, ov_row = by["onnxruntime"], by["openvino"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["threads"] == 1 and row["peak_rss_mb"] > 0 and row["runtime_version"]
        assert row["export"] and row["iterations"] >= 1
    assert ort_row["providers"] == ["CPUExecutionProvider"] and ort_row["ran_on"] == "CPU"
    assert ov_row["providers"] == ["CPU"] and ov_row["ran_on"] == "CPU"
    assert ov_row["policy"] == "INFERENCE_PRECISION_HINT f32"
    # parity against onnxruntime, judged by the float32 parity rule
    assert ov_row["parity_reference"].startswith("onnxruntime")
    assert ov_row["parity_max_abs_diff"] <= ov_row["parity_max_diff_allowed"]
    assert ov_row["parity_agreement"] >= ov_row["parity_min_agreement"] == FLOAT32_MIN_AGREEMENT
    # exactly one of the two is marked the faster, by the ratio of their medians
    ratio = ort_row["median_ms"] / ov_row["median_ms"]
    assert ov_row["speedup_vs_other_cpu_runtime"] == pytest.approx(ratio)
    assert ort_row["speedup_vs_other_cpu_runtime"] == pytest.approx(1 / ratio)
    assert ov_row["fastest_cpu_runtime"] == (ratio >= 1) != ort_row["fastest_cpu_runtime"]
    md = (tmp_path / "benchmark.md").read_text()
    assert "| ran on |" in md and "fastest (" in md and "OpenVINO" in md
    assert "## CPU runtimes: onnxruntime and OpenVINO" in md and "Runtimes that ran:" in md
    header = (tmp_path / "benchmark.csv").read_text().splitlines()[0].split(",")
    assert {"ran_on", "fastest_cpu_runtime", "parity_max_abs_diff"} <= set(header)


def test_parity_failure_fails_the_row():
    from bench.latency import judge_parity
    from bench.rows import job_rows

    row = job_rows(MODEL, {}, SIZE, 1, ["openvino"], "fp32")[0]
    row.record(
        {"status": "ok", "parity_reference": "onnxruntime CPUExecutionProvider",
         "parity_max_abs_diff": 0.5, "parity_agreement": 0.9, "parity_logit_scale": 2.0,
         "parity_precision": "float32", "ties_rule": False}
    )  # fmt: skip
    judge_parity(row)
    assert row.status.startswith("error: parity with onnxruntime") and "0.5 > 0.002" in row.status
    assert "90.000% < 99.9%" in row.status


def test_openvino_asked_for_but_missing_is_one_error_line(tmp_path, monkeypatch, capsys):
    import benchmark

    monkeypatch.setattr(openvino_runtime, "available", lambda name=None: "pip install openvino==9")
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--models", MODEL, "--sizes", "64,128", "--backends", "openvino",
                        "--output-dir", str(tmp_path)])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --backends openvino: pip install openvino==9"]
    assert not list(tmp_path.iterdir())
    from bench.latency import resolve_backends

    notes = []
    assert resolve_backends(None, notes.append) == ["onnxruntime"] and "openvino" in notes[0]


def test_predict_and_evaluate_with_openvino(exports, synthetic_root, tmp_path, capsys):
    from PIL import Image

    import evaluate
    import predict

    def read_png(path):
        return np.asarray(Image.open(path))

    out = tmp_path / "pred"
    predict.main(
        ["-m", MODEL, "--onnx", str(exports["nhwc"]), "--backend", "openvino",
         "-p", str(synthetic_root), "--split", "val", "--limit", "2", "-r", str(out),
         "--no-progress"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert "(OpenVINO)" in text and "OpenVINO against onnxruntime on the first batch" in text
    labels = sorted((out / "labelIds").glob("*_labelIds.png"))
    assert len(labels) == 2
    # the same file through onnxruntime writes the same label ids
    ort_out = tmp_path / "pred_ort"
    predict.main(
        ["-m", MODEL, "--onnx", str(exports["nhwc"]), "-p", str(synthetic_root),
         "--split", "val", "--limit", "2", "-r", str(ort_out), "--no-progress"]
    )  # fmt: skip
    for path in labels:
        got, want = (read_png(p) for p in (path, ort_out / "labelIds" / path.name))
        assert got.shape == want.shape and np.mean(got == want) >= FLOAT32_MIN_AGREEMENT
    ev = tmp_path / "eval"
    evaluate.main(
        ["-m", MODEL, "--onnx", str(exports["nchw"]), "--backend", "openvino",
         "-p", str(synthetic_root), "--split", "val", "-r", str(ev), "--no-progress"]
    )  # fmt: skip
    result = json.loads((ev / "resultPixelLevelSemanticLabeling.json").read_text())
    assert 0.0 <= result["averageScoreClasses"] <= 1.0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["-m", MODEL, "-w", "x.weights.h5", "--backend", "openvino",
                       "-p", str(synthetic_root)])  # fmt: skip
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: --backend openvino runs an exported model")
