"""Compute counts read from a model's traced TensorFlow graph.

We count multiply-accumulates (MACs) of the ops that do the arithmetic of a segmentation
network: convolutions (regular, depthwise, transposed, 3-D), matrix products and einsums,
with the static shapes of the traced inference graph. One MAC is two floating-point operations,
so GFLOPs = 2 x GMACs, the convention of most papers that quote "FLOPs" (HRNet's 696 GFLOPs)
while others quote multiply-adds (DeepLab's 418.6 G multiply-adds). Element-wise work (batch
norm, activations, additions, resizing, pooling) is not counted: in these networks it is a few
percent of the total and runs at memory speed, not at the arithmetic peak.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from utils.errors import BadInput

#: Ops whose arithmetic is counted, by TensorFlow op type.
COUNTED_OPS = (
    "Conv2D",
    "Conv3D",
    "DepthwiseConv2dNative",
    "Conv2DBackpropInput",
    "Conv3DBackpropInputV2",
    "MatMul",
    "BatchMatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
    "Einsum",
)
#: Function-call ops whose bodies are walked as well.
CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


@dataclasses.dataclass
class ComputeCount:
    """MACs of one traced forward pass, with the per-op-type breakdown."""

    macs: int
    by_op: dict[str, int]
    #: Counted op types whose shapes were not fully static (their MACs are missing).
    unknown_shapes: list[str] = dataclasses.field(default_factory=list)

    @property
    def gmacs(self) -> float:
        """Giga multiply-accumulates."""
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        """Giga floating-point operations, two per multiply-accumulate."""
        return 2.0 * self.macs / 1e9


def _static(shape: Any) -> list[int] | None:
    """A TensorShape as a list of ints, or None when any dimension is unknown."""
    try:
        dims = shape.as_list()
    except ValueError:
        return None
    if dims is None or any(d is None for d in dims):
        return None
    return [int(d) for d in dims]


def _attr(op: Any, name: str) -> Any:
    """An op attribute, decoded from bytes when it is a string."""
    value = op.get_attr(name)
    return value.decode() if isinstance(value, bytes) else value


def einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """MACs of a two-operand (or one-operand) einsum: the product of every index's size."""
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != len(shapes):
        raise ValueError(
            f"einsum {equation!r} has {len(inputs)} operands; got {len(shapes)} shapes"
        )
    sizes: dict[str, int] = {}
    for spec, shape in zip(inputs, shapes, strict=True):
        if "." in spec:
            # Broadcast dimensions: give them the leading sizes of this operand.
            named = spec.replace("...", "")
            extra = len(shape) - len(named)
            head = spec.index(".")
            for i in range(extra):
                sizes.setdefault(f"...{i}", shape[head + i])
            spec = named
            shape = shape[:head] + shape[head + extra :]
        for index, size in zip(spec, shape, strict=True):
            sizes[index] = max(sizes.get(index, 1), size)
    return math.prod(sizes.values())


def op_macs(op: Any) -> int | None:
    """MACs of one graph op, 0 for ops that are not counted, None when shapes are not static."""
    kind = op.type
    if kind not in COUNTED_OPS:
        return 0
    if kind == "Einsum":
        shapes = [_static(t.shape) for t in op.inputs]
        if any(s is None for s in shapes):
            return None
        return einsum_macs(_attr(op, "equation"), shapes)
    out = _static(op.outputs[0].shape)
    if out is None:
        return None
    if kind in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a = _static(op.inputs[0].shape)
        if a is None:
            return None
        transpose = "transpose_a" if kind == "MatMul" else "adj_x"
        inner = a[-2] if op.get_attr(transpose) else a[-1]
        return math.prod(out) * inner
    if kind in ("Conv2DBackpropInput", "Conv3DBackpropInputV2"):
        # Transposed conv: every input element is spread over the kernel for each out channel.
        kernel = _static(op.inputs[1].shape)  # (kh, kw, out, in)
        grad = _static(op.inputs[2].shape)  # the layer's input
        if kernel is None or grad is None:
            return None
        return math.prod(grad) * math.prod(kernel[:-2]) * kernel[-2]
    kernel = _static(op.inputs[1].shape)
    if kernel is None:
        return None
    if kind == "DepthwiseConv2dNative":
        # kernel (kh, kw, in, multiplier); each output element is one kh x kw window.
        return math.prod(out) * kernel[0] * kernel[1]
    # Conv2D / Conv3D: kernel (..., in/groups, out); each output element sums over the window.
    return math.prod(out) * math.prod(kernel[:-1])


def graph_macs(graph: Any) -> ComputeCount:
    """Count the MACs of every op in a tf.Graph, walking into called functions."""
    by_op: dict[str, int] = {}
    unknown: list[str] = []
    functions = getattr(graph, "_functions", {})

    def walk(g: Any, seen: frozenset[str]) -> None:
        for op in g.get_operations():
            if op.type in CALL_OPS:
                name = op.get_attr("f").name
                fn = functions.get(name) or (
                    g._functions.get(name) if hasattr(g, "_functions") else None
                )
                if fn is not None and name not in seen and hasattr(fn, "graph"):
                    walk(fn.graph, seen | {name})
                continue
            macs = op_macs(op)
            if macs is None:
                unknown.append(f"{op.type}:{op.name}")
            elif macs:
                by_op[op.type] = by_op.get(op.type, 0) + macs

    walk(graph, frozenset())
    return ComputeCount(macs=sum(by_op.values()), by_op=by_op, unknown_shapes=unknown)


def model_macs(model: Any, input_shape: tuple[int, int], batch_size: int = 1) -> ComputeCount:
    """MACs of one inference forward pass of a Keras model on a (batch, H, W, 3) float32 input.

    Args:
        model: a built keras.Model taking (N, H, W, 3) float32 images.
        input_shape: (H, W) of the input.
        batch_size: images per forward pass (MACs scale linearly with it).

    Returns:
        The ComputeCount of the traced graph (training=False).
    """
    # TensorFlow only on the paths that need it
    import tensorflow as tf

    height, width = int(input_shape[0]), int(input_shape[1])
    if batch_size < 1 or height < 1 or width < 1:
        raise BadInput(
            f"batch and size must be positive; got batch {batch_size!r}, size {input_shape!r}"
        )
    spec = tf.TensorSpec((batch_size, height, width, 3), tf.float32, name="input")
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return graph_macs(concrete.graph)
