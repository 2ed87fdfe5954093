"""Published checkpoints into the suite's models: read a checkpoint safely, recognise the model
and variant from its keys and shapes, convert each tensor to its Keras layer, write a
`.weights.h5` that records where it came from.

Supported now: mmsegmentation's Cityscapes checkpoints of PIDNet (S, M, L), DDRNet
(23-slim, 23) and OCRNet on HRNetV2 (W18-Small, W48). Key names and shapes are those mmsegmentation 1.2.2 saves (`backbone.*`,
`decode_head.*`); its training-only heads (PIDNet's P and D heads, DDRNet's auxiliary head)
are not part of the inference model and are left out.

A `.pth` file is a pickle, and unpickling runs whatever code it names: it is read with
`torch.load(..., weights_only=True)`, which refuses anything but tensors and plain containers,
so a file that needs more is refused with one line (never loaded with weights_only=False).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import build_model, get_info
from utils.errors import BadInput

#: What to install to read a .pth checkpoint.
TORCH_HINT = "pip install -r requirements-import.txt (torch, to read .pth checkpoints)"
#: .weights.h5 attributes an imported file carries (besides the class set).
MODEL_ATTRIBUTE, OPTIONS_ATTRIBUTE = "model", "options"
SOURCE_ATTRIBUTE, SHA256_ATTRIBUTE, MIOU_ATTRIBUTE = "source", "source_sha256", "published_miou"

#: Published Cityscapes val mIoU (%) of mmsegmentation's checkpoints (its model zoo README).
MMSEG_MIOU = {
    ("pidnet", "s"): 78.74,
    ("pidnet", "m"): 80.22,
    ("pidnet", "l"): 80.89,
    ("ddrnet", "23-slim"): 77.84,
    ("ddrnet", "23"): 79.99,
    # OCRNet on HRNetV2p-W18-Small / W48, 512x1024 crops, 160k iterations
    ("hrnet_ocr", "w18"): 78.45,
    ("hrnet_ocr", "w48"): 81.35,
}

State = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- reading


def read_checkpoint(path: str | os.PathLike) -> State:
    """The tensors of a checkpoint as float32/int numpy arrays, keyed by their names.

    `.safetensors` files are read with the safetensors package; anything else as a torch
    pickle with weights_only=True (a dict with or without `state_dict`). BadInput, in one line,
    for a missing file, a missing package, a pickle that needs more than tensors and plain
    containers, or a file that holds no tensors.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise BadInput(f"checkpoint {str(path)!r} not found; give the downloaded file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise BadInput(f"reading {str(path)!r} needs safetensors; {TORCH_HINT}") from None
        return dict(load_file(str(path)))
    try:
        import torch
    except ImportError:
        raise BadInput(f"reading {str(path)!r} needs torch; {TORCH_HINT}") from None
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols: not news here
            warnings.simplefilter("ignore")
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message: its advice, then the reason, then a link; the reason is kept
        reason = str(exc).split("trusted source.")[-1].split("Check the documentation")[0]
        reason = reason.split("WeightsUnpickler error:")[-1]
        raise BadInput(
            f"checkpoint {str(path)!r} holds more than tensors and plain data (it would run "
            f"code when unpickled: {' '.join(reason.split())[:150]}); refused, nothing was loaded"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:  # torch's errors for bad files
        first = " ".join(str(exc).split())[:200]
        raise BadInput(f"checkpoint {str(path)!r} cannot be read by torch: {first}") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise BadInput(f"checkpoint {str(path)!r} holds no state_dict of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise BadInput(f"checkpoint {str(path)!r} holds no tensors")
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in tensors.items()}  # fmt: skip


def identify(state: State) -> tuple[str, dict[str, Any]]:
    """(model, builder options) of an mmsegmentation checkpoint from its keys and shapes;
    BadInput naming what was looked for when it is none this importer knows."""
    stem = state.get("backbone.stem.0.conv.weight")
    if "backbone.i_branch_layers.0.0.conv1.conv.weight" in state and stem is not None:
        if stem.shape[0] == 32:
            return "pidnet", {"variant": "s"}
        dappm = "backbone.spp.processes.0.conv.weight" in state
        return "pidnet", {"variant": "l" if dappm else "m"}
    if "backbone.context_branch_layers.0.0.conv1.conv.weight" in state and stem is not None:
        return "ddrnet", {"variant": "23-slim" if stem.shape[0] == 32 else "23"}
    first_branch = state.get("backbone.transition1.0.0.weight")
    if "decode_head.1.object_context_block.query_project.0.conv.weight" in state and (
        first_branch is not None
    ):
        width = int(first_branch.shape[0])
        if width not in (18, 48):
            raise BadInput(f"an HRNet + OCR checkpoint of width {width}; this importer reads "
                           "W18-Small and W48")  # fmt: skip
        return "hrnet_ocr", {"backbone": f"w{width}"}
    first = next(iter(state), "(none)")
    raise BadInput(
        f"no known checkpoint layout: the first key is {first!r}; this importer reads "
        "mmsegmentation's PIDNet (backbone.i_branch_layers...), DDRNet "
        "(backbone.context_branch_layers...) and OCRNet-HRNet (decode_head.1."
        "object_context_block...) checkpoints"
    )


# ----------------------------------------------------------------------------- layouts

#: (our layer, [arrays in the Keras layer's weight order]) pairs.
Assignments = Iterator[tuple[str, list[np.ndarray]]]


class _Keys:
    """The checkpoint's tensors, handing out each once, so that what was not used is known."""

    def __init__(self, state: State) -> None:
        self.state, self.used = state, set()

    def take(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise BadInput(f"the checkpoint has no tensor {key!r} (a layout this importer "
                           "does not know, or another variant)")  # fmt: skip
        self.used.add(key)
        return self.state[key]

    def has(self, key: str) -> bool:
        return key in self.state

    def unused(self, ignored: tuple[str, ...]) -> list[str]:
        return [
            k for k in self.state
            if k not in self.used and not k.startswith(ignored)
            and not k.endswith("num_batches_tracked")
        ]  # fmt: skip


def _kernel(weight: np.ndarray) -> np.ndarray:
    """A PyTorch conv weight (O, I, kH, kW) as Keras' (kH, kW, I, O)."""
    return np.transpose(weight, (2, 3, 1, 0))


def _bn(keys: _Keys, prefix: str) -> list[np.ndarray]:
    """gamma, beta, moving mean, moving variance of a BatchNorm2d."""
    return [keys.take(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]


def _conv_bn(
    keys: _Keys, prefix: str, ours: str, conv: str = "conv", bn: str = "bn"
) -> Assignments:
    """A ConvModule (conv, then BN) into conv_bn_relu's `{ours}` and `{ours}_bn`; a conv of
    ours with a bias (the authors' stems) gets zeros, as mmsegmentation's has none."""
    kernel = _kernel(keys.take(f"{prefix}.{conv}.weight"))
    yield ours, [kernel]
    yield f"{ours}_bn", _bn(keys, f"{prefix}.{bn}")


def _bn_conv(keys: _Keys, prefix: str, ours: str) -> Assignments:
    """A ConvModule in (norm, act, conv) order into bn_relu_conv's `{ours}_bn` and `{ours}`."""
    yield f"{ours}_bn", _bn(keys, f"{prefix}.bn")
    yield ours, [_kernel(keys.take(f"{prefix}.conv.weight"))]


def _block(keys: _Keys, prefix: str, ours: str) -> Assignments:
    """A basic block or bottleneck (conv1..conv3 ConvModules, a downsample as a ConvModule or
    as a Sequential of conv and BN) into basic_block's / bottleneck's layers."""
    for conv in ("conv1", "conv2", "conv3"):
        if keys.has(f"{prefix}.{conv}.conv.weight"):
            yield from _conv_bn(keys, f"{prefix}.{conv}", f"{ours}_{conv}")
    if keys.has(f"{prefix}.downsample.conv.weight"):
        yield from _conv_bn(keys, f"{prefix}.downsample", f"{ours}_down")
    elif keys.has(f"{prefix}.downsample.0.weight"):
        yield from _conv_bn(keys, f"{prefix}.downsample", f"{ours}_down", "0", "1")


def _stage(keys: _Keys, prefix: str, ours: str) -> Assignments:
    """A _make_layer Sequential of blocks `{prefix}.{j}` into residual_stage's blocks."""
    j = 0
    while keys.has(f"{prefix}.{j}.conv1.conv.weight"):
        yield from _block(keys, f"{prefix}.{j}", f"{ours}_block{j + 1}")
        j += 1


def _ppm(keys: _Keys, prefix: str, ours: str, grouped: bool) -> Assignments:
    """DAPPM, or PAPPM whose 4-group 3x3 conv (after a BN over the concatenated branches) is
    split into the four per-branch BN + 3x3 convs it equals."""
    yield from _bn_conv(keys, f"{prefix}.scales.0", f"{ours}_scale0_conv")
    for i in range(1, 5):
        yield from _bn_conv(keys, f"{prefix}.scales.{i}.1", f"{ours}_scale{i}_conv")
    if grouped:
        weight = keys.take(f"{prefix}.processes.conv.weight")
        bn = _bn(keys, f"{prefix}.processes.bn")
        width = weight.shape[0] // 4
        for g in range(4):
            part = slice(g * width, (g + 1) * width)
            yield f"{ours}_process_group{g + 1}_bn", [b[part] for b in bn]
            yield f"{ours}_process_group{g + 1}", [_kernel(weight[part])]
    else:
        for i in range(4):
            yield from _bn_conv(keys, f"{prefix}.processes.{i}", f"{ours}_process{i + 1}")
    yield from _bn_conv(keys, f"{prefix}.compression", f"{ours}_compression")
    yield from _bn_conv(keys, f"{prefix}.shortcut", f"{ours}_shortcut")


def _classifier(keys: _Keys, prefix: str, ours: str) -> Assignments:
    """A head's conv_seg (1x1 conv with bias) into the Conv2D `{ours}`."""
    yield ours, [_kernel(keys.take(f"{prefix}.weight")), keys.take(f"{prefix}.bias")]


def _head(keys: _Keys, conv: str, norm: str, ours: str = "head") -> Assignments:
    """A pre-activation head (BN-ReLU-3x3 conv, BN, ReLU) and conv_seg into preactivation_head."""
    yield from _bn_conv(keys, conv, f"{ours}_conv")
    yield f"{ours}_classifier_bn", _bn(keys, norm)
    yield from _classifier(keys, "decode_head.conv_seg", f"{ours}_classifier")


def _mmseg_pidnet(keys: _Keys, options: dict[str, Any]) -> Assignments:
    """mmsegmentation's PIDNet into build_pidnet's layers."""
    b = "backbone"
    large = options["variant"] == "l"
    yield from _conv_bn(keys, f"{b}.stem.0", "stem_conv1")
    yield from _conv_bn(keys, f"{b}.stem.1", "stem_conv2")
    yield from _stage(keys, f"{b}.stem.2", "layer1")
    yield from _stage(keys, f"{b}.stem.4", "layer2")
    for k, layer in enumerate(("3", "4", "5")):
        yield from _stage(keys, f"{b}.i_branch_layers.{k}", f"i_layer{layer}")
        yield from _stage(keys, f"{b}.p_branch_layers.{k}", f"p_layer{layer}")
    yield from _block(keys, f"{b}.d_branch_layers.0", "d_layer3_block1")
    if large:
        yield from _block(keys, f"{b}.d_branch_layers.1", "d_layer4_block1")
    else:
        yield from _stage(keys, f"{b}.d_branch_layers.1", "d_layer4")
    yield from _stage(keys, f"{b}.d_branch_layers.2", "d_layer5")
    for k, layer in ((1, 3), (2, 4)):
        yield from _conv_bn(keys, f"{b}.compression_{k}", f"p_compression{layer}")
        yield from _conv_bn(keys, f"{b}.pag_{k}.f_i", f"pag{layer}_f_y")
        yield from _conv_bn(keys, f"{b}.pag_{k}.f_p", f"pag{layer}_f_x")
        yield from _conv_bn(keys, f"{b}.diff_{k}", f"d_diff{layer}")
    yield from _ppm(keys, f"{b}.spp", "ppm", grouped=not large)
    if large:
        yield from _bn_conv(keys, f"{b}.dfm.conv", "dfm_conv")
    else:
        yield from _conv_bn(keys, f"{b}.dfm.f_p", "dfm_conv_p")
        yield from _conv_bn(keys, f"{b}.dfm.f_i", "dfm_conv_i")
    yield from _head(keys, "decode_head.i_head.conv", "decode_head.i_head.norm")


def _mmseg_ddrnet(keys: _Keys, options: dict[str, Any]) -> Assignments:
    """mmsegmentation's DDRNet into build_ddrnet's layers."""
    b = "backbone"
    yield from _conv_bn(keys, f"{b}.stem.0", "stem_conv1")
    yield from _conv_bn(keys, f"{b}.stem.1", "stem_conv2")
    yield from _stage(keys, f"{b}.stem.2", "layer1")
    yield from _stage(keys, f"{b}.stem.4", "layer2")
    for k, layer in ((0, "3"), (1, "4")):
        yield from _stage(keys, f"{b}.context_branch_layers.{k}", f"low_layer{layer}")
        yield from _stage(keys, f"{b}.spatial_branch_layers.{k}", f"high_layer{layer}")
    yield from _block(keys, f"{b}.context_branch_layers.2.0", "low_layer5")
    yield from _block(keys, f"{b}.spatial_branch_layers.2.0", "high_layer5")
    yield from _conv_bn(keys, f"{b}.compression_1", "compression3")
    yield from _conv_bn(keys, f"{b}.compression_2", "compression4")
    yield from _conv_bn(keys, f"{b}.down_1", "down3")
    yield from _conv_bn(keys, f"{b}.down_2.0", "down4_1")
    yield from _conv_bn(keys, f"{b}.down_2.1", "down4_2")
    yield from _ppm(keys, f"{b}.spp", "dappm", grouped=False)
    yield from _head(keys, "decode_head.head.0", "decode_head.head.1")


def _plain_conv_bn(keys: _Keys, conv: str, bn: str, ours: str) -> Assignments:
    """A conv and a BN of separate names (torchvision style) into `{ours}` and `{ours}_bn`."""
    yield ours, [_kernel(keys.take(f"{conv}.weight"))]
    yield f"{ours}_bn", _bn(keys, bn)


def _dense_bn(keys: _Keys, prefix: str, ours: str) -> Assignments:
    """A 1x1 ConvModule applied to a set of vectors into a Dense (no bias) and its BN."""
    yield ours, [keys.take(f"{prefix}.conv.weight")[:, :, 0, 0].T]
    yield f"{ours}_bn", _bn(keys, f"{prefix}.bn")


def _mmseg_hrnet_ocr(keys: _Keys, options: dict[str, Any]) -> Assignments:
    """mmsegmentation's OCRNet on HRNetV2 (CascadeEncoderDecoder: an FCN head for the soft
    object regions, the OCR head) into build_hrnet_ocr's layers."""
    b = "backbone"
    yield from _plain_conv_bn(keys, f"{b}.conv1", f"{b}.bn1", "stem_conv1")
    yield from _plain_conv_bn(keys, f"{b}.conv2", f"{b}.bn2", "stem_conv2")
    k = 0
    while keys.has(f"{b}.layer1.{k}.conv1.weight"):
        block = f"{b}.layer1.{k}"
        for n in (1, 2, 3):
            yield from _plain_conv_bn(keys, f"{block}.conv{n}", f"{block}.bn{n}",
                                      f"stage1_block{k + 1}_conv{n}")  # fmt: skip
        if keys.has(f"{block}.downsample.0.weight"):
            yield from _conv_bn(keys, f"{block}.downsample", f"stage1_block{k + 1}_shortcut",
                                "0", "1")  # fmt: skip
        k += 1
    for stage in (2, 3, 4):
        transition = f"{b}.transition{stage - 1}"
        for i in range(stage):
            ours = f"transition{stage}_b{i + 1}"
            if keys.has(f"{transition}.{i}.0.weight"):  # a kept branch whose width changes
                yield from _conv_bn(keys, f"{transition}.{i}", ours, "0", "1")
            elif keys.has(f"{transition}.{i}.0.0.weight"):  # a new branch, strided
                yield from _conv_bn(keys, f"{transition}.{i}.0", ours, "0", "1")
        m = 0
        while keys.has(f"{b}.stage{stage}.{m}.branches.0.0.conv1.weight"):
            module, prefix = f"{b}.stage{stage}.{m}", f"stage{stage}_m{m + 1}"
            for i in range(stage):
                j = 0
                while keys.has(f"{module}.branches.{i}.{j}.conv1.weight"):
                    block = f"{module}.branches.{i}.{j}"
                    for n in (1, 2):
                        yield from _plain_conv_bn(keys, f"{block}.conv{n}", f"{block}.bn{n}",
                                                  f"{prefix}_b{i + 1}_block{j + 1}_conv{n}")  # fmt: skip
                    j += 1
            for i in range(stage):
                for j in range(stage):
                    fuse, ours = (
                        f"{module}.fuse_layers.{i}.{j}",
                        f"{prefix}_fuse{i + 1}_from{j + 1}",
                    )
                    if j > i:
                        yield from _conv_bn(keys, fuse, f"{ours}_conv", "0", "1")
                    for step in range(i - j):
                        yield from _conv_bn(keys, f"{fuse}.{step}", f"{ours}_down{step + 1}",
                                            "0", "1")  # fmt: skip
            m += 1
    regions, ocr = "decode_head.0", "decode_head.1"
    yield from _conv_bn(keys, f"{regions}.convs.0", "ocr_aux_conv")
    yield from _classifier(keys, f"{regions}.conv_seg", "ocr_aux_classifier")
    yield from _conv_bn(keys, f"{ocr}.bottleneck", "ocr_conv3x3")
    block = f"{ocr}.object_context_block"
    yield from _conv_bn(keys, f"{block}.query_project.0", "ocr_attention_query1")
    yield from _conv_bn(keys, f"{block}.query_project.1", "ocr_attention_query2")
    yield from _dense_bn(keys, f"{block}.key_project.0", "ocr_attention_key1")
    yield from _dense_bn(keys, f"{block}.key_project.1", "ocr_attention_key2")
    yield from _dense_bn(keys, f"{block}.value_project", "ocr_attention_value")
    yield from _conv_bn(keys, f"{block}.out_project", "ocr_attention_up")
    yield from _conv_bn(keys, f"{block}.bottleneck", "ocr_fuse")
    yield from _classifier(keys, f"{ocr}.conv_seg", "ocr_classifier")


#: model -> (converter, key prefixes of training-only parts left out).
CONVERTERS: dict[str, tuple[Callable[[_Keys, dict[str, Any]], Assignments], tuple[str, ...]]] = {
    "pidnet": (
        _mmseg_pidnet,
        (
            "decode_head.p_head",
            "decode_head.d_head",
            "decode_head.p_cls_seg",
            "decode_head.d_cls_seg",
        ),
    ),  # fmt: skip
    "ddrnet": (_mmseg_ddrnet, ("decode_head.aux_head", "decode_head.aux_cls_seg")),
    "hrnet_ocr": (_mmseg_hrnet_ocr, ()),
}


# ----------------------------------------------------------------------------- converting


@dataclasses.dataclass
class Imported:
    """What `import_checkpoint` made."""

    model: Any  #: the keras.Model with the checkpoint's weights (float32)
    name: str
    options: dict[str, Any]
    source: str
    sha256: str
    published_miou: float | None
    layers: int  #: Keras layers given weights


def sha256_of(path: str | os.PathLike) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(
    state: State, name: str, options: dict[str, Any], input_size: tuple[int, int] = (128, 256)
) -> tuple[Any, int]:
    """Build model `name` in float32 and give it the checkpoint's weights; (model, layers set).

    BadInput naming the first tensor or shape that does not fit, or the tensors left over.
    """
    import keras

    converter, ignored = CONVERTERS[name]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build_model(name, (*input_size, 3), **options)
    finally:
        keras.config.set_dtype_policy(previous)
    keys = _Keys(state)
    done = set()
    for layer_name, arrays in converter(keys, options):
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise BadInput(f"the checkpoint maps to a layer {layer_name!r} that {name} "
                           f"{options} does not have (another variant?)") from None  # fmt: skip
        current = layer.get_weights()
        if len(current) == 2 and len(arrays) == 1:  # a conv of ours with a bias the file lacks
            arrays = [arrays[0], np.zeros_like(current[1])]
        shapes = [tuple(w.shape) for w in current]
        if [tuple(a.shape) for a in arrays] != shapes:
            raise BadInput(
                f"the checkpoint's tensors for layer {layer_name!r} have shapes "
                f"{[tuple(a.shape) for a in arrays]}, the model's {shapes}: another variant or "
                "layout"
            )
        layer.set_weights([a.astype(w.dtype) for a, w in zip(arrays, current, strict=True)])
        done.add(layer_name)
    left = keys.unused(ignored)
    if left:
        raise BadInput(
            f"{len(left)} tensors of the checkpoint fit no layer of {name} {options}, the first "
            f"{left[0]!r}: a layout this importer does not know"
        )
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in done]
    if missing:
        raise BadInput(
            f"the checkpoint gives no weights for {len(missing)} layers of {name} {options}, "
            f"the first {missing[0]!r}"
        )
    return model, len(done)


def import_checkpoint(path: str | os.PathLike, model: str | None = None) -> Imported:
    """Read, recognise and convert a published checkpoint (see the module docstring).

    Args:
        path: the checkpoint (.pth, or .safetensors).
        model: the model the user says it is (-m); BadInput when the file holds another.
    """
    state = read_checkpoint(path)
    name, options = identify(state)
    if model is not None and model != name:
        get_info(model)  # an unknown name is its own error
        raise BadInput(f"checkpoint {str(path)!r} holds a {name} ({options}), not a {model}: "
                       f"give -m {name} or leave -m out")  # fmt: skip
    keras_model, count = convert(state, name, options)
    return Imported(
        keras_model, name, options, Path(path).name, sha256_of(path),
        MMSEG_MIOU.get((name, options.get("variant", options.get("backbone")))), count,
    )  # fmt: skip


def record_import(weights: str | os.PathLike, imported: Imported) -> None:
    """Write the import's facts into a `.weights.h5` file's attributes."""
    import h5py

    with h5py.File(weights, "a") as handle:
        handle.attrs[MODEL_ATTRIBUTE] = imported.name
        handle.attrs[OPTIONS_ATTRIBUTE] = json.dumps(imported.options, sort_keys=True)
        handle.attrs[SOURCE_ATTRIBUTE] = imported.source
        handle.attrs[SHA256_ATTRIBUTE] = imported.sha256
        if imported.published_miou is not None:
            handle.attrs[MIOU_ATTRIBUTE] = imported.published_miou


def recorded_model(weights: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
    """(model, builder options) a `.weights.h5` file records (an imported one), else None."""
    import h5py

    if not str(weights).endswith(".h5"):
        return None
    try:
        with h5py.File(weights, "r") as handle:
            name = handle.attrs.get(MODEL_ATTRIBUTE)
            options = handle.attrs.get(OPTIONS_ATTRIBUTE)
    except OSError:
        return None  # not an HDF5 file: the weights loader names the problem
    if name is None:
        return None
    name = name.decode() if isinstance(name, bytes) else str(name)
    options = options.decode() if isinstance(options, bytes) else options
    return name, json.loads(options) if options else {}
