"""Graph rewrites of an exported ONNX file: TensorRT-friendly nearest resizes, float16.

Both work in place on a ModelProto, after tf2onnx and before the file is written.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploy.graph import all_nodes, constants, node_attr

#: Inputs that the ONNX spec types as float32 whatever the graph's precision: (op, input index).
_FLOAT32_ONLY_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}


def fix_trt_incompatibilities(model: onnx.ModelProto) -> list[str]:
    """Rewrite, in place, the constructs that have an exact TensorRT-friendly equivalent.

    A nearest Resize in ``tf_half_pixel_for_nn`` mode with ``floor`` rounding picks source
    index ``floor((x + 0.5) / scale)``. ``half_pixel`` with ``round_prefer_ceil`` picks
    ``round_half_up((x + 0.5) / scale - 0.5)``, the same index for every scale; for an integer
    upsampling factor ``asymmetric`` with ``floor`` (``floor(x / scale)``) is also the same and
    is the form every TensorRT version implements, so that one is used when the scales are
    known integers. Returns one line per rewritten node.

    Args:
        model: the ModelProto to rewrite.
    """
    values = constants(model.graph)
    fixes = []
    for node in all_nodes(model.graph):
        if node.op_type != "Resize" or node_attr(node, "mode", "nearest") != "nearest":
            continue
        if node_attr(node, "coordinate_transformation_mode") != "tf_half_pixel_for_nn":
            continue
        if node_attr(node, "nearest_mode", "round_prefer_floor") != "floor":
            continue  # not what tf2onnx writes; leave it for find_trt_incompatibilities
        scales = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        integer_up = (
            scales is not None
            and scales.size > 0
            and bool(np.all(scales >= 1))
            and bool(np.all(np.abs(scales - np.round(scales)) < 1e-6))
        )
        transform, rounding = (
            ("asymmetric", "floor") if integer_up else ("half_pixel", "round_prefer_ceil")
        )
        kept = [
            a
            for a in node.attribute
            if a.name not in ("coordinate_transformation_mode", "nearest_mode")
        ]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.extend(
            [
                helper.make_attribute("coordinate_transformation_mode", transform),
                helper.make_attribute("nearest_mode", rounding),
            ]
        )
        fixes.append(
            f"Resize {node.name!r}: nearest tf_half_pixel_for_nn/floor -> "
            f"{transform}/{rounding} (same pixels)"
        )
    return fixes


def convert_to_float16(model: onnx.ModelProto) -> int:
    """Convert a float32 graph to float16 in place, keeping float32 graph inputs and outputs.

    Float initializers, Constant tensors and ``Cast(to=float)`` become float16, except where
    the ONNX spec requires float32 (Resize ``roi``/``scales``); a Cast after each float input
    and before each float output keeps the interface float32, so callers feed and read the
    same arrays as with the float32 file. Returns the number of converted initializers.

    Args:
        model: the ModelProto to convert (modified in place).
    """
    graph = model.graph
    float32_only = set()
    for node in all_nodes(graph):
        for index, name in enumerate(node.input):
            if (node.op_type, index) in _FLOAT32_ONLY_INPUTS and name:
                float32_only.add(name)
    converted = 0
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in float32_only:
            array = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            converted += 1
    for node in all_nodes(graph):
        if any(out in float32_only for out in node.output):
            continue
        if node.op_type == "Cast" and node_attr(node, "to") == TensorProto.FLOAT:
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = TensorProto.FLOAT16
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                array = numpy_helper.to_array(attr.t).astype(np.float16)
                attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
    init_names = {i.name for i in graph.initializer}
    new_nodes = []
    for value in graph.input:
        if value.name in init_names or value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{value.name}_fp16"
        for node in graph.node:
            node.input[:] = [half if n == value.name else n for n in node.input]
        new_nodes.append(
            helper.make_node(
                "Cast", [value.name], [half], to=TensorProto.FLOAT16, name=f"{value.name}_to_fp16"
            )
        )
    tail = []
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{value.name}_fp16"
        for node in graph.node:
            node.output[:] = [half if n == value.name else n for n in node.output]
            node.input[:] = [half if n == value.name else n for n in node.input]
        tail.append(
            helper.make_node(
                "Cast", [half], [value.name], to=TensorProto.FLOAT, name=f"{value.name}_to_fp32"
            )
        )
    nodes = new_nodes + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # intermediate types changed; shape inference recomputes them
    return converted
