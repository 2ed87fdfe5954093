"""TensorRT: find trtexec, the command that builds and times an engine, and its parsed timing.

The benchmark times engines its own way (bench/); these serve convert_to_onnx.py --trt.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from deploy.graph import summarize_onnx

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
