"""Checks of an exported ONNX file: parity with Keras, and the constructs TensorRT rejects.

:func:`check_onnx` runs ``onnx.checker``, compares onnxruntime with Keras on street-like images
(:func:`sample_images`) and lists the constructs TensorRT's ONNX parser would reject
(:func:`find_trt_incompatibilities`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from datasets.cityscapes import read_image
from datasets.synthetic import generate
from deploy.graph import LABELS_NAME, all_nodes, constants, load_onnx, node_attr
from inference.parity import compare, limits
from inference.runtimes import REFERENCE_RUNTIME, open_runtime
from models.trained import jumps_at_pooling_ties
from utils.errors import BadInput
from utils.labels import TRAIN_ID_TO_ID

#: The smallest image side the synthetic Cityscapes generator draws.
_GENERATOR_MIN_SIDE = 16

#: ONNX operators TensorRT's ONNX parser imports ("Y" rows of the support matrix). Source:
#: onnx/onnx-tensorrt docs/operators.md for TensorRT 8.4 (commit 009d6541, the parser of
#: JetPack 5.0.2); later TensorRT releases support a superset, so a file that passes this list
#: parses on JetPack 5.0.2 and every later release.
TRT_SUPPORTED_OPS = frozenset(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg
NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform
RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose
Unsqueeze Upsample Where Xor
""".split()
)
TRT_OPS_SOURCE = (
    "onnx/onnx-tensorrt docs/operators.md, TensorRT 8.4 support matrix (commit 009d6541)"
)


# --------------------------------------------------------------------------- TensorRT constructs


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> rank, from the graph's declared and inferred shapes."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; fall back to what the file declares
        inferred = model
    g = inferred.graph
    ranks = {}
    for value in [*g.input, *g.output, *g.value_info]:
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    for init in g.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def find_trt_incompatibilities(onnx_model: onnx.ModelProto | str | os.PathLike) -> list[str]:
    """Constructs TensorRT's ONNX parser rejects, one message per offending node.

    Flags: a nearest-neighbour Resize in ``tf_half_pixel_for_nn`` mode (what tf2onnx writes for
    Keras' nearest resizing), a Resize in a mode other than nearest/linear, a Pad of more than
    4 dimensions (left over from an atrous convolution that was not fused back into Conv
    dilations: SpaceToBatchND/BatchToSpaceND), Conv/ConvTranspose weights that are not
    initializers, ops outside the ``ai.onnx`` domain and ops missing from
    :data:`TRT_SUPPORTED_OPS`.

    Args:
        onnx_model: a ModelProto or the path of an .onnx file.
    """
    model = load_onnx(onnx_model)
    problems = []
    ranks = _ranks(model)
    values = constants(model.graph)
    for node in all_nodes(model.graph):
        label = f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label}: custom domain {node.domain!r} is not an ONNX operator")
            continue
        if node.op_type not in TRT_SUPPORTED_OPS:
            problems.append(
                f"{label}: op {node.op_type} is not supported by TensorRT's ONNX "
                f"parser ({TRT_OPS_SOURCE})"
            )
        if node.op_type == "Resize":
            mode = node_attr(node, "mode", "nearest")
            transform = node_attr(node, "coordinate_transformation_mode", "half_pixel")
            if mode not in ("nearest", "linear"):
                problems.append(f"{label}: Resize mode {mode!r}; TensorRT takes nearest or linear")
            if mode == "nearest" and transform == "tf_half_pixel_for_nn":
                problems.append(
                    f"{label}: nearest Resize in tf_half_pixel_for_nn mode (deprecated "
                    "since opset 13; rejected by TensorRT): rewrite it with "
                    "deploy.rewrites.fix_trt_incompatibilities"
                )
        if node.op_type == "Pad" and node.input:
            rank = ranks.get(node.input[0])
            pads = values.get(node.input[1]) if len(node.input) > 1 else node_attr(node, "pads")
            if rank is None and pads is not None:
                rank = int(np.asarray(pads).size) // 2
            if rank is not None and rank > 4:
                problems.append(
                    f"{label}: Pad of a {rank}-D tensor (left from an unfused atrous "
                    "convolution, SpaceToBatchND); TensorRT pads at most 4-D tensors"
                )
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            problems.append(
                f"{label}: MaxPool with an Indices output (argmax pooling); "
                "TensorRT's MaxPool has no Indices output"
            )
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            if node.input[1] not in values:
                problems.append(
                    f"{label}: weights {node.input[1]!r} are computed, not an "
                    "initializer; TensorRT needs constant convolution weights"
                )
    return problems


