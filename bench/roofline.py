"""The roofline of one inference: the bytes an exported graph must move, and the bound time.

Traffic (`onnx_traffic`) is counted on the exported ONNX file, with the shapes of ONNX's shape
inference: every node reads each of its input tensors and writes each of its outputs once, and
the weights (initializers and Constant-node outputs) are read once per call. That is the
traffic of a runtime that keeps no intermediate tensor in cache between nodes and fuses none:
onnxruntime and OpenVINO fuse some nodes (convolution + activation) and keep small tensors in
cache, so a call can move less; the count is the graph's, the same for every runtime.

The roofline bound of a call (`roofline`) is the larger of its compute time at the machine's
peak arithmetic rate and its traffic time at the machine's copy bandwidth; a call whose
arithmetic intensity (FLOP per byte) is below the ridge point (peak / bandwidth) is
memory-bound. The share a measured call reaches is bound / measured time.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np


@dataclasses.dataclass
class Traffic:
    """Bytes one call of an ONNX graph moves, split into activations and weights."""

    #: Sum over the nodes of the non-constant tensors each reads and writes.
    activation_bytes: int
    #: Initializers and Constant-node outputs, counted once.
    weight_bytes: int
    nodes: int
    #: Tensors left out because shape inference gave them no static shape.
    unknown: list[str] = dataclasses.field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Activations plus weights."""
        return self.activation_bytes + self.weight_bytes


def _tensor_bytes(elem_type: int, dims: list[int]) -> int:
    """Bytes of a tensor of ONNX element type `elem_type` and shape `dims`."""
    # onnx only where a graph is read
    from onnx import helper

    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def _static_shapes(graph: Any) -> dict[str, tuple[int, list[int] | None]]:
    """{tensor name: (element type, static dims or None)} from a graph's value infos."""
    shapes: dict[str, tuple[int, list[int] | None]] = {}
    for info in [*graph.input, *graph.output, *graph.value_info]:
        tensor = info.type.tensor_type
        if not tensor.HasField("shape"):
            shapes[info.name] = (tensor.elem_type, None)
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        static = None if any(d is None for d in dims) else [int(d) for d in dims]
        shapes[info.name] = (tensor.elem_type, static)
    return shapes


def onnx_traffic(model_or_path: Any | str | os.PathLike) -> Traffic:
    """Bytes one call of an ONNX graph reads and writes (see the module's docstring).

    Args:
        model_or_path: an onnx.ModelProto or the path of an .onnx file. Nodes of If/Loop
            subgraphs are not walked (the exported graphs have none).

    Returns:
        The Traffic; tensors without a static shape are named in `unknown`, not counted.
    """
    # onnx and deploy's loader only where a graph is read
    import onnx
    from onnx import numpy_helper

    from deploy.graph import load_onnx

    # data_prop: shapes computed by Shape -> Gather -> Concat chains (tf2onnx's reshapes) too
    model = onnx.shape_inference.infer_shapes(load_onnx(model_or_path), data_prop=True)
    graph = model.graph
    weights: dict[str, int] = {i.name: numpy_helper.to_array(i).nbytes for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    weights[node.output[0]] = numpy_helper.to_array(attr.t).nbytes
    shapes = _static_shapes(graph)
    activation, unknown, nodes = 0, [], 0
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        nodes += 1
        for name in [*node.input, *node.output]:
            if not name or name in weights:
                continue
            elem_type, dims = shapes.get(name, (0, None))
            if dims is None:
                unknown.append(name)
                continue
            activation += _tensor_bytes(elem_type, dims)
    return Traffic(activation, sum(weights.values()), nodes, sorted(set(unknown)))


@dataclasses.dataclass(frozen=True)
class Roofline:
    """The roofline of one call: its bound time, what bounds it, and the share a time reaches."""

    compute_s: float  #: FLOPs / peak
    memory_s: float  #: bytes / bandwidth
    intensity: float  #: FLOP per byte
    ridge: float  #: the peak's FLOP per byte of bandwidth

    @property
    def bound_s(self) -> float:
        """The least time the call can take: max(compute time, memory time)."""
        return max(self.compute_s, self.memory_s)

    @property
    def bound_by(self) -> str:
        """'memory' when the intensity is below the ridge point, else 'compute'."""
        return "memory" if self.intensity < self.ridge else "compute"

    def share_pct(self, measured_s: float) -> float:
        """How close a measured time comes to the bound, in percent (100: at the roof)."""
        if measured_s <= 0:
            raise ValueError(f"a measured time must be positive; got {measured_s!r}")
        return 100.0 * self.bound_s / measured_s


def roofline(
    flops: float, traffic_bytes: float, peak_flops_s: float, bandwidth_bytes_s: float
) -> Roofline:
    """The Roofline of a call of `flops` FLOPs moving `traffic_bytes` bytes on a machine of
    `peak_flops_s` FLOP/s and `bandwidth_bytes_s` bytes/s; ValueError on a non-positive figure."""
    figures = (flops, traffic_bytes, peak_flops_s, bandwidth_bytes_s)
    if any(not v or v <= 0 for v in figures):
        raise ValueError(
            "FLOPs, bytes, peak and bandwidth must be positive; got "
            f"{flops!r}, {traffic_bytes!r}, {peak_flops_s!r}, {bandwidth_bytes_s!r}"
        )
    return Roofline(
        compute_s=flops / peak_flops_s,
        memory_s=traffic_bytes / bandwidth_bytes_s,
        intensity=flops / traffic_bytes,
        ridge=peak_flops_s / bandwidth_bytes_s,
    )
