"""TensorRT without a GPU: the version rules of the builder (deploy/tensorrt.py), the one-line
error for an engine of another version or GPU (inference/runtimes/tensorrt_runtime.py), the
parts of a timed call, and the GPU check's plan. The engine itself is built, checked and timed
by scripts/gpu_check.sh on a GPU (results/gpu_check/)."""

from __future__ import annotations

import types

import pytest

from deploy import export, tensorrt
from inference.runtimes import tensorrt_runtime
from utils.errors import BadInput


def test_without_tensorrt_the_builder_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # import fails
    with pytest.raises(BadInput, match="requirements-gpu.txt"):
        tensorrt.build_engine(tmp_path / "x.onnx")


def test_tensorrt_11_needs_a_float16_file_for_fp16(monkeypatch, tmp_path):
    path = tmp_path / "m.onnx"
    export.export_onnx("separable_unet", path, input_size=(32, 64))
    fake = types.SimpleNamespace(__version__="11.4.0.106")
    monkeypatch.setattr(tensorrt, "import_tensorrt", lambda: fake)
    with pytest.raises(
        BadInput, match="strongly typed .* is float32; export with --precision fp16"
    ):
        tensorrt.build_engine(path, precision="fp16")
    with pytest.raises(BadInput, match="fp32 or fp16; got 'bf16'"):
        tensorrt.build_engine(path, precision="bf16")


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
    assert "--precision fp16 --trt" in planned[2] and "--nchw" in planned[1]
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
    """The real load path (the TensorRT runtime -> load_engine) with a stand-in TensorRT."""
    import sys

    monkeypatch.setattr(tensorrt_runtime, "import_tensorrt", lambda: _StandInTensorRT)
    monkeypatch.setattr(tensorrt_runtime, "gpus", lambda: ["NVIDIA H200, 570.86, 143771 MiB"])
    for name in ("cupy", "cupyx"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    engine = tmp_path / "fastscnn.engine"
    engine.write_bytes(b"an engine serialized by TensorRT 10.3")
    with pytest.raises(BadInput) as error:
        tensorrt_runtime.TensorRTRuntime(engine)
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
    with pytest.raises(BadInput, match="cannot be read"):
        tensorrt_runtime.TensorRTRuntime(tmp_path / "missing.engine")