# --------------------------------------------------------------------------- parity check


def sample_images(num: int, size: Sequence[int], seed: int = 0) -> np.ndarray:
    """`num` street-like RGB images (N, H, W, 3) float32 in [0, 255] for parity checks.

    Draws them with the synthetic Cityscapes generator (``datasets.synthetic``); for sizes below
    its 16x16 minimum, structured random scenes (sky gradient, blocks, road, texture noise),
    never plain noise.

    Args:
        num: number of images.
        size: (H, W).
        seed: the same seed gives the same images.
    """
    height, width = int(size[0]), int(size[1])
    if min(height, width) >= _GENERATOR_MIN_SIDE:
        with tempfile.TemporaryDirectory(prefix="export-check-") as tmp:
            generate(tmp, num=num, size=(height, width), seed=seed, splits=("val",))
            files = sorted(Path(tmp, "leftImg8bit", "val").rglob("*_leftImg8bit.png"))
            return np.stack([read_image(f) for f in files[:num]]).astype(np.float32)
    return _random_scenes(num, height, width, seed)


def _random_scenes(num: int, height: int, width: int, seed: int) -> np.ndarray:
    """Structured random street scenes for sizes the generator cannot draw."""
    rng = np.random.default_rng(seed)
    images = np.empty((num, height, width, 3), dtype=np.float32)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    for i in range(num):
        image = 200 - 80 * rows + np.zeros((1, width, 3), np.float32)
        for _ in range(rng.integers(4, 10)):
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            y1 = min(height, y0 + rng.integers(2, max(3, height // 2)))
            x1 = min(width, x0 + rng.integers(2, max(3, width // 3)))
            image[y0:y1, x0:x1] = rng.uniform(20, 235, 3)
        image[int(height * 0.6) :] = rng.uniform(70, 110) + np.zeros(3)
        image += rng.normal(0, 8, image.shape)
        images[i] = np.clip(image, 0, 255)
    return images


@dataclasses.dataclass
class CheckResult:
    """Outcome of :func:`check_onnx`."""

    checker_ok: bool
    max_abs_diff: float | None  #: None for an argmax export (no logits to compare)
    agreement: float  #: fraction of pixels whose class (or label id) matches Keras
    max_diff_allowed: float | None  #: math.inf when not bounded (outputs jump at ties)
    min_agreement: float
    trt_problems: list[str]
    num_images: int
    precision: str
    errors: list[str] = dataclasses.field(default_factory=list)
    #: max |logit diff| / max(1, max |Keras logit|); None for an argmax export
    relative_diff: float | None = None
    #: parity judged on argmax agreement alone (the model's outputs jump at pooling ties)
    ties_rule: bool = False

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return self.checker_ok and not self.errors and not self.trt_problems

    def format(self) -> str:
        """Multi-line human-readable text."""
        if self.max_abs_diff is None:
            diff = "n/a (label-id output)"
        else:
            relative = "" if self.relative_diff is None else f", {self.relative_diff:.3g} relative"
            bound = (
                "reported, not judged: outputs jump at pooling ties"
                if self.ties_rule
                else f"allowed {self.max_diff_allowed:.3g}"
            )
            diff = f"{self.max_abs_diff:.3g}{relative} ({bound})"
        lines = [
            f"onnx.checker: {'ok' if self.checker_ok else 'FAILED'}",
            f"parity vs Keras on {self.num_images} street images ({self.precision}): "
            f"max |logit diff| {diff}, argmax agreement {100 * self.agreement:.3f}% "
            f"(need >= {100 * self.min_agreement:.1f}%)",
            "TensorRT constructs: "
            + ("none rejected" if not self.trt_problems else f"{len(self.trt_problems)} rejected"),
        ]
        lines += [f"  - {p}" for p in self.trt_problems]
        lines += [f"FAILED: {e}" for e in self.errors]
        return "\n".join(lines)


def check_onnx(
    path: str | os.PathLike,
    keras_model: Any,
    num_images: int = 2,
    seed: int = 0,
    images: np.ndarray | None = None,
    providers: Sequence[str] | None = ("CPUExecutionProvider",),
) -> CheckResult:
    """Check an exported file: onnx.checker, parity with Keras, TensorRT-rejected constructs.

    Parity runs both on the same street-like images (:func:`sample_images`) and compares the
    logits (max absolute difference) and the per-pixel class (argmax agreement); for an argmax
    export the graph's label ids are compared with Keras' argmax mapped to label ids. A model
    whose outputs jump at pooling ties (:func:`jumps_at_pooling_ties`) is judged on argmax
    agreement alone (`inference.parity`), its difference reported.

    Args:
        path: the .onnx file written by export_onnx.
        keras_model: the float32 model that was exported (ExportResult.keras_model).
        num_images: images to compare; a dynamic-batch file gets them in one batch, a
            fixed-batch file in whole batches (`num_images` rounded up to a multiple of its
            batch size).
        seed: image seed.
        images: explicit (N, H, W, 3) images in [0, 255] instead of generated ones (N a
            multiple of a fixed batch size).
        providers: onnxruntime providers (CPU by default: the reference backend).
    """
    model = load_onnx(path)
    errors: list[str] = []
    checker_ok = _run_checker(path, errors)
    meta = {p.key: p.value for p in model.metadata_props}
    precision = meta.get("precision", "float32")
    runtime = open_runtime(REFERENCE_RUNTIME, path, providers=providers)
    size = (
        tuple(int(v) for v in meta["input_size"].split(","))
        if meta.get("input_size")
        else tuple(int(s) for s in keras_model.inputs[0].shape[1:3])
    )
    images, step = _parity_images(runtime.batch, size, num_images, seed, images)
    got = runtime.run(images)
    ref = keras_model.predict(images, verbose=0, batch_size=step)
    ref = np.asarray(ref[0] if isinstance(ref, list | tuple) else ref, dtype=np.float32)
    ties_rule = jumps_at_pooling_ties(keras_model)
    if meta.get("output") == LABELS_NAME:
        if got.dtype != np.uint8:
            errors.append(f"label-id output has dtype {got.dtype}, expected uint8")
        parity = compare(got, TRAIN_ID_TO_ID[ref.argmax(-1)])
    else:
        parity = compare(got, ref)
    parity.judge(precision, ties_rule)
    errors += parity.errors
    max_diff_allowed, min_agreement = limits(precision, parity.logit_scale, ties_rule)
    return CheckResult(
        checker_ok=checker_ok,
        max_abs_diff=parity.max_abs_diff,
        agreement=parity.agreement,
        max_diff_allowed=None if parity.max_abs_diff is None else max_diff_allowed,
        min_agreement=min_agreement,
        trt_problems=find_trt_incompatibilities(model),
        num_images=len(images),
        precision=precision,
        errors=errors,
        relative_diff=parity.relative_diff,
        ties_rule=ties_rule,
    )


def _run_checker(path: str | os.PathLike, errors: list[str]) -> bool:
    """Run onnx.checker's full check; record its first line in `errors` when it fails."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        errors.append(f"onnx.checker: {str(exc).splitlines()[0]}")
        return False
    return True


def _parity_images(
    fixed: int | None,
    size: Sequence[int],
    num_images: int,
    seed: int,
    images: np.ndarray | None,
) -> tuple[np.ndarray, int]:
    """(images, batch step) for the parity run: a file of `fixed` batch takes whole batches."""
    if images is None:
        count = num_images if fixed is None else -(-num_images // fixed) * fixed
        images = sample_images(count, size, seed=seed)
    images = np.asarray(images, dtype=np.float32)
    step = fixed or len(images)
    if len(images) == 0 or len(images) % step:
        raise BadInput(f"this file takes batches of {fixed} images; got {len(images)} images")
    return images, step
