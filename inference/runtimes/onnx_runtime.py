"""onnxruntime: an exported ONNX file in an InferenceSession (the reference of the other runtimes).

Reads the exporter's metadata (``layout``, ``precision``, ...) from the session, so it needs
nothing of deploy/. onnxruntime drops a provider it cannot initialise (CUDA or TensorRT without
their libraries) with only a log line and runs on the next one, usually the CPU: a benchmark or
a deployment would then report the CPU's figures under the GPU's name, so a session that falls
back from a provider it was asked for is an error (`check_providers`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.runtimes import FILE_PRECISIONS
from inference.runtimes.base import Runtime
from utils.errors import BadInput
from utils.machine import available_cores

#: Providers tried in this order when none are asked for (those this build offers). TensorRT's
#: execution provider is not among them: TensorRT is a runtime of its own (tensorrt_runtime).
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def available(name: str = "onnxruntime") -> str | None:
    """Why onnxruntime cannot run here, or None."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed; pip install -r requirements.txt"
    return None


def _load_error_types() -> tuple[type[BaseException], ...]:
    """The exception types onnxruntime raises for a file it cannot load (a corrupt or invalid
    graph): its pybind11 exceptions (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile, ...),
    all of them RuntimeError subclasses."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile",
             "NoModel", "NotImplemented", "RuntimeException")  # fmt: skip
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) or (RuntimeError,)


def session(
    path: str | os.PathLike,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    profile_prefix: str | None = None,
) -> Any:
    """An onnxruntime InferenceSession on the best execution provider present.

    Args:
        path: the .onnx file.
        providers: explicit provider names, e.g. ["CPUExecutionProvider"]; BadInput naming the
            asked and the obtained ones when the session falls back from any of them. None:
            CUDA, then CPU, those this onnxruntime build offers.
        threads: intra-op threads (None: onnxruntime's choice).
        profile_prefix: run onnxruntime's profiler, its file named with this prefix.
    """
    import onnxruntime as ort  # only where a session is made: it loads its providers

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"ONNX file {str(path)!r} not found; export one with convert_to_onnx.py")
    offered = ort.get_available_providers()
    explicit = providers is not None
    if providers is None:
        providers = [p for p in PREFERRED_PROVIDERS if p in offered]
    unknown = [p for p in providers if p not in offered]
    if unknown:
        raise BadInput(
            f"onnxruntime provider {unknown[0]!r} is not available here; "
            f"available: {', '.join(offered)}"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        made = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except _load_error_types() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise BadInput(f"onnxruntime cannot load {str(path)!r}: {first}") from exc
    if explicit:
        check_providers(made, providers)
    return made


def check_providers(made: Any, asked: Sequence[str]) -> list[str]:
    """The providers a session actually runs on; BadInput when any asked one is missing."""
    obtained = list(made.get_providers())
    missing = [p for p in asked if p not in obtained]
    if missing:
        raise BadInput(
            f"onnxruntime fell back from {', '.join(missing)}: asked for {list(asked)}, "
            f"the session runs on {obtained} (install the provider's libraries, e.g. CUDA and "
            "cuDNN for CUDAExecutionProvider, or ask for the providers that run here)"
        )
    return obtained


class OnnxRuntime(Runtime):
    """An exported file in an onnxruntime session."""

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        precision: str | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.name = "onnxruntime"
        self.path = str(path)
        self.threads = int(threads or available_cores())
        self.providers = providers
        self.session = session(path, providers, self.threads)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.nchw = self.metadata.get("layout", "NHWC") == "NCHW"
        self.precision = _checked_precision(self.path, self.metadata, precision)
        self.version = ort.__version__
        shape = [
            d if isinstance(d, int) and d > 0 else None for d in self.session.get_inputs()[0].shape
        ]
        self.input_shape = [shape[0], shape[2], shape[3], shape[1]] if self.nchw else shape
        out = self.session.get_outputs()[0].shape
        channels = (out[1] if self.nchw else out[3]) if len(out) == 4 else None
        self.output_channels = channels if isinstance(channels, int) else None
        self._input_name = self.session.get_inputs()[0].name

    def ran_on(self) -> list[str]:
        return list(self.session.get_providers())

    def _bind(self, feed: np.ndarray) -> Callable[[], Any]:
        run, feeds = self.session.run, {self._input_name: feed}
        return lambda: run(None, feeds)[0]

    def profile(self, images: np.ndarray, calls: int, prefix: str) -> str:
        """Run onnxruntime's profiler for `calls` calls on `images`; the profile file's path."""
        profiled = session(self.path, self.ran_on(), self.threads, profile_prefix=prefix)
        feeds = {self._input_name: self._feed(images)}
        for _ in range(calls):
            profiled.run(None, feeds)
        return profiled.end_profiling()


def _checked_precision(path: str, metadata: dict[str, str], asked: str | None) -> str:
    """The file's precision (its ``precision`` metadata) as one of PRECISIONS; BadInput when
    another was asked for (onnxruntime computes in the file's types)."""
    stored = metadata.get("precision", "float32")
    own = {v: k for k, v in FILE_PRECISIONS.items()}.get(stored, stored)
    if asked is not None and asked != own:
        if asked not in FILE_PRECISIONS:
            raise BadInput(
                f"onnxruntime computes in the file's types, float32 or float16; {asked} is not "
                "an export's precision (it runs the TF graph under Keras' mixed policy)"
            )
        raise BadInput(
            f"{path!r} is a {stored} export and onnxruntime computes in the file's types; for "
            f"{asked} export with convert_to_onnx.py --precision {asked}"
        )
    return own


def open(
    name: str,
    source: str | os.PathLike,
    threads: int | None = None,
    precision: str | None = None,
    providers: Sequence[str] | None = None,
) -> OnnxRuntime:
    """Open an exported file with onnxruntime (see `OnnxRuntime`)."""
    return OnnxRuntime(source, threads, precision, providers)
