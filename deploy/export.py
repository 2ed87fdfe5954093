"""Export a Keras segmentation model to ONNX that TensorRT's parser accepts.

The path from Keras to ONNX: rebuild the model under a float32 policy (a model built under a
mixed-precision policy keeps the policy in its layer configs and would export float16 casts),
wrap it in a ``tf.function`` with a named input signature, freeze it (variables and captured
constants such as the normalisation layer's mean become graph constants), convert the frozen
graph with tf2onnx, then rewrite the constructs TensorRT rejects and, on request, convert the
graph to float16 (:mod:`deploy.rewrites`). ``tf2onnx.convert.from_keras`` fails with Keras 3
(``KeyError 'keras_tensor_N'``) and ``from_function`` leaves captured constants as extra graph
inputs, so neither is used. :func:`deploy.checks.check_onnx` checks the result.

Every exported file carries metadata (``metadata_props``) that readers use instead of guessing:
``layout`` (NHWC or NCHW), ``output`` (logits or label_ids), ``precision`` (float32 or float16),
``model``, ``input_size`` (H,W), ``normalization`` ("in-graph": feed raw [0, 255] RGB) and
``classes`` (the class set of the outputs: cityscapes19, categories or rail20).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import os
import types
import warnings
from collections.abc import Iterable, Iterator, MutableSet, Sequence, Set
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deploy.graph import INPUT_NAME, LABELS_NAME, LOGITS_NAME, OnnxSummary, summarize_onnx
from deploy.options import DEFAULT_OPSET, MIN_OPSET
from deploy.rewrites import convert_to_float16, fix_trt_incompatibilities
from inference.runtimes import FILE_PRECISIONS
from models.loading import to_float32
from models.trained import build_inference_model
from utils.errors import BadInput
from utils.io import atomic_path, check_writable_dir
from utils.labels import TRAIN_ID_TO_ID, class_set_with, get_class_set, recorded_class_set


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    keras_model: Any  #: the float32 keras.Model that was exported (reference for check_onnx)
    summary: OnnxSummary
    fixes: list[str]  #: TensorRT rewrites applied (see fix_trt_incompatibilities)
    metadata: dict[str, str]


def supported_opsets() -> range:
    """Opsets this exporter writes: MIN_OPSET to the newest tf2onnx 1.17 knows."""
    from tf2onnx import constants  # tf2onnx imports TensorFlow

    return range(MIN_OPSET, max(constants.OPSET_TO_IR_VERSION) + 1)


def check_opset(opset: int) -> int:
    """`opset` if supported, else BadInput naming the supported range."""
    opsets = supported_opsets()
    if not isinstance(opset, int) or opset not in opsets:
        raise BadInput(
            f"opset {opset!r} is not supported: this exporter writes opsets {opsets.start} "
            f"to {opsets.stop - 1} (tf2onnx 1.17 goes up to {opsets.stop - 1}, TensorRT 8.5+ "
            f"parses up to 17); pass --opset {DEFAULT_OPSET}, or 13 for JetPack 4.6/5.0"
        )
    return opset


def check_output_path(path: str | os.PathLike) -> Path:
    """`path` as a Path once its folder is writable and it is not a folder; BadInput otherwise."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(
            f"output {str(path)!r} is a folder; pass a file name such as "
            f"{str(path / 'model.onnx')!r}"
        )
    if path.suffix != ".onnx":
        raise BadInput(f"output {str(path)!r} must end in .onnx")
    check_writable_dir(path.parent)
    return path


@contextlib.contextmanager
def discard_on_error(path: str | os.PathLike) -> Iterator[None]:
    """Remove `path` when the block raises: a file just exported whose check could not run is
    not left behind (enter it only after `path` was written)."""
    try:
        yield
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _collecting_optimizer_copies() -> Iterator[None]:
    """Collect garbage before each deep copy tf2onnx's optimiser makes of the whole graph.

    tf2onnx 1.17 deep-copies the graph, weights included, before every optimiser pass, and the
    copies hold reference cycles that CPython frees late: converting HRNet-W48 or Fast-FCN grew
    past 20 GB on a 24 GB machine. Collecting first keeps the peak at a few copies (4-7 GB).
    """
    import tf2onnx.optimizer as optimizer  # tf2onnx imports TensorFlow

    original = optimizer.copy

    def deepcopy(value: Any, memo: Any = None) -> Any:
        gc.collect()
        return copy.deepcopy(value, memo)

    optimizer.copy = types.SimpleNamespace(deepcopy=deepcopy)
    try:
        yield
    finally:
        optimizer.copy = original


