"""The segmenter: a trained model (Keras weights or an exported ONNX file) on photos of any size.

The Keras model runs through the TF runtime, an ONNX file through a runtime of the registry
(`inference.runtimes`, `--backend`); a runtime checked against a reference (OpenVINO against
onnxruntime) runs its first batch through both, judged by the parity rule (`inference.parity`).

The model runs at its input size; each photo is resized to it (area filter when shrinking,
bilinear when enlarging) and the class scores are resized back to the photo's own size
(bilinear) before the argmax, so every result is at the photo's full resolution. On request
(`predict(..., probabilities=True)`) the softmax of those resized scores comes with it (the
mean softmax of the Monte Carlo samples for bayes_segnet), for calibration figures.

A model predicts the classes of a class set (`utils.labels.CLASS_SETS`, `--classes`): the one its
weights file (``class_set`` attribute, written by train.py) or ONNX file (``classes`` metadata,
else its number of output channels) records, cityscapes19 where nothing is recorded; asking for
another is a BadInput naming both.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from inference.parity import Parity, check
from inference.runtimes import ONNX_RUNTIMES, REFERENCE_RUNTIME, entry, open_runtime, title
from models import MODELS, get_info
from models.bayes_segnet import mc_predict
from models.trained import build_inference_model
from utils.errors import BadInput
from utils.labels import (
    DEFAULT_CLASS_SET,
    ClassSet,
    class_set_with,
    get_class_set,
    recorded_class_set,
)
from utils.resize import resize_image, resize_map

#: The input size when a model's recipe has no crop: Cityscapes' full resolution.
FULL_SIZE = (1024, 2048)


@dataclasses.dataclass
class Prediction:
    """One photo's result at the photo's size."""

    train_ids: np.ndarray  # (H, W) uint8: class indices of the segmenter's class set (0..18)
    uncertainty: np.ndarray | None = None  # (H, W) float32 for Monte Carlo dropout, else None
    #: (H, W, C) float32 class probabilities, with predict(..., probabilities=True) only.
    probabilities: np.ndarray | None = None


def round_to_multiple(size: Sequence[int], multiple: int) -> tuple[int, int]:
    """(H, W) rounded to the nearest multiples of `multiple` (at least one multiple each)."""
    return tuple(max(multiple, int(round(int(s) / multiple)) * multiple) for s in size[:2])


def default_input_size(name: str) -> tuple[int, int]:
    """The model's training crop (its recipe), rounded to the sizes the model can take."""
    info = get_info(name)
    crop = info.recipe.crop_size or FULL_SIZE
    return round_to_multiple(crop, info.size_multiple)


