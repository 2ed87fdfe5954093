"""deploy/tensorrt.py without a GPU: trtexec's timing rule, the timing summary, output
comparison, and the version rules of the builder. The engine itself is built and timed by
scripts/gpu_check.sh on a GPU (results/gpu_check/)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from deploy import export, tensorrt


class FakeClock:
    """A clock that each run advances by its duration."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_measure_warms_up_then_runs_at_least_10_times_and_3_seconds():
    clock = FakeClock()
    calls = []

    def run(duration: float):
        def once():
            calls.append(clock.now)
            clock.now += duration
            return (0.1, duration * 1000, 0.2)

        return once

    # 62.5 ms runs (exact in binary): 4 warm-up runs reach 200 ms, then 48 runs make 3 s
    samples = tensorrt.measure(run(0.0625), clock=clock)
    assert len(calls) == 4 + 48 and len(samples) == 48
    assert samples[0] == (0.1, 62.5, 0.2)
    # 1 s runs: 1 warm-up, then the 10-run minimum outlasts 3 s
    calls.clear()
    assert len(tensorrt.measure(run(1.0), clock=clock)) == 10 and len(calls) == 11


def test_summary_of_runs_by_hand():
    samples = [(1.0, float(c), 2.0) for c in range(1, 11)]  # compute 1..10 ms
    timing = tensorrt.summarize_runs(samples, batch=2)
    assert timing.runs == 10 and timing.compute_ms["median"] == 5.5
    assert timing.compute_ms["p90"] == pytest.approx(9.1)  # numpy's linear interpolation
    assert timing.compute_ms["min"] == 1.0 and timing.compute_ms["max"] == 10.0
    assert timing.latency_ms["median"] == 8.5 and timing.copy_in_ms == 1.0
    assert timing.images_per_s == pytest.approx(2000 / 8.5)
    with pytest.raises(ValueError, match="no timed runs"):
        tensorrt.summarize_runs([])


def test_compare_outputs():
    a = np.zeros((1, 2, 2, 3), np.float32)
    a[..., 0] = 1
    b = a.copy()
    b[0, 0, 0] = [0, 2, 0]
    difference, agreement = tensorrt.compare_outputs(a, b)
    assert difference == 2.0 and agreement == 0.75
    labels = np.array([[1, 2], [3, 4]], np.uint8)
    assert tensorrt.compare_outputs(labels, labels)[1] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        tensorrt.compare_outputs(a, a[0])


def test_without_tensorrt_the_builder_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # import fails
    with pytest.raises(ValueError, match="requirements-gpu.txt"):
        tensorrt.build_engine(tmp_path / "x.onnx")


def test_tensorrt_11_needs_a_float16_file_for_fp16(monkeypatch, tmp_path):
    path = tmp_path / "m.onnx"
    export.export_onnx("separable_unet", path, input_size=(32, 64))
    fake = types.SimpleNamespace(__version__="11.4.0.106")
    monkeypatch.setattr(tensorrt, "import_tensorrt", lambda: fake)
    with pytest.raises(ValueError, match="strongly typed .* is float32; export with --fp16"):
        tensorrt.build_engine(path, fp16=True)


def test_gpu_check_dry_run_plans_every_step_and_refuses_bad_options(repo_root, tmp_path):
    import subprocess

    script = str(repo_root / "scripts" / "gpu_check.sh")
    out = tmp_path / "check"
    proc = subprocess.run(["bash", script, "--dry-run", "--out", str(out), "--models",
                           "fastscnn,ddrnet"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    planned = [line for line in proc.stdout.splitlines() if line.startswith("would run [")]
    names = [line.split("[")[1].split("]")[0] for line in planned]
    assert names == ["train", "trt_fastscnn_fp32", "trt_fastscnn_fp16", "trt_ddrnet_fp32",
                     "trt_ddrnet_fp16", "benchmark"]  # fmt: skip
    assert "--fp16 --trt" in planned[2] and "--nchw" in planned[1]
    machine = (out / "machine.txt").read_text()
    assert "tensorflow 2." in machine and "onnxruntime" in machine and "tensorrt" in machine
    for bad, message in [(["--size", "12"], "--size takes H,W"), (["--nope"], "unknown option")]:
        proc = subprocess.run(["bash", script, *bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}"), proc.stderr


class _StandInTensorRT:
    """The parts of the tensorrt module that load_engine uses, with a runtime that rejects the
    engine the way TensorRT 10 does for an engine of another version (logs, returns None)."""

    __version__ = "10.9.0.34"

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes):
            self.logger.log(self.logger.Severity.WARNING, "a warning that is not the reason")
            self.logger.log(
                self.logger.Severity.ERROR,
                "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                "assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not "
                "match. Note: Current Version: 239, Serialized Engine Version: 236)\n",
            )
            return None


def test_engine_of_another_tensorrt_version_or_gpu_is_one_line(monkeypatch, tmp_path):
    """The real load path (EngineRunner -> load_engine) with a stand-in TensorRT runtime."""
    import sys

    monkeypatch.setattr(tensorrt, "import_tensorrt", lambda: _StandInTensorRT)
    monkeypatch.setattr(tensorrt, "gpus", lambda: ["NVIDIA H200, 570.86, 143771 MiB"])
    for name in ("cupy", "cupyx"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    engine = tmp_path / "fastscnn.engine"
    engine.write_bytes(b"an engine serialized by TensorRT 10.3")
    with pytest.raises(ValueError) as error:
        tensorrt.EngineRunner(engine)
    message = str(error.value)
    assert "\n" not in message
    assert (
        f"engine {str(engine)!r} cannot be loaded by TensorRT 10.9.0.34 on NVIDIA H200" in message
    )
    assert "another TensorRT version or for another GPU" in message
    assert "convert_to_onnx.py --trt" in message
    assert message.endswith(
        "Serialized Engine Version: 236))"
    )  # TensorRT's reason, not the warning
    with pytest.raises(ValueError, match="cannot be read"):
        tensorrt.EngineRunner(tmp_path / "missing.engine")
