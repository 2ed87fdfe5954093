"""onnxruntime backend: a session on an exported file, and running it on NHWC images.

Reads the exporter's metadata (``layout``) from the session, so it needs nothing of deploy/.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def onnx_session(path: str | os.PathLike, providers: Sequence[str] | None = None) -> Any:
    """An onnxruntime InferenceSession on the best execution provider present.

    Without `providers`, uses TensorRT, then CUDA, then CPU, keeping those this onnxruntime
    build offers (CPU is always last, as the fallback for nodes the others do not take).

    Args:
        path: the .onnx file.
        providers: explicit provider names, e.g. ["CPUExecutionProvider"]; ValueError naming
            the asked and the obtained ones when the session falls back from any of them
            (:func:`check_providers`).
    """
    import onnxruntime as ort  # only where a session is made: it loads its providers

    path = Path(path)
    if not path.is_file():
        raise OSError(f"ONNX file {str(path)!r} not found; export one with convert_to_onnx.py")
    available = ort.get_available_providers()
    explicit = False
    if providers is None:
        preferred = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in preferred if p in available]
    else:
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ValueError(
                f"onnxruntime provider {unknown[0]!r} is not available here; "
                f"available: {', '.join(available)}"
            )
        explicit = True
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ValueError(
            f"onnxruntime cannot load {str(path)!r}: "
            f"{str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from exc
    if explicit:
        check_providers(session, providers)
    return session


def check_providers(session: Any, asked: Sequence[str]) -> list[str]:
    """The providers a session actually runs on; ValueError when any asked one is missing.

    onnxruntime drops a provider it cannot initialise (CUDA or TensorRT without their libraries)
    with only a log line and runs on the next one, usually the CPU: a benchmark or a deployment
    would then report the CPU's figures under the GPU's name.

    Args:
        session: an onnxruntime InferenceSession.
        asked: the providers it was created with.
    """
    obtained = list(session.get_providers())
    missing = [p for p in asked if p not in obtained]
    if missing:
        raise ValueError(
            f"onnxruntime fell back from {', '.join(missing)}: asked for {list(asked)}, "
            f"the session runs on {obtained} (install the provider's libraries, e.g. CUDA and "
            "cuDNN for CUDAExecutionProvider, or ask for the providers that run here)"
        )
    return obtained


def nhwc_batch(images: np.ndarray) -> np.ndarray:
    """`images` as an (N, H, W, 3) batch (one (H, W, 3) image gets a batch axis); ValueError
    for any other shape."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) RGB; got shape {images.shape!r}")
    return images


def run_onnx(session: Any, images: np.ndarray) -> np.ndarray:
    """Run an exported file on NHWC RGB images in [0, 255] (uint8 or float); return NHWC results.

    Handles the file's layout (NCHW input/output are transposed here), so the result is
    (N, H, W, C) float32 logits, or (N, H, W) uint8 label ids for an ``--argmax`` export.

    Args:
        session: from onnx_session().
        images: (N, H, W, 3) or (H, W, 3) array.
    """
    images = nhwc_batch(images)
    meta = session.get_modelmeta().custom_metadata_map
    nchw = meta.get("layout", "NHWC") == "NCHW"
    feed = images.astype(np.float32)
    if nchw:
        feed = np.ascontiguousarray(feed.transpose(0, 3, 1, 2))
    expected = session.get_inputs()[0].shape
    if all(isinstance(d, int) for d in expected[1:]) and list(feed.shape[1:]) != expected[1:]:
        raise ValueError(
            f"the ONNX file takes {expected} images; got {list(feed.shape)} "
            "(resize the images or export at this size with -t H,W)"
        )
    out = session.run(None, {session.get_inputs()[0].name: feed})[0]
    if nchw and out.ndim == 4:
        out = out.transpose(0, 2, 3, 1)
    return out
