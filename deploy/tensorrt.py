"""TensorRT: build an engine from an exported file with TensorRT's Python API, run and time it
the way trtexec does, check it against onnxruntime; and trtexec itself as a cross-check.

The Python API comes from NVIDIA's PyPI wheels (`tensorrt-cu12`, in requirements-gpu.txt), which
ship no trtexec; device buffers, copies and CUDA events come from CuPy. TensorRT 10 takes a
float32 file and `BuilderFlag.FP16` for a float16 engine; TensorRT 11 removed that flag (every
network is strongly typed: the precision is the file's), so a float16 engine there needs the
float16 export (`convert_to_onnx.py --fp16`). `build_engine` picks by the installed version.

Timing (`EngineRunner.time`) follows trtexec's defaults: 200 ms of warm-up, then at least 10
runs and at least 3 s; each run copies the input to the GPU, executes, copies the output back,
with CUDA events around each part, so the GPU compute time is reported apart from the
host-device copies (median, p90, p99, like trtexec's "GPU Compute Time" and "Latency").
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.graph import summarize_onnx
from utils.io import atomic_path
from utils.machine import gpus

#: What to install for the Python builder and runner.
INSTALL_HINT = "pip install -r requirements-gpu.txt (TensorRT's Python wheels and CuPy)"
#: trtexec's timing defaults: warm-up, minimum runs, minimum measured time.
WARMUP_S, MIN_RUNS, MIN_SECONDS = 0.2, 10, 3.0

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
    fp16: bool = False,
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
    if fp16:
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
# The Python API: build, run, time
# ---------------------------------------------------------------------------------------------


def import_tensorrt() -> Any:
    """The `tensorrt` module; ValueError saying what to install when it is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ValueError(
            f"TensorRT's Python package is not installed ({exc}); {INSTALL_HINT}"
        ) from None
    return tensorrt


def tensorrt_major(trt: Any) -> int:
    """The major version of the installed TensorRT (10, 11, ...)."""
    return int(str(trt.__version__).split(".")[0])