class Segmenter:
    """A Keras model with trained weights, or an exported ONNX file, behind one `predict` call.

    Args:
        name: model name (a key of models.MODELS); with `onnx`, None takes it from the file's
            metadata (``model``, written by deploy.export), and a name given must agree with it.
        weights: trained weights (.weights.h5 / .keras) for the Keras model; None keeps the
            random initialisation (for tests and timing only).
        input_size: (H, W) the model runs at; default: the ONNX file's input size, else
            `default_input_size(name)`.
        options: builder options (backbone, output_stride); with `onnx`, completed by the file's
            ``options`` metadata (a JSON object) where it has one.
        onnx: an exported .onnx file to run through `runtime` instead of Keras.
        runtime: a runtime of an ONNX file (inference.runtimes.ONNX_RUNTIMES). One that has a
            reference runtime (OpenVINO: onnxruntime) runs its first batch through the reference
            too, judged by the parity rule (inference.parity): BadInput naming the figures when
            broken, the figures kept in `parity`.
        mc_samples: Monte Carlo dropout samples (bayes_segnet): adds an uncertainty map.
        seed: seed of the Monte Carlo dropout masks.
        classes: class set the model must predict (None: the one its file records, else
            cityscapes19); a file that records another is BadInput naming both.
        threads: the runtime's intra-op threads (None: every core it may use).
    """

    def __init__(
        self,
        name: str | None,
        weights: str | os.PathLike | None = None,
        input_size: Sequence[int] | None = None,
        options: dict[str, Any] | None = None,
        onnx: str | os.PathLike | None = None,
        mc_samples: int | None = None,
        seed: int = 0,
        runtime: str = REFERENCE_RUNTIME,
        classes: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.options = dict(options or {})
        self.mc_samples = mc_samples
        self.seed = seed
        self.model = None
        #: its first batch against the reference runtime's (None until then, or without one).
        self.parity: Parity | None = None
        self._reference_checked = False
        if runtime not in ONNX_RUNTIMES:
            raise BadInput(f"--backend must be one of {', '.join(ONNX_RUNTIMES)}; got {runtime!r}")
        if runtime != REFERENCE_RUNTIME and onnx is None:
            raise BadInput(f"--backend {runtime} runs an exported file: give --onnx FILE")
        if mc_samples is not None and onnx is not None:
            raise BadInput("--mc-samples runs the Keras model; it cannot be combined with --onnx")
        if onnx is not None:
            self.runtime = open_runtime(runtime, onnx, threads=threads)
            self._onnx_path = str(onnx)
            meta = self.runtime.metadata
            name = _model_from_metadata(onnx, meta, name)
            for key, value in _options_from_metadata(onnx, meta).items():
                self.options.setdefault(key, value)
        elif name is None:
            raise BadInput(
                "a Keras model needs its name (-m MODEL); only an ONNX file names its own"
            )
        self.info = get_info(name)
        self.name = name
        if mc_samples is not None and name != "bayes_segnet":
            raise BadInput(
                f"--mc-samples is for bayes_segnet (Monte Carlo dropout); got model {name!r}"
            )
        if onnx is not None:
            meta = self.runtime.metadata
            onnx_size = self.runtime.input_size or _size_from_metadata(meta)
            if input_size is not None and onnx_size is not None and tuple(input_size) != onnx_size:
                raise BadInput(
                    f"ONNX file {str(onnx)!r} takes {onnx_size[0]}x{onnx_size[1]} "
                    f"images; got -t {input_size[0]},{input_size[1]}"
                )
            self.input_size = tuple(input_size or onnx_size or default_input_size(name))
            channels = self.runtime.output_channels
            implied = class_set_with(channels) if channels is not None else None
            recorded = meta.get("classes") or (implied.name if implied is not None else None)
            self.class_set = _checked_class_set(classes, recorded, f"ONNX file {str(onnx)!r}")
        else:
            self.input_size = tuple(int(s) for s in (input_size or default_input_size(name)))
            recorded = recorded_class_set(weights) if weights is not None else None
            self.class_set = _checked_class_set(classes, recorded, f"weights file {str(weights)!r}")
            extra = {}
            if self.class_set.num_classes != 19:  # build_model's default
                extra["num_classes"] = self.class_set.num_classes
            self.model = build_inference_model(
                name, self.input_size, weights, **self.options, **extra
            )
            self.runtime = open_runtime("tf", self.model, threads=threads)
        #: the ONNX file's metadata (convert_to_onnx.py writes it); empty for a Keras model
        self.metadata: dict[str, str] = dict(self.runtime.metadata)

    @property
    def backend(self) -> str:
        """The runtime's name (keras for the Keras model, as the command lines say it)."""
        return "keras" if self.model is not None else self.runtime.name

    @property
    def gives_scores(self) -> bool:
        """Whether the model gives class scores (not an ``--argmax`` export's label ids), so
        that `predict(..., probabilities=True)` can give probabilities."""
        return self.metadata.get("output") != "label_ids"

    def predict(
        self, images: Sequence[np.ndarray], probabilities: bool = False
    ) -> list[Prediction]:
        """Segment RGB uint8 photos (each any size); results at each photo's size.

        With `probabilities`, each result has the class probabilities at the photo's size: the
        softmax of the bilinearly resized scores (their argmax is the prediction), or the
        resized mean softmax of the Monte Carlo samples. BadInput for an ``--argmax`` export,
        which gives no scores.
        """
        if not images:
            return []
        if probabilities and not self.gives_scores:
            raise BadInput(
                f"ONNX file {self._onnx_path!r} gives label ids (exported with --argmax), not "
                "class scores; export it without --argmax for probabilities"
            )
        batch = np.stack([resize_image(image, self.input_size) for image in images])
        batch = batch.astype(np.float32)
        uncertainty = None
        if self.mc_samples is not None:
            scores, uncertainty = mc_predict(
                self.model, batch, samples=self.mc_samples, seed=self.seed
            )
        else:
            scores = self.runtime.run(batch)
            if not self._reference_checked:
                self._check_parity(batch, scores)
        results = []
        for i, image in enumerate(images):
            size = image.shape[:2]
            probs = None
            if scores.ndim == 3:  # an --argmax ONNX export gives label ids
                ids = self.class_set.from_label_ids[scores[i].astype(np.uint8)]
                train_ids = resize_map(ids, size, nearest=True)
            else:
                # as utils.resize.scores_to_train_ids: bilinear to the photo's size, argmax
                resized = resize_map(np.asarray(scores[i], np.float32), size)
                if resized.ndim == 2:  # a single class comes back without its channel axis
                    resized = resized[..., None]
                train_ids = resized.argmax(axis=-1).astype(np.uint8)
                if probabilities:
                    probs = resized if uncertainty is not None else softmax(resized)
            unc = None
            if uncertainty is not None:
                unc = resize_map(np.asarray(uncertainty[i], np.float32), size)
            results.append(Prediction(train_ids, unc, probs))
        return results

    def _check_parity(self, batch: np.ndarray, scores: np.ndarray) -> None:
        """The first batch against the reference runtime's (onnxruntime on the CPU) on the same
        images, judged by the parity rule; nothing for a runtime that is its own reference."""
        self._reference_checked = True
        reference = entry(self.runtime.name).reference
        if reference is None or self.model is not None:
            return
        step = self.runtime.batch or len(batch)
        ref_runtime = open_runtime(reference, self._onnx_path, providers=["CPUExecutionProvider"])
        expected = ref_runtime.run(batch[:step])
        self.parity = check(scores[:step], expected, self.runtime.precision)
        if self.parity.errors:
            raise BadInput(
                f"{title(self.runtime.name)}'s output for {self._onnx_path!r} differs from "
                f"{title(reference)}'s on the first batch: {'; '.join(self.parity.errors)}; "
                f"run it with --backend {reference}"
            )


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32 (the maximum subtracted first)."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def _checked_class_set(asked: str | None, recorded: str | None, source: str) -> ClassSet:
    """The class set of a model: `asked` (--classes), which must be the `recorded` one where a
    file records one; else the recorded one; else cityscapes19."""
    if recorded is not None:
        get_class_set(recorded)  # a name this suite does not know is an error naming it
    if asked is not None and recorded is not None and asked != recorded:
        raise BadInput(
            f"{source} holds a model of --classes {recorded}, not --classes {asked}: give "
            f"--classes {recorded} or leave --classes out"
        )
    return get_class_set(asked or recorded or DEFAULT_CLASS_SET)


def _model_from_metadata(onnx: str | os.PathLike, meta: dict[str, str], name: str | None) -> str:
    """The model an ONNX file was exported from (its ``model`` metadata), checked against `name`."""
    recorded = meta.get("model")
    if recorded is not None and recorded not in MODELS:
        recorded = None  # exported from a keras.Model of another name: only -m can say
    if name is None:
        if recorded is None:
            raise BadInput(
                f"ONNX file {str(onnx)!r} does not name a registered model in its metadata "
                f"(got {meta.get('model')!r}); give -m MODEL, one of {', '.join(sorted(MODELS))}"
            )
        return recorded
    if recorded is not None and recorded != name:
        raise BadInput(
            f"ONNX file {str(onnx)!r} was exported from model {recorded!r} (its metadata); "
            f"got -m {name}: give -m {recorded} or leave -m out"
        )
    return name


def _options_from_metadata(onnx: str | os.PathLike, meta: dict[str, str]) -> dict[str, Any]:
    """The builder options recorded in an ONNX file's ``options`` metadata (JSON), if any."""
    text = meta.get("options")
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise BadInput(
            f"ONNX file {str(onnx)!r} has unreadable 'options' metadata {text!r}; "
            "export it again with convert_to_onnx.py"
        )
    return options


def _size_from_metadata(meta: dict[str, str]) -> tuple[int, int] | None:
    """(H, W) from an ONNX file's ``input_size`` metadata ("H,W"), or None."""
    try:
        height, width = (int(v) for v in meta.get("input_size", "").split(","))
    except ValueError:
        return None
    return (height, width) if height > 0 and width > 0 else None
