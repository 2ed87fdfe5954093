"""OpenVINO backend: an exported ONNX file compiled for a CPU, and running it on NHWC images.

OpenVINO's ONNX frontend reads the file itself (no conversion step, no IR on disk); the
exporter's metadata (``layout``, ``model``, ``input_size``, ``precision``) comes back through the
model's ``framework`` runtime info, so this module needs nothing of deploy/. The contract of
:func:`run_openvino` is :func:`inference.onnx_backend.run_onnx`'s, so the two can be compared on
the same images (:func:`compare_outputs`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from inference.onnx_backend import nhwc_batch

#: The package to install when OpenVINO is missing (requirements-base.txt pins it).
PACKAGE = "openvino==2026.4.1"


def openvino_missing() -> str | None:
    """Why the OpenVINO backend cannot run here (one line naming the package), or None."""
    try:
        import openvino  # noqa: F401  (only probing that it imports)
    except ImportError as exc:
        return f"OpenVINO is not installed ({exc}); install it with `pip install {PACKAGE}`"
    return None


@dataclasses.dataclass
class OpenVINOModel:
    """A compiled ONNX file with what running it needs: its metadata, input shape and request."""

    compiled: Any  #: openvino.CompiledModel
    path: str
    #: The exporter's metadata_props (model, layout, input_size, precision, ...).
    metadata: dict[str, str]
    #: The compiled input's shape; None for a dynamic dimension (a dynamic batch is compiled
    #: at batch 1).
    input_shape: list[int | None]
    #: Reused for every call (one request: batch 1, latency hint).
    request: Any = None

    @property
    def nchw(self) -> bool:
        """Whether the file takes and gives NCHW tensors (the exporter's ``layout``)."""
        return self.metadata.get("layout", "NHWC") == "NCHW"

    @property
    def devices(self) -> list[str]:
        """The devices that actually run the model (OpenVINO's EXECUTION_DEVICES)."""
        return [str(d) for d in self.compiled.get_property("EXECUTION_DEVICES")]

    @property
    def threads(self) -> int:
        """Inference threads OpenVINO uses (INFERENCE_NUM_THREADS)."""
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    @property
    def inference_precision(self) -> str:
        """The precision OpenVINO computes in (INFERENCE_PRECISION_HINT), e.g. f32."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)


def _metadata(model: Any) -> dict[str, str]:
    """The ONNX file's metadata_props, as OpenVINO's ONNX frontend keeps them (rt_info)."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    framework = info["framework"]
    return {str(k): framework[k].astype(str) for k in framework}


def openvino_model(
    path: str | os.PathLike,
    threads: int | None = None,
    device: str = "CPU",
    precision: str = "f32",
) -> OpenVINOModel:
    """Compile an exported ONNX file with OpenVINO for low latency at batch 1.

    Args:
        path: the .onnx file (read directly by OpenVINO's ONNX frontend).
        threads: inference threads (INFERENCE_NUM_THREADS); None: OpenVINO's choice (every
            core it may use).
        device: OpenVINO device, "CPU" here.
        precision: INFERENCE_PRECISION_HINT. f32 by default: on CPUs with AMX or AVX-512 BF16
            OpenVINO otherwise computes in bfloat16 (about 1e-2 logit differences, outside the
            float32 parity rule of deploy/checks.py).
    """
    missing = openvino_missing()
    if missing is not None:
        raise ValueError(missing)
    import openvino as ov  # only where a model is compiled: it loads its plugins

    path = Path(path)
    if not path.is_file():
        raise OSError(f"ONNX file {str(path)!r} not found; export one with convert_to_onnx.py")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"OpenVINO threads must be >= 1; got {threads!r}")
    core = ov.Core()
    if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
        raise ValueError(
            f"OpenVINO device {device!r} is not available here; "
            f"available: {', '.join(core.available_devices)}"
        )
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises its own exception types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ValueError(f"OpenVINO cannot read {str(path)!r}: {first}") from exc
    metadata = _metadata(model)  # before reshape(), which drops the runtime info
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_static and shape[0].is_dynamic:
        # a dynamic-batch file runs at batch 1 (the latency case); run_openvino feeds one image
        # at a time. OpenVINO 2026.4's ShuffleChannelsFusion also fails on a dynamic batch.
        model.reshape({0: ov.PartialShape([1, *list(shape)[1:]])})
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = core.compile_model(model, device, config)
    except RuntimeError as exc:  # OpenVINO reports an unsupported graph as a RuntimeError
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise ValueError(
            f"OpenVINO cannot compile {str(path)!r} for {device}: {lines[-1] if lines else exc!r} "
            "(run it with onnxruntime instead)"
        ) from exc
    shape = compiled.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    return OpenVINOModel(
        compiled=compiled,
        path=str(path),
        metadata=metadata,
        input_shape=dims,
        request=compiled.create_infer_request(),
    )


