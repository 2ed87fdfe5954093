"""TensorRT: a serialized engine run through TensorRT's Python API, device buffers from CuPy.

The engine is built from an exported ONNX file for one GPU and one TensorRT version
(`deploy.tensorrt.build_engine`, convert_to_onnx.py --trt). Each call copies the batch to the
GPU, executes and copies the output back; `bind` gives the call the timing loop times, which
returns the seconds of those three parts (CUDA events), so the GPU compute time is reported
apart from the copies, like trtexec's "GPU Compute Time" beside its "Latency".

The Python API comes from NVIDIA's PyPI wheels (`tensorrt-cu12`, in requirements-gpu.txt),
which ship no trtexec; trtexec stays an optional cross-check (deploy.tensorrt).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.runtimes.base import Runtime
from utils.errors import BadInput
from utils.machine import gpus

#: What to install for the Python builder and runner.
INSTALL_HINT = "pip install -r requirements-gpu.txt (TensorRT's Python wheels and CuPy)"


def available(name: str = "tensorrt") -> str | None:
    """Why TensorRT cannot run here (its Python package, CuPy, an NVIDIA GPU), or None."""
    for package in ("tensorrt", "cupy"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed; {INSTALL_HINT}"
    if not gpus() and not Path("/etc/nv_tegra_release").exists():
        return "no NVIDIA GPU found (nvidia-smi lists none)"
    return None


def import_tensorrt() -> Any:
    """The `tensorrt` module; BadInput saying what to install when it is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BadInput(
            f"TensorRT's Python package is not installed ({exc}); {INSTALL_HINT}"
        ) from None
    return tensorrt


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
    """(engine, runtime) of a serialized engine file; BadInput in one line when the file
    cannot be read or was built by another TensorRT version or for another GPU."""
    try:
        data = Path(engine_path).read_bytes()
    except OSError as exc:
        raise BadInput(
            f"engine {str(engine_path)!r} cannot be read ({exc.strerror or exc}); build one with "
            "convert_to_onnx.py --trt"
        ) from None
    logger = _recording_logger(trt)
    runtime = trt.Runtime(logger)
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except (RuntimeError, TypeError) as exc:  # some TensorRT releases raise instead of None
        logger.errors.append(" ".join(str(exc).split()) or type(exc).__name__)
        engine = None
    if engine is None:
        gpu = (gpus() or ["no NVIDIA GPU found"])[0].split(",")[0].strip()
        raise BadInput(
            engine_mismatch_message(engine_path, str(trt.__version__), gpu, logger.errors)
        )
    return engine, runtime


class TensorRTRuntime(Runtime):
    """A deserialized engine with device and pinned host buffers for its batch (CuPy)."""

    def __init__(
        self,
        path: str | os.PathLike,
        precision: str | None = None,
        batch: int = 1,
        metadata: dict[str, str] | None = None,
    ) -> None:
        trt = import_tensorrt()
        try:
            import cupy
            import cupyx
        except ImportError as exc:
            raise BadInput(f"CuPy is not installed ({exc}); {INSTALL_HINT}") from None
        self._cupy = cupy
        self.name = "tensorrt"
        self.path = str(path)
        self.precision = precision or "fp32"
        self.metadata = dict(metadata or {})
        self.nchw = self.metadata.get("layout", "NHWC") == "NCHW"
        self.version = str(trt.__version__)
        self.engine, self._runtime = load_engine(trt, path)
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
        dims = list(self.host[self.inputs[0]].shape)
        self.input_shape = [dims[0], dims[2], dims[3], dims[1]] if self.nchw else dims
        out = self.host[self.outputs[0]].shape
        self.output_channels = (out[1] if self.nchw else out[3]) if len(out) == 4 else None

    def ran_on(self) -> list[str]:
        return [(gpus() or ["NVIDIA GPU"])[0].split(",")[0].strip()]

    def _execute(self, timed: bool) -> tuple[float, float, float] | None:
        """Copy in, execute, copy out on the stream; with `timed`, the seconds of each."""
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
            return None
        return tuple(
            cupy.cuda.get_elapsed_time(a, b) / 1e3 for a, b in zip(events, events[1:], strict=False)
        )

    def _place(self, feed: np.ndarray) -> None:
        name = self.inputs[0]
        if feed.shape != self.host[name].shape:
            raise BadInput(f"the engine takes {self.host[name].shape}, got {feed.shape}")
        self.host[name][...] = feed

    def _bind(self, feed: np.ndarray) -> Callable[[], Any]:
        self._place(feed)
        return lambda: self._execute(timed=True)

    def _output(self, feed: np.ndarray) -> np.ndarray:
        self._place(feed)
        self._execute(timed=False)
        return np.array(self.host[self.outputs[0]])


def open(
    name: str,
    source: str | os.PathLike,
    threads: int | None = None,
    precision: str | None = None,
    batch: int = 1,
    metadata: dict[str, str] | None = None,
) -> TensorRTRuntime:
    """Load an engine (see `TensorRTRuntime`); `metadata`: the ONNX file's it was built from
    (its layout), which an engine does not keep."""
    return TensorRTRuntime(source, precision, batch, metadata)