class _OrderedSet(MutableSet):
    """A set that iterates in insertion order: what tf2onnx's modules get for ``set`` while
    `_deterministic_tf2onnx` is active."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items = dict.fromkeys(items)

    def __contains__(self, item: Any) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self._items))}}}" if self._items else "set()"

    @classmethod
    def _from_iterable(cls, items: Iterable[Any]) -> _OrderedSet:
        return cls(items)

    def add(self, item: Any) -> None:
        self._items[item] = None

    def discard(self, item: Any) -> None:
        self._items.pop(item, None)

    def copy(self) -> _OrderedSet:
        return _OrderedSet(self)

    def update(self, *others: Iterable[Any]) -> None:
        for other in others:
            self._items.update(dict.fromkeys(other))

    def union(self, *others: Iterable[Any]) -> _OrderedSet:
        result = self.copy()
        result.update(*others)
        return result

    def intersection(self, *others: Iterable[Any]) -> _OrderedSet:
        result = self.copy()
        for other in others:
            keep = other if isinstance(other, Set) else _OrderedSet(other)
            result = _OrderedSet(item for item in result if item in keep)
        return result

    def difference(self, *others: Iterable[Any]) -> _OrderedSet:
        result = self.copy()
        for other in others:
            for item in other:
                result.discard(item)
        return result

    def issubset(self, other: Iterable[Any]) -> bool:
        return self <= _OrderedSet(other)

    def issuperset(self, other: Iterable[Any]) -> bool:
        return self >= _OrderedSet(other)


class _StableIds:
    """``id`` for tf2onnx's einsum optimiser, which names the nodes it makes after object ids:
    numbers in the order objects are first asked about (each object is kept alive, so a number
    never passes to another object). They start at 2**40 because the optimiser keys the same
    dict with small integers (the equation's inputs) and object ids."""

    FIRST = 2**40

    def __init__(self) -> None:
        self._numbers: dict[int, int] = {}
        self._kept: list[Any] = []

    def __call__(self, obj: Any) -> int:
        number = self._numbers.get(id(obj))
        if number is None:
            number = self._numbers[id(obj)] = self.FIRST + len(self._kept)
            self._kept.append(obj)
        return number


#: tf2onnx modules that talk to TensorFlow (their sets go into TensorFlow's calls): left alone.
_TF_SIDE_MODULES = ("tf2onnx.convert", "tf2onnx.tf_loader", "tf2onnx.tflite", "tf2onnx.tfjs")


@contextlib.contextmanager
def _deterministic_tf2onnx() -> Iterator[None]:
    """Make tf2onnx convert the same graph into the same ONNX file, byte for byte.

    tf2onnx 1.17's optimiser passes depend on the iteration order of sets: the transpose
    optimiser (which transpose it pushes first decides the graph it ends with) walks sets of
    node objects, ordered by their memory addresses, and the graph keeps each tensor's consumers
    in sets of names, ordered by the process's string hash; the einsum optimiser names its
    nodes after object ids, and the graph is sorted by node name between passes. The same
    export therefore gave 195-199 nodes here, and another file each time, with PYTHONHASHSEED=0
    too. Within this block every tf2onnx module of the ONNX side gets an insertion-ordered set,
    the einsum optimiser ids numbered in the order asked, and tf2onnx's counter of generated
    names starts from its initial value, so each conversion takes the same path.
    """
    import sys

    # tf2onnx imports TensorFlow; tf2onnx.convert imports the modules a conversion runs
    import tf2onnx.convert  # noqa: F401
    import tf2onnx.optimizer.einsum_optimizer as einsum
    from tf2onnx import utils as tf2onnx_utils

    modules = [
        module
        for name, module in list(sys.modules.items())
        if module is not None
        and (name == "tf2onnx" or name.startswith("tf2onnx."))
        and not name.startswith(_TF_SIDE_MODULES)
    ]
    absent = object()
    saved = [(module, vars(module).get("set", absent)) for module in modules]
    saved_id, saved_counter = vars(einsum).get("id", absent), tf2onnx_utils.INTERNAL_NAME
    for module in modules:
        module.set = _OrderedSet
    einsum.id = _StableIds()
    einsum.CachedEinsum.einsum_cache = {}  # a cached equation would skip the ids its build takes
    tf2onnx_utils.INTERNAL_NAME = 1
    try:
        yield
    finally:
        for module, value in saved:
            if value is absent:
                del module.set
            else:
                module.set = value
        if saved_id is absent:
            del einsum.id
        else:
            einsum.id = saved_id
        # names need to be unique within one graph only: the counter goes on from the higher
        tf2onnx_utils.INTERNAL_NAME = max(tf2onnx_utils.INTERNAL_NAME, saved_counter)


def export_onnx(
    model_or_name: Any,
    path: str | os.PathLike,
    input_size: Sequence[int] | None = None,
    batch: int | None = 1,
    opset: int = DEFAULT_OPSET,
    nchw: bool = False,
    argmax: bool = False,
    precision: str = "fp32",
    weights: str | os.PathLike | None = None,
    fix_trt: bool = True,
    **model_options: Any,
) -> ExportResult:
    """Export a model to an ONNX file for onnxruntime and TensorRT; return what was written.

    The graph takes float32 RGB in [0, 255] (normalisation is inside) named ``input``, shaped
    (N, H, W, 3), or (N, 3, H, W) with ``nchw``. It returns float32 ``logits`` (N, H, W, C) (or
    (N, C, H, W) with ``nchw``), or with ``argmax`` uint8 Cityscapes label ids ``label_ids``
    (N, H, W). The file is written atomically: on any error nothing is left at `path`.

    Args:
        model_or_name: a registered model name (built here in float32) or a keras.Model
            (cloned in float32 when it was built under a mixed-precision policy).
        path: the .onnx file to write.
        input_size: (H, W); required with a name, defaults to the model's input size.
        batch: fixed batch size, or None for a dynamic batch axis named ``batch``.
        opset: ONNX opset (see supported_opsets()).
        nchw: NCHW input and logits (what TensorRT samples and DeepStream expect).
        argmax: put argmax and the train id -> label id mapping in the graph (uint8 output).
        precision: fp32, or fp16 to store weights and compute in float16 (inputs and outputs
            stay float32/uint8); recorded in the ``precision`` metadata as float32/float16.
        weights: trained weights file to load (only with a name).
        fix_trt: rewrite nearest tf_half_pixel_for_nn resizes into their exact equivalent.
        **model_options: builder options used with a name (backbone, output_stride).
    """
    import tf2onnx  # imports TensorFlow

    check_opset(opset)
    if precision not in FILE_PRECISIONS:
        raise BadInput(
            f"exports are written in {', '.join(FILE_PRECISIONS)}; got precision {precision!r}"
        )
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise BadInput(f"batch must be an integer >= 1 or None (dynamic); got {batch!r}")
    path = check_output_path(path)
    model, name, (height, width) = _float32_model(model_or_name, input_size, weights, model_options)
    proto = _convert(model, name, (batch, height, width), opset, nchw, argmax)
    if batch is None:
        for value in [*proto.graph.input, *proto.graph.output]:
            dim = value.type.tensor_type.shape.dim
            if dim:
                dim[0].dim_param = "batch"
    fixes = fix_trt_incompatibilities(proto) if fix_trt else []
    if precision == "fp16":
        convert_to_float16(proto)
    metadata = {
        "model": name,
        "input_size": f"{height},{width}",
        "layout": "NCHW" if nchw else "NHWC",
        "output": LABELS_NAME if argmax else LOGITS_NAME,
        "precision": FILE_PRECISIONS[precision],
        "batch": "dynamic" if batch is None else str(batch),
        "normalization": "in-graph (feed RGB in [0, 255])",
        "producer": f"deploy.export (tf2onnx {tf2onnx.__version__})",
    }
    classes = class_set_with(int(model.outputs[0].shape[-1]))
    if classes is not None:  # what predict.py and evaluate.py check --classes against
        metadata["classes"] = classes.name
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    proto.producer_name = "cityscapes-segmentation-benchmark"
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        summary = summarize_onnx(tmp)
    summary.path = str(path)
    return ExportResult(
        path=path, keras_model=model, summary=summary, fixes=fixes, metadata=metadata
    )


def _float32_model(
    model_or_name: Any,
    input_size: Sequence[int] | None,
    weights: str | os.PathLike | None,
    model_options: dict[str, Any],
) -> tuple[Any, str, tuple[int, int]]:
    """(float32 keras.Model, its name, (H, W) to export at), checking the size fits the model."""
    if isinstance(model_or_name, str):
        if input_size is None:
            raise ValueError(f"input_size (H, W) is needed to build {model_or_name!r}")
        recorded = recorded_class_set(weights) if weights is not None else None
        if recorded is not None and "num_classes" not in model_options:  # train.py --classes
            model_options = {**model_options, "num_classes": get_class_set(recorded).num_classes}
        model = build_inference_model(model_or_name, input_size, weights, **model_options)
        name = model_or_name
    else:
        if weights is not None or model_options:
            raise ValueError("weights and model options only apply when exporting by model name")
        model = to_float32(model_or_name)
        name = model.name
    shape = tuple(model.inputs[0].shape[1:3])
    if input_size is None:
        if None in shape:
            raise ValueError(f"model {name!r} has no fixed input size; pass input_size=(H, W)")
        input_size = shape
    height, width = int(input_size[0]), int(input_size[1])
    if None not in shape and tuple(int(s) for s in shape) != (height, width):
        raise ValueError(
            f"model {name!r} was built for {shape[0]}x{shape[1]}, not {height}x{width}"
        )
    return model, name, (height, width)


def _convert(
    model: Any,
    name: str,
    shape: tuple[int | None, int, int],
    opset: int,
    nchw: bool,
    argmax: bool,
) -> onnx.ModelProto:
    """Freeze the model's forward pass (with argmax and the label-id table on request) and
    convert the frozen graph with tf2onnx, naming the input and output."""
    # TensorFlow only on the paths that need it
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    classes = class_set_with(int(model.outputs[0].shape[-1]))
    table = TRAIN_ID_TO_ID
    if classes is not None and classes.name != "cityscapes19":  # class index -> label id
        table = classes.label_ids(np.arange(256))
    lut = tf.constant(table.astype(np.int32))

    def forward(images: Any) -> Any:
        outputs = model(images, training=False)
        logits = outputs[0] if isinstance(outputs, list | tuple) else outputs
        logits = tf.cast(logits, tf.float32)
        if not argmax:
            return tf.identity(logits, name="logits_out")
        ids = tf.gather(lut, tf.argmax(logits, axis=-1, output_type=tf.int32))
        return tf.cast(ids, tf.uint8, name="label_ids_out")

    spec = tf.TensorSpec((*shape, 3), tf.float32, name=INPUT_NAME)
    concrete = tf.function(forward).get_concrete_function(spec)
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # freezing and tf2onnx log TF1-API deprecation notices
    try:
        frozen = convert_variables_to_constants_v2(concrete)
        input_tf = frozen.inputs[0].name
        output_tf = frozen.outputs[0].name
        output_name = LABELS_NAME if argmax else LOGITS_NAME
        with warnings.catch_warnings(), _collecting_optimizer_copies(), _deterministic_tf2onnx():
            warnings.simplefilter("ignore")
            proto, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                name=name,
                input_names=[input_tf],
                output_names=[output_tf],
                opset=opset,
                inputs_as_nchw=[input_tf] if nchw else None,
                outputs_as_nchw=[output_tf] if nchw and not argmax else None,
                tensors_to_rename={input_tf: INPUT_NAME, output_tf: output_name},
            )
    finally:
        logger.setLevel(level)
    return proto
