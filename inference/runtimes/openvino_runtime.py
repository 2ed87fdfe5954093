"""OpenVINO: an exported ONNX file compiled for the CPU, for low latency at batch 1.

OpenVINO's ONNX frontend reads the file itself (no conversion step, no IR on disk); the
exporter's metadata (``layout``, ``model``, ``input_size``, ``precision``) comes back through
the model's ``framework`` runtime info, so this module needs nothing of deploy/. It computes in
float32 (INFERENCE_PRECISION_HINT f32): on CPUs with AMX or AVX-512 BF16 OpenVINO otherwise
computes in bfloat16 (about 1e-2 logit differences, outside the float32 parity rule).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inference.runtimes import FILE_PRECISIONS
from inference.runtimes.base import Runtime
from utils.errors import BadInput

#: The package to install when OpenVINO is missing (requirements-base.txt pins it).
PACKAGE = "openvino==2026.4.1"
#: The precisions this runtime computes in, as INFERENCE_PRECISION_HINT values.
HINTS = {"fp32": "f32"}


def available(name: str = "openvino") -> str | None:
    """Why OpenVINO cannot run here (one line naming the package), or None."""
    try:
        import openvino  # noqa: F401  (only probing that it imports)
    except ImportError as exc:
        return f"OpenVINO is not installed ({exc}); install it with `pip install {PACKAGE}`"
    return None


def _metadata(model: Any) -> dict[str, str]:
    """The ONNX file's metadata_props, as OpenVINO's ONNX frontend keeps them (rt_info)."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    framework = info["framework"]
    return {str(k): framework[k].astype(str) for k in framework}


def _first_line(exc: BaseException, last: bool = False) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if last else lines[0]) if lines else repr(exc)


class OpenVINORuntime(Runtime):
    """An exported file compiled by OpenVINO (latency hint, one infer request)."""

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        precision: str | None = None,
        device: str = "CPU",
    ) -> None:
        why = available()
        if why is not None:
            raise BadInput(why)
        import openvino as ov  # only where a model is compiled: it loads its plugins

        path = Path(path)
        if not path.is_file():
            raise BadInput(f"ONNX file {str(path)!r} not found; export one with convert_to_onnx.py")
        if threads is not None and int(threads) < 1:
            raise BadInput(f"OpenVINO threads must be >= 1; got {threads!r}")
        precision = precision or "fp32"
        if precision not in HINTS:
            raise BadInput(
                f"the openvino runtime computes in {', '.join(HINTS)} here; got precision "
                f"{precision!r}: use {', '.join(HINTS)}"
            )
        core = ov.Core()
        if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise BadInput(
                f"OpenVINO device {device!r} is not available here; "
                f"available: {', '.join(core.available_devices)}"
            )
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:  # OpenVINO reports a file it cannot read as RuntimeError
            raise BadInput(f"OpenVINO cannot read {str(path)!r}: {_first_line(exc)}") from exc
        self.metadata = _metadata(model)  # before reshape(), which drops the runtime info
        stored = self.metadata.get("precision", "float32")
        if stored != FILE_PRECISIONS[precision]:
            raise BadInput(
                f"{str(path)!r} is a {stored} export; the openvino runtime runs float32 "
                "exports (convert_to_onnx.py without --precision)"
            )
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_static and shape[0].is_dynamic:
            # a dynamic-batch file runs at batch 1 (the latency case). OpenVINO 2026.4's
            # ShuffleChannelsFusion also fails on a dynamic batch.
            model.reshape({0: ov.PartialShape([1, *list(shape)[1:]])})
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": HINTS[precision],
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:  # OpenVINO reports an unsupported graph as a RuntimeError
            raise BadInput(
                f"OpenVINO cannot compile {str(path)!r} for {device}: "
                f"{_first_line(exc, last=True)} (run it with onnxruntime instead)"
            ) from exc
        self.name = "openvino"
        self.path = str(path)
        self.precision = precision
        self.nchw = self.metadata.get("layout", "NHWC") == "NCHW"
        dims = [
            d.get_length() if d.is_static else None
            for d in self.compiled.inputs[0].get_partial_shape()
        ]
        self.input_shape = [dims[0], dims[2], dims[3], dims[1]] if self.nchw else dims
        out = self.compiled.outputs[0].get_partial_shape()
        channels = None
        if out.rank.is_static and len(out) == 4:
            dim = out[1] if self.nchw else out[3]
            channels = dim.get_length() if dim.is_static else None
        self.output_channels = channels
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.version = importlib.metadata.version("openvino")
        self.request = self.compiled.create_infer_request()
        self._output_port = self.compiled.outputs[0]

    def ran_on(self) -> list[str]:
        """The devices that actually run the model (OpenVINO's EXECUTION_DEVICES)."""
        return [str(d) for d in self.compiled.get_property("EXECUTION_DEVICES")]

    @property
    def inference_precision(self) -> str:
        """The precision OpenVINO computes in (INFERENCE_PRECISION_HINT), e.g. f32."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "policy": f"INFERENCE_PRECISION_HINT {self.inference_precision}",
        }

    def _bind(self, feed: np.ndarray) -> Callable[[], Any]:
        infer, port = self.request.infer, self._output_port
        return lambda: infer({0: feed})[port]


def open(
    name: str,
    source: str | os.PathLike,
    threads: int | None = None,
    precision: str | None = None,
    device: str = "CPU",
) -> OpenVINORuntime:
    """Compile an exported file with OpenVINO (see `OpenVINORuntime`)."""
    return OpenVINORuntime(source, threads, precision, device)
