"""The runtimes that run a model, one module each behind one protocol, and their registry.

A runtime opens a model (a Keras model, an exported ONNX file or a TensorRT engine: its
`source`) with a number of threads and a precision, and runs batches of NHWC RGB images in
[0, 255] to NHWC logits (or label ids for an ``--argmax`` export): `inference.runtimes.base`.
The registry below names every runtime without importing any (so `--help` stays instant); a
runtime's module is imported by `get` when it is used. Adding a runtime means a module with
`available()` and `open(...)` and one entry here.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

#: The arithmetic precisions of the suite, one value through export, runtimes and reports
#: (int8 joins with quantized exports).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
#: How an exported ONNX file's ``precision`` metadata names a precision.
FILE_PRECISIONS = {"fp32": "float32", "fp16": "float16"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """What the rest of the suite knows of a runtime without importing it."""

    name: str
    #: The module implementing `available()` and `open(source, threads, precision, ...)`.
    module: str
    #: How tables name it.
    title: str
    #: What it opens: "keras" (a keras.Model), "onnx" (an exported file) or "engine" (a file
    #: built from the ONNX file for one machine, by `deploy`).
    source: str
    #: One line for --help.
    description: str
    #: The runtime its outputs are checked against on the same file (None: the reference).
    reference: str | None = None
    #: Whether it runs on the CPU (set side by side in the benchmark's CPU table).
    cpu: bool = True
    #: Whether its Runtime has `profile(images, calls, prefix)` (time by op type).
    profiler: bool = False


#: Every runtime, in the order tables list them.
RUNTIMES: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("tf", "inference.runtimes.tf_runtime", "TF graph", "keras",
              "the Keras model as a TF graph (tf.function)"),
        Entry("xla", "inference.runtimes.tf_runtime", "TF + XLA", "keras",
              "the Keras model as a TF graph compiled with XLA (jit_compile)"),
        Entry("onnxruntime", "inference.runtimes.onnx_runtime", "onnxruntime", "onnx",
              "the exported ONNX file through onnxruntime (the reference of the others)",
              profiler=True),
        Entry("openvino", "inference.runtimes.openvino_runtime", "OpenVINO", "onnx",
              "the same ONNX file compiled by OpenVINO for the CPU, checked against "
              "onnxruntime", reference="onnxruntime"),
        Entry("tensorrt", "inference.runtimes.tensorrt_runtime", "TensorRT", "engine",
              "an engine built from the ONNX file by TensorRT's Python API (NVIDIA GPU), "
              "checked against onnxruntime", reference="onnxruntime", cpu=False),
    )
}  # fmt: skip
#: The runtime names (option choices).
RUNTIME_NAMES: tuple[str, ...] = tuple(RUNTIMES)
#: The runtimes of an exported ONNX file that predict.py and evaluate.py take (--backend).
ONNX_RUNTIMES: tuple[str, ...] = tuple(n for n, e in RUNTIMES.items() if e.source == "onnx")
#: The runtime the others are checked against, and the default of an exported file.
REFERENCE_RUNTIME: str = next(n for n in ONNX_RUNTIMES if RUNTIMES[n].reference is None)


def entry(name: str) -> Entry:
    """The registry entry of `name`; ValueError listing the runtimes for an unknown one."""
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {name!r}")
    return RUNTIMES[name]


def title(name: str) -> str:
    """How tables name a runtime (the name itself for one the registry does not know)."""
    return RUNTIMES[name].title if name in RUNTIMES else name


def module(name: str) -> Any:
    """The runtime's module (imported now)."""
    return importlib.import_module(entry(name).module)


def available(name: str) -> str | None:
    """Why runtime `name` cannot run on this machine (one line naming what to install), or
    None when it can."""
    return module(name).available(name)


def open_runtime(
    name: str,
    source: Any,
    threads: int | None = None,
    precision: str | None = None,
    **options: Any,
) -> Any:
    """Open `source` with runtime `name`: an `inference.runtimes.base.Runtime`.

    Args:
        name: a key of RUNTIMES.
        source: what the runtime opens (its entry's `source`): a keras.Model, an .onnx path or
            an engine path.
        threads: intra-op threads (None: the runtime's choice, every core it may use).
        precision: one of PRECISIONS; None: the source's own (the file's, the model's policy).
        **options: the runtime's own (onnxruntime: providers).
    """
    if precision is not None and precision not in PRECISIONS:
        from utils.errors import BadInput

        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return module(name).open(name, source, threads=threads, precision=precision, **options)


def add_backend_arg(parser: Any) -> None:
    """`--backend`: the runtime of `--onnx`, as predict.py and evaluate.py take it."""
    others = [n for n in ONNX_RUNTIMES if n != REFERENCE_RUNTIME]
    checked = ", ".join(f"{n} ({RUNTIMES[n].description})" for n in others)
    parser.add_argument(
        "--backend",
        choices=ONNX_RUNTIMES,
        default=REFERENCE_RUNTIME,
        help=f"runtime of --onnx: {REFERENCE_RUNTIME}, or {checked}; a checked runtime's first "
        "batch runs through its reference too and must meet the parity rule "
        "(inference/parity.py)",
    )


def parity_line(parity: Any, name: str) -> str:
    """One line on a runtime's first batch against its reference runtime's."""
    diff = "-" if parity.max_abs_diff is None else f"{parity.max_abs_diff:.3g}"
    return (
        f"{title(name)} against {title(entry(name).reference or name)} on the first batch: "
        f"max |logit diff| {diff}, argmax agreement {100 * parity.agreement:.3f}%"
    )
