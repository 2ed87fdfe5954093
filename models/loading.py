"""Weights into models: the builders' `weights` option, strict loading and the float32 rebuild.

One set of rules for a trained weights file (:func:`check_weights_file`) serves the builders'
``weights`` option (:func:`load_weights_option`) and the strict loader behind predict, evaluate
and export (:func:`load_weights_strict`, used by ``models.trained.build_inference_model``). Imports no
model file, so every model file may import it.
"""

from __future__ import annotations

import collections
import io
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import keras

from utils.errors import BadInput

#: Endings of the files Keras' load_weights reads: ``.weights.h5`` (and legacy ``.h5``) from
#: ``model.save_weights``, ``.keras`` from ``model.save``.
WEIGHTS_SUFFIXES = (".h5", ".keras")

#: What Keras (3.15) raises when it loads a weights file that is corrupt or of another model:
#: OSError (h5py cannot open it: not HDF5, truncated), ValueError (layer count or shape
#: mismatch, an ending Keras does not read), KeyError (an HDF5 file without the groups Keras
#: looks for), zipfile.BadZipFile (a ``.keras`` file that is not a zip archive).
WEIGHTS_FILE_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile)


def weights_unavailable(error: BaseException) -> bool:
    """Whether `error` is Keras failing to get or read a weights file (the user can fix it).

    Besides `WEIGHTS_FILE_ERRORS` for the file, ``keras.utils.get_file`` (the download of
    ``weights="imagenet"``) re-raises an HTTP or network failure as a plain ``Exception``
    (keras/src/utils/file_utils.py), so exactly that type counts too; its subclasses (bugs) do not.
    """
    return type(error) is Exception or isinstance(error, WEIGHTS_FILE_ERRORS)


def all_layers(model: keras.Layer) -> list[keras.Layer]:
    """`model` and every layer nested inside it, depth first (nested models included)."""
    found = [model]
    for child in getattr(model, "layers", None) or []:
        found.extend(all_layers(child))
    return found


def check_weights_file(weights: str | os.PathLike, what: str = "the model") -> Path:
    """`weights` as a Path once it names an existing Keras weights file; BadInput otherwise.

    The rules every trained weights file meets: a path (the string "imagenet" is not one: the
    models that take this file have no pretrained weights), an existing file, a ``.weights.h5``
    / ``.h5`` or ``.keras`` name.

    Args:
        weights: the path given by the user.
        what: how to name the model in error messages (e.g. "unet at 512x1024").
    """
    if not isinstance(weights, str | os.PathLike) or str(weights) == "imagenet":
        raise BadInput(
            f"{what} has no pretrained weights to download; pass weights=None or "
            f"the path of a .weights.h5 file, got {weights!r}"
        )
    path = Path(weights)
    if not path.is_file():
        raise BadInput(
            f"weights file {str(path)!r} for {what} not found; pass the .weights.h5 or .keras "
            "file that train.py wrote"
        )
    if not path.name.endswith(WEIGHTS_SUFFIXES):
        raise BadInput(f"weights file {str(path)!r} must be a .weights.h5 or .keras file")
    return path


def load_weights_option(
    model: keras.Model, weights: str | os.PathLike | None, name: str
) -> keras.Model:
    """Apply the `weights` option: None keeps random init; a path loads a Keras weights file
    strictly (:func:`load_weights_strict`)."""
    if weights is None:
        return model
    load_weights_strict(model, weights, name)
    return model


def _h5_shapes(path: Path) -> list[tuple[int, ...]]:
    """Shapes of the model arrays stored in a .weights.h5/.h5 or .keras file (no optimizer)."""
    import h5py  # only where a weights file is read (Keras depends on it)

    def collect(handle: Any) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
                shapes.append(tuple(int(d) for d in obj.shape))

        handle.visititems(visit)
        return shapes

    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            data = io.BytesIO(archive.read("model.weights.h5"))
        with h5py.File(data, "r") as handle:
            return collect(handle)
    with h5py.File(path, "r") as handle:
        return collect(handle)


def _check_shapes(model: keras.Model, path: Path, what: str) -> None:
    """BadInput unless the arrays stored in `path` are exactly those of `model` (by shape)."""
    try:
        stored = _h5_shapes(path)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise BadInput(
            f"weights file {str(path)!r} is not a readable Keras weights file ({exc})"
        ) from exc
    expected = [tuple(int(d) for d in w.shape) for w in model.weights]
    if collections.Counter(stored) != collections.Counter(expected):
        missing = collections.Counter(expected) - collections.Counter(stored)
        extra = collections.Counter(stored) - collections.Counter(expected)
        detail = (
            f"first missing shape {next(iter(missing))}"
            if missing
            else f"first unexpected shape {next(iter(extra))}"
        )
        raise BadInput(
            f"weights file {str(path)!r} holds {len(stored)} arrays but {what} has "
            f"{len(expected)} ({detail}): it was saved from another model, backbone, output "
            "stride or input size; pass the matching -m/--backbone/--output-stride/-t"
        )


def load_weights_strict(
    model: keras.Model, path: str | os.PathLike, what: str = "the model"
) -> None:
    """Load trained weights, raising BadInput unless every array matches `model` exactly.

    Keras' ``load_weights`` only warns when a file holds fewer layers than the model, which would
    export a half-initialised graph; this checks the file (:func:`check_weights_file`), compares
    the stored array shapes with the model's first, and treats Keras' "skipping" warnings as
    errors.

    Args:
        model: the keras.Model to load into.
        path: a ``.weights.h5`` (``model.save_weights``) or ``.keras`` (``model.save``) file.
        what: how to name the model in error messages (e.g. "unet at 512x1024").
    """
    path = check_weights_file(path, what)
    _check_shapes(model, path, what)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except ValueError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise BadInput(f"weights file {str(path)!r} does not fit {what}: {first}") from exc
    skipped = [str(w.message) for w in caught if "skipping" in str(w.message).lower()]
    if skipped:
        raise BadInput(f"weights file {str(path)!r} does not fit {what}: {skipped[0]}")


def is_float32(model: keras.Layer) -> bool:
    """True when every layer of `model` computes in float32."""
    return all(
        getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32") == "float32"
        for layer in all_layers(model)
    )


def to_float32(model: keras.Model) -> keras.Model:
    """The model itself if it computes in float32, else a float32 clone with the same weights.

    A model built under a mixed-precision policy keeps the policy in its layer configs (and
    would export float16 casts), so it is rebuilt under float32 and its weights are copied.

    Args:
        model: a keras.Model, possibly built under a mixed-precision policy.
    """
    if is_float32(model):
        return model

    def clone_layer(layer: keras.Layer) -> keras.Layer:
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    finally:
        keras.config.set_dtype_policy(previous)
    clone.set_weights(model.get_weights())
    return clone
