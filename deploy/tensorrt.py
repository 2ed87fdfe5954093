"""TensorRT: build an engine from an exported file with TensorRT's Python API and check it
against onnxruntime; trtexec as an optional cross-check.

The engine runs through the TensorRT runtime of the registry
(`inference.runtimes.tensorrt_runtime`), timed by the suite's one timing loop and judged by its
one parity rule. The Python API comes from NVIDIA's PyPI wheels (`tensorrt-cu12`, in
requirements-gpu.txt), which ship no trtexec. TensorRT 10 takes a float32 file and
`BuilderFlag.FP16` for a float16 engine; TensorRT 11 removed that flag (every network is
strongly typed: the precision is the file's), so a float16 engine there needs the float16
export (`convert_to_onnx.py --precision fp16`). `build_engine` picks by the installed version.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.graph import summarize_onnx
from inference.parity import Parity, check
from inference.runtimes import REFERENCE_RUNTIME, open_runtime
from inference.runtimes.tensorrt_runtime import import_tensorrt
from inference.timing import TimingResult, time_callable
from utils.errors import BadInput
from utils.io import atomic_path

#: Where JetPack and NVIDIA's TensorRT containers put trtexec when it is not on PATH.
_TRTEXEC_FALLBACKS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")


def find_trtexec() -> str | None:
    """Path of trtexec: on PATH, or where JetPack and the TensorRT containers put it."""
    found = shutil.which("trtexec")
    if found:
        return found
    return next((p for p in _TRTEXEC_FALLBACKS if os.access(p, os.X_OK)), None)


def trtexec_command(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None = None,
    precision: str = "fp32",
    trtexec: str = "trtexec",
    max_batch: int = 8,
) -> list[str]:
    """The trtexec command line that builds (and times) an engine from an exported file.

    A dynamic-batch file gets an optimisation profile for batch 1..`max_batch` (optimum 1).

    Args:
        onnx_path: the exported .onnx file.
        engine_path: where to save the engine (default: beside the .onnx, suffix .engine).
        fp16: let TensorRT pick float16 kernels (``--fp16``).
        trtexec: the trtexec executable.
        max_batch: largest batch of the profile of a dynamic-batch file.
    """
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    command = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    summary = summarize_onnx(onnx_path)
    name, _, shape = summary.inputs[0]
    if shape and not isinstance(shape[0], int):
        rest = "x".join(str(d) for d in shape[1:])
        command += [
            f"--minShapes={name}:1x{rest}",
            f"--optShapes={name}:1x{rest}",
            f"--maxShapes={name}:{max_batch}x{rest}",
            f"--shapes={name}:1x{rest}",
        ]
    if precision == "fp16":
        command.append("--fp16")
    command += ["--warmUp=500", "--iterations=100", "--avgRuns=100"]
    return command


@dataclasses.dataclass
class TrtTiming:
    """What trtexec reported."""

    command: list[str]
    returncode: int
    throughput_qps: float | None
    latency_ms: dict[str, float]  #: GPU compute time: min, max, mean, median
    output_tail: str


def parse_trtexec_output(text: str) -> tuple[float | None, dict[str, float]]:
    """(throughput in inferences/s, GPU compute time statistics in ms) from trtexec's log."""
    qps = re.search(r"Throughput:\s*([0-9.]+)\s*qps", text)
    latency: dict[str, float] = {}
    line = re.search(r"GPU Compute Time:([^\n]*)", text)
    if line:
        for key, value in re.findall(r"(min|max|mean|median)\s*=\s*([0-9.]+)\s*ms", line.group(1)):
            latency[key] = float(value)
    return (float(qps.group(1)) if qps else None), latency


def run_trtexec(command: Sequence[str], timeout_s: float = 3600) -> TrtTiming:
    """Run a trtexec command (from trtexec_command) and parse its timing."""
    proc = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    text = proc.stdout + proc.stderr
    qps, latency = parse_trtexec_output(text)
    return TrtTiming(
        command=list(command),
        returncode=proc.returncode,
        throughput_qps=qps,
        latency_ms=latency,
        output_tail=text[-3000:],
    )


# ---------------------------------------------------------------------------------------------
# The Python API: build, then run, check and time through the TensorRT runtime
# ---------------------------------------------------------------------------------------------


def tensorrt_major(trt: Any) -> int:
    """The major version of the installed TensorRT (10, 11, ...)."""
    return int(str(trt.__version__).split(".")[0])