def run_openvino(compiled: OpenVINOModel, images: np.ndarray) -> np.ndarray:
    """Run a compiled file on NHWC RGB images in [0, 255] (uint8 or float); return NHWC results.

    The contract of :func:`inference.onnx_backend.run_onnx`: NCHW files are fed and read back
    transposed here, so the result is (N, H, W, C) float32 logits, or (N, H, W) uint8 label ids
    for an ``--argmax`` export.

    Args:
        compiled: from openvino_model().
        images: (N, H, W, 3) or (H, W, 3) array.
    """
    images = nhwc_batch(images)
    feed = np.asarray(images, dtype=np.float32)
    if compiled.nchw:
        feed = np.ascontiguousarray(feed.transpose(0, 3, 1, 2))
    expected = compiled.input_shape
    if any(e is not None and e != g for e, g in zip(expected[1:], feed.shape[1:], strict=True)):
        shown = ["?" if e is None else e for e in expected]
        raise ValueError(
            f"the ONNX file takes {shown} images; got {list(feed.shape)} "
            "(resize the images or export at this size with -t H,W)"
        )
    step = expected[0] or len(feed)
    if len(feed) % step:
        raise ValueError(
            f"the ONNX file takes batches of {step} images; got {len(feed)} (feed whole "
            "batches, or export with convert_to_onnx.py --dynamic-batch)"
        )
    output = compiled.compiled.outputs[0]
    parts = [
        np.asarray(compiled.request.infer({0: feed[i : i + step]})[output])
        for i in range(0, len(feed), step)
    ]
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if compiled.nchw and out.ndim == 4:
        out = out.transpose(0, 2, 3, 1)
    return out


@dataclasses.dataclass
class Parity:
    """How a runtime's outputs compare with a reference runtime's on the same images."""

    #: max |logit difference|; None for label-id outputs (nothing to subtract).
    max_abs_diff: float | None
    #: Fraction of pixels whose class (or label id) agrees.
    agreement: float
    #: max |reference logit| (the scale of deploy/checks.py's difference rule); 0 for labels.
    logit_scale: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dataclasses.asdict(self)

    def errors(self, max_diff_allowed: float, min_agreement: float) -> list[str]:
        """What breaks the rule (deploy/checks.py's parity_thresholds give the limits)."""
        problems = []
        if self.max_abs_diff is not None and not self.max_abs_diff <= max_diff_allowed:
            problems.append(f"max |logit diff| {self.max_abs_diff:.3g} > {max_diff_allowed:.3g}")
        if self.agreement < min_agreement:
            problems.append(
                f"argmax agreement {100 * self.agreement:.3f}% < {100 * min_agreement:.1f}%"
            )
        return problems


def compare_outputs(got: np.ndarray, reference: np.ndarray) -> Parity:
    """Max logit difference and argmax agreement of two runtimes' NHWC outputs."""
    got, reference = np.asarray(got), np.asarray(reference)
    if got.shape != reference.shape:
        raise ValueError(
            f"output shapes differ: {got.shape} against the reference's {reference.shape}"
        )
    if got.ndim == 3:  # label ids (an --argmax export)
        return Parity(None, float(np.mean(got == reference)), 0.0)
    got32, ref32 = got.astype(np.float32), reference.astype(np.float32)
    return Parity(
        max_abs_diff=float(np.abs(got32 - ref32).max()),
        agreement=float(np.mean(got32.argmax(-1) == ref32.argmax(-1))),
        logit_scale=float(np.abs(ref32).max()),
    )
