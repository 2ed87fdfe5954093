"""The exported ONNX files: their names; load, metadata, summary, nodes, constants.

Imports neither TensorFlow nor tf2onnx (onnx only); the opsets are in deploy.options, which a
command line's `--help` reads without onnx.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper
from onnx.checker import ValidationError

from utils.errors import BadInput

#: Names of the exported graph's input and of its two possible outputs.
INPUT_NAME = "input"
LOGITS_NAME = "logits"
LABELS_NAME = "label_ids"


@dataclasses.dataclass
class OnnxSummary:
    """What an ONNX file holds: opset, inputs and outputs, op counts, size, metadata."""

    path: str
    opset: int
    inputs: list[tuple[str, str, list[int | str]]]
    outputs: list[tuple[str, str, list[int | str]]]
    op_counts: dict[str, int]
    file_size: int
    metadata: dict[str, str]

    def format(self) -> str:
        """Multi-line human-readable text."""

        def io_line(kind: str, item: tuple[str, str, list[int | str]]) -> str:
            name, dtype, shape = item
            return f"  {kind} {name}: {dtype} [{', '.join(str(d) for d in shape)}]"

        ops = ", ".join(
            f"{op} {n}" for op, n in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        lines = [
            f"{self.path}: {self.file_size / 2**20:.2f} MiB, opset {self.opset}, "
            f"{sum(self.op_counts.values())} nodes"
        ]
        lines += [io_line("input ", i) for i in self.inputs]
        lines += [io_line("output", o) for o in self.outputs]
        lines.append(f"  ops: {ops}")
        if self.metadata:
            lines.append("  metadata: " + ", ".join(f"{k}={v}" for k, v in self.metadata.items()))
        return "\n".join(lines)


def _value_info(value: onnx.ValueInfoProto) -> tuple[str, str, list[int | str]]:
    """(name, dtype name, shape with dim_param strings for dynamic axes)."""
    tensor = value.type.tensor_type
    dtype = TensorProto.DataType.Name(tensor.elem_type).lower()
    shape: list[int | str] = [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim
    ]
    return value.name, dtype, shape


def load_onnx(model_or_path: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """An ONNX model from a ModelProto or a file path; BadInput for a missing or corrupt file."""
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise BadInput(f"ONNX file {str(path)!r} not found; export one with convert_to_onnx.py")
    # onnx.load raises DecodeError for a corrupt or truncated file, ValidationError for external
    # data that is missing, OSError for a file it cannot read
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValidationError, OSError) as exc:
        raise BadInput(
            f"{str(path)!r} is not a readable ONNX file ({exc}); export it again with "
            "convert_to_onnx.py"
        ) from exc
    if not model.HasField("graph"):  # an empty file parses as an empty model
        raise BadInput(
            f"{str(path)!r} holds no ONNX graph (empty?); export it again with convert_to_onnx.py"
        )
    return model


def summarize_onnx(path: str | os.PathLike) -> OnnxSummary:
    """Summary of an ONNX file: opset, inputs/outputs with shapes, op counts, size in bytes.

    Args:
        path: the .onnx file.
    """
    model = load_onnx(path)
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    counts = collections.Counter(n.op_type for n in all_nodes(graph))
    return OnnxSummary(
        path=str(path),
        opset=int(opset),
        inputs=[_value_info(v) for v in graph.input if v.name not in init_names],
        outputs=[_value_info(v) for v in graph.output],
        op_counts=dict(counts),
        file_size=Path(path).stat().st_size,
        metadata={p.key: p.value for p in model.metadata_props},
    )


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes of `graph` and of the subgraphs of If/Loop/Scan nodes."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(all_nodes(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    nodes.extend(all_nodes(sub))
    return nodes


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Attribute value of `node` (strings decoded), or `default`."""
    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs of the top-level graph, as numpy arrays."""
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values