@dataclasses.dataclass(frozen=True)
class EngineBuild:
    """An engine written by `build_engine`."""

    path: Path
    tensorrt_version: str
    precision: str  # float32 or float16
    how: str  # "BuilderFlag.FP16 on a float32 file", "strongly typed (the file's types)", ...
    build_seconds: float
    size_bytes: int


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None = None,
    fp16: bool = False,
    workspace_gib: float = 4.0,
    max_batch: int = 8,
) -> EngineBuild:
    """Build and save a TensorRT engine for an exported file (the engine is written atomically).

    Args:
        onnx_path: a file written by deploy.export (its metadata names its precision).
        engine_path: default: beside the .onnx, suffix .engine.
        fp16: a float16 engine: TensorRT 10 gets BuilderFlag.FP16 on a float32 file; TensorRT 11
            needs a float16 file (ValueError otherwise, naming the export that makes one).
        workspace_gib: the builder's workspace memory pool.
        max_batch: largest batch of the profile of a dynamic-batch file (optimum 1).
    """
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    summary = summarize_onnx(onnx_path)
    file_precision = summary.metadata.get("precision", "float32")
    major = tensorrt_major(trt)
    if major >= 11:
        if fp16 and file_precision != "float16":
            raise ValueError(
                f"TensorRT {trt.__version__} builds strongly typed networks (the precision is the "
                f"file's) and {onnx_path} is {file_precision}; export with --fp16 for a float16 "
                "engine"
            )
        precision, how = file_precision, "strongly typed (the file's types)"
    elif file_precision == "float16":
        precision, how = "float16", "the float16 file's types"
    else:
        precision = "float16" if fp16 else "float32"
        how = "BuilderFlag.FP16 on a float32 file" if fp16 else "float32"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(
            f"TensorRT {trt.__version__}'s ONNX parser rejects {onnx_path}: {problems}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if major < 11 and fp16 and file_precision != "float16":
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


def measure(
    run_once: Callable[[], tuple[float, float, float]],
    warmup_s: float = WARMUP_S,
    min_runs: int = MIN_RUNS,
    min_seconds: float = MIN_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> list[tuple[float, float, float]]:
    """trtexec's rule: call `run_once` for `warmup_s` seconds untimed, then until at least
    `min_runs` runs and `min_seconds` seconds; its (copy in, compute, copy out) milliseconds."""
    start = clock()
    while clock() - start < warmup_s:
        run_once()
    samples = []
    start = clock()
    while len(samples) < min_runs or clock() - start < min_seconds:
        samples.append(run_once())
    return samples


@dataclasses.dataclass(frozen=True)
class EngineTiming:
    """Milliseconds per run: GPU compute apart from the copies, and their sum (the latency)."""

    runs: int
    batch: int
    compute_ms: dict[str, float]  # median, p90, p99, mean, min, max
    latency_ms: dict[str, float]  # copy in + compute + copy out
    copy_in_ms: float  # medians
    copy_out_ms: float

    @property
    def images_per_s(self) -> float:
        """From the median latency (copies included), as one stream of batches would run."""
        return 1000.0 * self.batch / self.latency_ms["median"]


def summarize_runs(samples: Sequence[tuple[float, float, float]], batch: int = 1) -> EngineTiming:
    """EngineTiming of `measure`'s samples."""
    if not samples:
        raise ValueError("no timed runs to summarize")
    parts = np.asarray(samples, np.float64)

    def stats(values: np.ndarray) -> dict[str, float]:
        return {
            "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)),
            "mean": float(values.mean()),
            "min": float(values.min()),
            "max": float(values.max()),
        }

    return EngineTiming(
        len(parts),
        batch,
        stats(parts[:, 1]),
        stats(parts.sum(axis=1)),
        float(np.median(parts[:, 0])),
        float(np.median(parts[:, 2])),
    )


def _recording_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps its error messages (`.errors`) instead of printing them."""

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(" ".join(str(msg).split()))

    return RecordingLogger()


def engine_mismatch_message(
    engine_path: str | os.PathLike, version: str, gpu: str, errors: Sequence[str]
) -> str:
    """The one line for an engine this TensorRT cannot deserialize: it was built by another
    TensorRT version or for another GPU (or is no engine); TensorRT's own reason appended."""
    reason = f" (TensorRT says: {errors[-1]})" if errors else ""
    return (
        f"engine {str(engine_path)!r} cannot be loaded by TensorRT {version} on {gpu}: it was "
        "built by another TensorRT version or for another GPU (an engine runs only with the "
        "TensorRT version and GPU model that built it), or it is not an engine; rebuild it on "
        f"this machine from its ONNX file with convert_to_onnx.py --trt{reason}"
    )


def load_engine(trt: Any, engine_path: str | os.PathLike) -> tuple[Any, Any]:
    """(engine, runtime) of a serialized engine file; ValueError in one line when the file
    cannot be read or was built by another TensorRT version or for another GPU."""
    try:
        data = Path(engine_path).read_bytes()
    except OSError as exc:
        raise ValueError(
            f"engine {str(engine_path)!r} cannot be read ({exc.strerror or exc}); build one with "
            "convert_to_onnx.py --trt"
        ) from None
    logger = _recording_logger(trt)
    runtime = trt.Runtime(logger)
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # some TensorRT releases raise instead of returning None
        logger.errors.append(" ".join(str(exc).split()) or type(exc).__name__)
        engine = None
    if engine is None:
        gpu = (gpus() or ["no NVIDIA GPU found"])[0].split(",")[0].strip()
        raise ValueError(
            engine_mismatch_message(engine_path, str(trt.__version__), gpu, logger.errors)
        )
    return engine, runtime


class EngineRunner:
    """A deserialized engine with device and pinned host buffers for one batch size (CuPy)."""

    def __init__(self, engine_path: str | os.PathLike, batch: int = 1) -> None:
        trt = import_tensorrt()
        try:
            import cupy
            import cupyx
        except ImportError as exc:
            raise ValueError(f"CuPy is not installed ({exc}); {INSTALL_HINT}") from None
        self._cupy = cupy
        self.batch = batch
        self.engine, self._runtime = load_engine(trt, engine_path)
        self.context = self.engine.create_execution_context()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        for name in self.inputs:
            shape = [batch if d == -1 else d for d in self.engine.get_tensor_shape(name)]
            self.context.set_input_shape(name, shape)
        self.host, self.device = {}, {}
        for name in names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self.host[name] = cupyx.empty_pinned(shape, dtype)
            self.device[name] = cupy.empty(shape, dtype)
            self.context.set_tensor_address(name, self.device[name].data.ptr)

    def _run(self, timed: bool) -> tuple[float, float, float]:
        cupy, stream = self._cupy, self.stream
        events = [cupy.cuda.Event() for _ in range(4)] if timed else None
        with stream:
            if timed:
                events[0].record(stream)
            for name in self.inputs:
                self.device[name].set(self.host[name], stream=stream)
            if timed:
                events[1].record(stream)
            if not self.context.execute_async_v3(stream.ptr):
                raise RuntimeError("TensorRT's execute_async_v3 failed (its log above)")
            if timed:
                events[2].record(stream)
            for name in self.outputs:
                self.device[name].get(stream=stream, out=self.host[name], blocking=False)
            if timed:
                events[3].record(stream)
        stream.synchronize()
        if not timed:
            return (0.0, 0.0, 0.0)
        return tuple(
            cupy.cuda.get_elapsed_time(a, b) for a, b in zip(events, events[1:], strict=False)
        )

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a batch of `self.batch` images (the input's dtype and layout)."""
        name = self.inputs[0]
        if images.shape != self.host[name].shape:
            raise ValueError(f"the engine takes {self.host[name].shape}, got {images.shape}")
        self.host[name][...] = images
        self._run(timed=False)
        return {n: np.array(self.host[n]) for n in self.outputs}

    def time(
        self, warmup_s: float = WARMUP_S, min_runs: int = MIN_RUNS, min_seconds: float = MIN_SECONDS
    ) -> EngineTiming:
        """trtexec's timing (see `measure`) on the images last given to `infer`."""
        samples = measure(lambda: self._run(timed=True), warmup_s, min_runs, min_seconds)
        return summarize_runs(samples, self.batch)


def compare_outputs(reference: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max |difference|, argmax agreement over the last axis) of two logits arrays; for label
    maps (integer dtype, no class axis) the difference is NaN and the agreement per pixel."""
    reference, got = np.asarray(reference), np.asarray(got)
    if reference.shape != got.shape:
        raise ValueError(f"outputs differ in shape: {reference.shape} and {got.shape}")
    if np.issubdtype(reference.dtype, np.integer):
        return float("nan"), float(np.mean(reference == got))
    difference = float(np.max(np.abs(reference.astype(np.float64) - got.astype(np.float64))))
    agreement = float(np.mean(reference.argmax(-1) == got.argmax(-1)))
    return difference, agreement