@dataclasses.dataclass(frozen=True)
class EngineBuild:
    """An engine written by `build_engine`."""

    path: Path
    tensorrt_version: str
    precision: str  # fp32 or fp16
    how: str  # "BuilderFlag.FP16 on a float32 file", "strongly typed (the file's types)", ...
    build_seconds: float
    size_bytes: int


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None = None,
    precision: str = "fp32",
    workspace_gib: float = 4.0,
    max_batch: int = 8,
) -> EngineBuild:
    """Build and save a TensorRT engine for an exported file (the engine is written atomically).

    Args:
        onnx_path: a file written by deploy.export (its metadata names its precision).
        engine_path: default: beside the .onnx, suffix .engine.
        precision: fp32 or fp16: TensorRT 10 gets BuilderFlag.FP16 on a float32 file for fp16;
            TensorRT 11 needs a float16 file (BadInput otherwise, naming the export that makes
            one).
        workspace_gib: the builder's workspace memory pool.
        max_batch: largest batch of the profile of a dynamic-batch file (optimum 1).
    """
    if precision not in ("fp32", "fp16"):
        raise BadInput(f"TensorRT engines are built here in fp32 or fp16; got {precision!r}")
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    summary = summarize_onnx(onnx_path)
    file_precision = {"float16": "fp16"}.get(summary.metadata.get("precision", ""), "fp32")
    major = tensorrt_major(trt)
    if major >= 11:
        if precision == "fp16" and file_precision != "fp16":
            raise BadInput(
                f"TensorRT {trt.__version__} builds strongly typed networks (the precision is the "
                f"file's) and {onnx_path} is float32; export with --precision fp16 for a float16 "
                "engine"
            )
        precision, how = file_precision, "strongly typed (the file's types)"
    elif file_precision == "fp16":
        precision, how = "fp16", "the float16 file's types"
    else:
        how = "BuilderFlag.FP16 on a float32 file" if precision == "fp16" else "float32"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BadInput(f"TensorRT {trt.__version__}'s ONNX parser rejects {onnx_path}: {problems}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if major < 11 and precision == "fp16" and file_precision != "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    name, _, shape = summary.inputs[0]
    if shape and not isinstance(shape[0], int):
        rest = tuple(int(d) for d in shape[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(name, (1, *rest), (1, *rest), (max_batch, *rest))
        config.add_optimization_profile(profile)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise RuntimeError(
            f"TensorRT {trt.__version__} could not build {onnx_path} (its log above)"
        )
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return EngineBuild(
        engine_path, str(trt.__version__), precision, how, seconds, engine_path.stat().st_size
    )


@dataclasses.dataclass
class EngineReport:
    """An engine built, checked against onnxruntime and timed (`build_and_check_engine`)."""

    build: EngineBuild
    parity: Parity
    timing: TimingResult
    #: Median milliseconds of the parts of a call (CUDA events): copy in, compute, copy out.
    copy_in_ms: float
    compute_ms: float
    copy_out_ms: float

    def format(self) -> str:
        """Lines for the command line."""
        b, p, stats = self.build, self.parity, self.timing.stats()
        diff = "-" if p.max_abs_diff is None else f"{p.max_abs_diff:.3g}"
        lines = [
            f"TensorRT {b.tensorrt_version} engine {b.path} ({b.precision}, {b.how}): "
            f"{b.size_bytes / 2**20:.1f} MiB, built in {b.build_seconds:.0f} s",
            f"TensorRT against onnxruntime (CPU) on one image: max |logit diff| {diff}, argmax "
            f"agreement {100 * p.agreement:.3f}%"
            + ("" if p.passed else f" (FAILED: {'; '.join(p.errors)})"),
            f"TensorRT timing, {self.timing.iterations} calls after "
            f"{1000 * self.timing.warmup_s:.0f} ms of warm-up: latency median "
            f"{stats['median_ms']:.3f} ms (p90 {stats['p90_ms']:.3f}, p99 {stats['p99_ms']:.3f}); "
            f"GPU compute median {self.compute_ms:.3f} ms, copies in {self.copy_in_ms:.3f} / "
            f"out {self.copy_out_ms:.3f} ms; {1000 / stats['median_ms']:.1f} images/s",
        ]
        return "\n".join(lines)


def build_and_check_engine(onnx_path: str | os.PathLike, precision: str = "fp32") -> EngineReport:
    """Build an engine for an exported file, run it through the TensorRT runtime on a street
    image against onnxruntime on the CPU (the parity rule at the engine's precision), and time
    it with the timing loop (trtexec's rule)."""
    # the parity image comes from the synthetic generator (deploy.checks imports datasets)
    from deploy.checks import sample_images

    build = build_engine(onnx_path, precision=precision)
    metadata = summarize_onnx(onnx_path).metadata
    runtime = open_runtime("tensorrt", build.path, precision=build.precision, metadata=metadata)
    images = sample_images(1, runtime.input_size)
    reference = open_runtime(REFERENCE_RUNTIME, onnx_path, providers=["CPUExecutionProvider"])
    parity = check(runtime.run(images), reference.run(images), build.precision)
    timing = time_callable(runtime.bind(images))
    parts = np.asarray(timing.parts_s, np.float64) * 1e3
    copy_in, compute, copy_out = (float(np.median(parts[:, i])) for i in range(3))
    return EngineReport(build, parity, timing, copy_in, compute, copy_out)
